"""Triggered campaigns, the gateway setting, events in, and the decision log (native API)."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

from anyio import from_thread
from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from clearance.api.auth import authenticate
from clearance.api.body import read_json
from clearance.api.deps import Admin, RealTimeDep, RuntimeDep, realtime_of, runtime_of
from clearance.api.models import Name, Strict
from clearance.api.responses import JSON
from clearance.clock import from_ms
from clearance.domain import parse_time
from clearance.errors import Conflict, InvalidInput, NotFound
from clearance.outbound.policy import check_outbound_url
from clearance.outbound.signing import check_secret, mask_secret
from clearance.runtime import Runtime
from clearance.store import DecisionRow, GatewayConfig
from clearance.store.triggered import DECISION_COLUMNS
from clearance.triggered.events import idempotency_key, parse_events
from clearance.triggered.gate import DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS
from clearance.triggered.matching import compile_condition

# an HTTP token for names; no CR, LF or NUL in values (no header injection into gateway calls)
HeaderName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
]
# a header value: visible characters, spaces and tabs (RFC 9110), nothing a client refuses to send
HeaderValue = Annotated[str, Field(max_length=2000, pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]*$")]
Secret = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S+$")]
# a campaign id goes into file names and the webhook-id header: no control characters
AnyId = (
    Annotated[int, Field(ge=0, le=2**53)]
    | Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
)


class TemplateT(Strict):
    id: Annotated[int, Field(ge=0, le=2**53)]
    name: Name = ""


class ChannelT(Strict):
    id: Annotated[int, Field(ge=0, le=2**53)]
    name: Name = ""
    brand_id: Name | None = None
    templates: list[TemplateT] | None = None


class ActionT(Strict):
    id: Annotated[int, Field(ge=0, le=2**53)]
    name: Name = ""
    promo_codes: list[Name] | None = None
    channels: list[ChannelT] = Field(min_length=1, max_length=20)


class TriggerT(Strict):
    event: Annotated[str, Field(min_length=1, max_length=200)]
    condition: Annotated[str, Field(max_length=4000)] | None = None


class TriggeredIn(Strict):
    id: AnyId
    series_id: AnyId | None = None
    notes: Annotated[str, Field(max_length=2000)] = ""
    tags: list[Name] = Field(default_factory=list, max_length=100)
    action: ActionT
    conditional: bool = True
    active: bool = True
    shadow: bool = Field(
        False,
        description="call the gateway and log its answer, but send "
        "regardless; every decision of a shadow campaign is marked shadow",
    )
    trigger: TriggerT


class GatewayIn(Strict):
    url: Annotated[str, Field(max_length=2048)]
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    secret: Secret | None = None
    previous_secret: Secret | None = Field(
        None,
        description="while rotating: the secret being retired; the gateway gets a signature "
        "for each of the two until a PUT without it",
    )
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, max_length=20)


def _save(runtime: Runtime, body: TriggeredIn) -> tuple[dict[str, Any], bool]:
    if body.trigger.condition:
        compile_condition(body.trigger.condition)
    data = body.model_dump()
    created = runtime.store.put_triggered(
        str(body.id), data, body.trigger.event, body.active, runtime.now_ms()
    )
    return data, created


def _masked(config: GatewayConfig) -> dict[str, Any]:
    secrets = (config.secret or "").split()
    return {
        "url": config.url,
        "timeout_ms": config.timeout_ms,
        "secret": mask_secret(secrets[0]) if secrets else None,
        "previous_secret": mask_secret(secrets[1]) if len(secrets) > 1 else None,
        "headers": {k: "****" for k in config.headers},
    }


def triggered_router() -> APIRouter:
    r = APIRouter()

    @r.post("/api/v1/triggered-campaigns", status_code=201)
    def create(
        body: TriggeredIn, runtime: RuntimeDep, who: Admin, realtime: RealTimeDep
    ) -> dict[str, Any]:
        try:
            runtime.store.get_triggered(str(body.id))
        except NotFound:
            data = _save(runtime, body)[0]
            realtime.index.invalidate()
            runtime.audit(who.name, "triggered.create", f"triggered:{body.id}")
            return data
        raise Conflict(f"triggered campaign {body.id} already exists; PUT replaces it", field="id")

    @r.get("/api/v1/triggered-campaigns")
    def list_all(runtime: RuntimeDep, who: Admin) -> list[dict[str, Any]]:
        return runtime.store.list_triggered()

    @r.get("/api/v1/triggered-campaigns/{campaign_id}")
    def get_one(campaign_id: str, runtime: RuntimeDep, who: Admin) -> dict[str, Any]:
        return runtime.store.get_triggered(campaign_id)

    @r.put("/api/v1/triggered-campaigns/{campaign_id}")
    def replace(
        campaign_id: str,
        body: TriggeredIn,
        runtime: RuntimeDep,
        who: Admin,
        response: Response,
        realtime: RealTimeDep,
    ) -> dict[str, Any]:
        if str(body.id) != campaign_id:
            raise InvalidInput(f"id {body.id} does not match the URL ({campaign_id})", field="id")
        data, created = _save(runtime, body)
        realtime.index.invalidate()
        runtime.audit(who.name, "triggered.replace", f"triggered:{body.id}", created=created)
        response.status_code = 201 if created else 200
        return data

    @r.delete("/api/v1/triggered-campaigns/{campaign_id}")
    def delete(
        campaign_id: str, runtime: RuntimeDep, who: Admin, realtime: RealTimeDep
    ) -> dict[str, Any]:
        runtime.store.delete_triggered(campaign_id)
        realtime.index.invalidate()
        runtime.audit(who.name, "triggered.delete", f"triggered:{campaign_id}")
        return {"deleted": campaign_id}

    @r.put("/triggered_conditional_execution_gateway")
    def put_gateway(
        body: GatewayIn, runtime: RuntimeDep, who: Admin, realtime: RealTimeDep
    ) -> dict[str, Any]:
        if not MIN_TIMEOUT_MS <= body.timeout_ms <= MAX_TIMEOUT_MS:
            raise InvalidInput(
                f"timeout_ms must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS}",
                field="timeout_ms",
            )
        if body.previous_secret and not body.secret:
            raise InvalidInput("previous_secret needs a secret", field="previous_secret")
        for name in ("secret", "previous_secret"):
            if (value := getattr(body, name)) is not None:
                check_secret(value, name)
        secret = " ".join(s for s in (body.secret, body.previous_secret) if s) or None
        config = GatewayConfig(
            check_outbound_url(body.url, runtime.settings.outbound, "url"),
            body.timeout_ms,
            secret,
            body.headers,
        )
        runtime.store.put_gateway(config, runtime.now_ms())
        realtime.index.invalidate()
        from_thread.run_sync(realtime.gate.warm, config.url)  # this handler runs in a thread
        runtime.audit(
            who.name,
            "gateway.put",
            "gateway",
            url=config.url,
            timeout_ms=config.timeout_ms,
            signed=bool(secret),
            rotating=bool(body.previous_secret),
            headers=sorted(config.headers),
        )
        return _masked(config)

    @r.get("/triggered_conditional_execution_gateway")
    def get_gateway(runtime: RuntimeDep, who: Admin) -> dict[str, Any]:
        config = runtime.store.get_gateway()
        if config is None:
            raise NotFound("no gateway is set")
        return _masked(config)

    @r.delete("/triggered_conditional_execution_gateway")
    def delete_gateway(runtime: RuntimeDep, who: Admin, realtime: RealTimeDep) -> dict[str, Any]:
        if not runtime.store.delete_gateway():
            raise NotFound("no gateway is set")
        realtime.index.invalidate()
        runtime.audit(who.name, "gateway.delete", "gateway")
        return {"deleted": True}

    @r.get("/api/v1/decisions", response_model=None)
    def decisions(
        runtime: RuntimeDep,
        who: Admin,
        campaign_id: str | None = None,
        user_id: str | None = None,
        outcome: str | None = None,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
        format: Literal["json", "csv"] = "json",
    ) -> Any:
        tz = runtime.settings.tz
        rows, cursor = runtime.store.query_decisions(
            campaign_key=campaign_id,
            user_id=user_id,
            outcome=outcome,
            from_ms=int(parse_time(from_, tz, "from").timestamp() * 1000) if from_ else None,
            to_ms=int(parse_time(to, tz, "to").timestamp() * 1000) if to else None,
            after=after,
            limit=limit,
        )
        deliveries = runtime.store.delivery_states([r.decision_id for r in rows if r.sent])
        items = [_decision_out(row, deliveries.get(row.decision_id, [])) for row in rows]
        if format == "csv":
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(_decision_out(None)))
            writer.writeheader()
            writer.writerows({k: v for k, v in item.items() if k != "deliveries"} for item in items)
            return Response(buf.getvalue(), media_type="text/csv")
        return {
            "decisions": items,
            # opaque; pass it back as `after`. `cursor` is where to resume even when the page is
            # short (a client tailing the log).
            "next_after": cursor if len(rows) == limit else None,
            "cursor": cursor,
        }

    @r.get("/api/v1/decisions/{decision_id}")
    def decision(decision_id: str, runtime: RuntimeDep, who: Admin) -> dict[str, Any]:
        row = runtime.store.get_decision(decision_id)
        if row is None:
            raise NotFound(f"decision {decision_id} is not in the log", field="decision_id")
        deliveries = runtime.store.delivery_states([decision_id]) if row.sent else {}
        return _decision_out(row, deliveries.get(decision_id, []))

    return r


def events_router() -> APIRouter:
    """The hot path, on its own router so the app can match it before anything else."""
    r = APIRouter()
    r.add_api_route("/api/v1/events", handle_events, methods=["POST"])
    return r


async def handle_events(request: Request) -> Response:
    """One event (object) or a batch (array). Each matching active campaign is decided; the
    reply says, per campaign, the outcome and whether a send was made."""
    runtime = runtime_of(request)
    await authenticate(request, runtime)
    key = idempotency_key(request.headers.get("idempotency-key"))
    parsed, single = parse_events(await read_json(request, runtime.settings.max_body_bytes))
    results = await realtime_of(request).handle(parsed, key)
    return JSON(results[0] if single else {"results": results})


# The decision log's columns as the API names them (the store's campaign_key is our campaign_id).
DECISION_FIELDS = tuple("campaign_id" if c == "campaign_key" else c for c in DECISION_COLUMNS)


def _decision_out(
    row: DecisionRow | None, deliveries: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A decision as the API shows it. `delivery` sums up its sends: `none` (nothing sent),
    `pending`, `delivered` (every channel took it) or `failed` (a channel gave up; see
    `deliveries` for each channel's state and reason)."""
    if row is None:  # the CSV header
        return dict.fromkeys((*DECISION_FIELDS, "delivery"))
    out = dict(zip(DECISION_FIELDS, (getattr(row, c) for c in DECISION_COLUMNS), strict=True))
    out["at"] = from_ms(row.at).isoformat()
    states = {d["state"] for d in deliveries or ()}
    out["delivery"] = (
        "none"
        if not row.sent
        else "failed"
        if "failed" in states
        else "pending"
        if "pending" in states or not states
        else "delivered"
    )
    out["deliveries"] = deliveries or []
    return out
