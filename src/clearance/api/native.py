"""The native API under /api/v1: what the campaign tool does (admin key)."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from clearance.api.body import read_body, read_json
from clearance.api.deps import Admin, RuntimeDep, runtime_of
from clearance.api.models import Name, Strict
from clearance.channels.file import check_subdirectory
from clearance.domain import (
    MAX_ID_LENGTH,
    Campaign,
    ChannelRef,
    State,
    Template,
    check_customer_id,
    format_wire_time,
    parse_time,
)
from clearance.errors import InvalidInput
from clearance.outbound.policy import check_outbound_url
from clearance.runtime import Runtime
from clearance.store import ChannelConfig

Id = Annotated[int, Field(ge=1, le=2**53)]
# channels and templates are 32-bit in the store (and in the wire format)
SmallId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class TemplateIn(Strict):
    id: SmallId
    name: Name = ""


class ChannelIn(Strict):
    id: SmallId
    name: Name = ""
    templates: list[TemplateIn] = Field(default_factory=list, max_length=100)


class ActionIn(Strict):
    id: Id
    name: Name = ""
    promo_codes: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=10_000
    )


class TargetIn(Strict):
    customer_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    attributes: dict[str, Any] = Field(default_factory=dict)
    # Conditional Execution V2: the customer's own send time and template (its send group)
    send_at: Annotated[str, Field(max_length=40)] | None = None
    template_id: SmallId | None = None


class CampaignIn(Strict):
    campaign_id: Id | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    execute_at: Annotated[str, Field(max_length=40)]
    process_at: Annotated[str, Field(max_length=40)] | None = None
    duration_days: Annotated[int, Field(ge=1, le=365)] = 1
    conditional: bool
    clearance_lead_seconds: Annotated[int, Field(ge=0, le=7 * 86400)] | None = None
    action: ActionIn
    channels: list[ChannelIn] = Field(min_length=1, max_length=20)
    target_group: list[TargetIn] | None = None
    draft: bool = False


class Counts(BaseModel):
    target: int
    approved: int
    sent: int  # customers whose every send was delivered
    undelivered: int  # customers with a send whose batch was never delivered (once done)
    excluded: int


class CampaignOut(BaseModel):
    campaign_id: int
    name: str
    state: str
    conditional: bool
    execute_at: str
    clearance_required_by: str | None
    duration_days: int
    counts: Counts
    last_error: str | None = None


class DeliveryIn(Strict):
    type: Literal["file", "webhook"] = "file"
    url: Annotated[str, Field(max_length=2048)] | None = None
    directory: Annotated[str, Field(max_length=1024)] | None = None


class ChannelPut(Strict):
    name: Name = ""
    clearance_lead_seconds: Annotated[int, Field(ge=0, le=7 * 86400)] | None = None
    delivery: DeliveryIn = Field(default_factory=DeliveryIn)


def _iso(when: datetime | None, runtime: Runtime) -> str | None:
    return None if when is None else when.astimezone(runtime.settings.tz).isoformat()


def campaign_out(runtime: Runtime, campaign_id: int) -> CampaignOut:
    c = runtime.store.get_campaign(campaign_id)
    return CampaignOut(
        campaign_id=c.campaign_id,
        name=c.name,
        state=c.state.value,
        conditional=c.conditional,
        execute_at=format_wire_time(c.execute_at, runtime.settings.tz),
        clearance_required_by=(
            format_wire_time(c.clearance_required_by, runtime.settings.tz)
            if c.clearance_required_by
            else None
        ),
        duration_days=c.duration_days,
        counts=Counts(**runtime.store.counts(campaign_id)),
        last_error=c.last_error,
    )


def _attrs(attributes: dict[str, Any]) -> str | None:
    return orjson.dumps(attributes).decode() if attributes else None


def _check_unique(rows: list[Any]) -> None:
    seen: set[str] = set()
    for cid, *_ in rows:
        if cid in seen:
            raise InvalidInput(
                f"customer {cid!r} appears twice in the target group", field="customer_id"
            )
        seen.add(cid)


def native_router() -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    @r.post("/campaigns", status_code=201, response_model=CampaignOut)
    def create_campaign(body: CampaignIn, runtime: RuntimeDep, who: Admin) -> CampaignOut:
        tz = runtime.settings.tz
        if not body.draft and body.target_group is None:
            raise InvalidInput(
                "target_group is required unless draft is true", field="target_group"
            )
        channel_ids = [ch.id for ch in body.channels]
        if len(set(channel_ids)) != len(channel_ids):
            raise InvalidInput("a channel appears twice", field="channels")
        campaign = Campaign(
            campaign_id=body.campaign_id or 0,
            name=body.name,
            execute_at=parse_time(body.execute_at, tz, "execute_at"),
            process_at=parse_time(body.process_at, tz, "process_at") if body.process_at else None,
            duration_days=body.duration_days,
            conditional=body.conditional,
            action_id=body.action.id,
            action_name=body.action.name,
            promo_codes=list(body.action.promo_codes),
            channels=[
                ChannelRef(ch.id, ch.name, tuple(Template(t.id, t.name) for t in ch.templates))
                for ch in body.channels
            ],
            state=State.DRAFT if body.draft else State.SCHEDULED,
            clearance_lead_seconds=body.clearance_lead_seconds,
        )
        target: list[Any] = [
            (
                check_customer_id(t.customer_id, "target_group.customer_id"),
                _attrs(t.attributes),
                *_placed(runtime, campaign, t.send_at, t.template_id),
            )
            for t in body.target_group or ()
        ]
        _check_unique(target)
        created = runtime.scheduled.create_campaign(campaign, target)
        runtime.audit(
            who.name,
            "campaign.create",
            f"campaign:{created.campaign_id}",
            name=body.name,
            execute_at=body.execute_at,
            conditional=body.conditional,
            draft=body.draft,
            target_group=len(target),
        )
        return campaign_out(runtime, created.campaign_id)

    @r.get("/campaigns/{campaign_id}", response_model=CampaignOut)
    def get_campaign(campaign_id: int, runtime: RuntimeDep, who: Admin) -> CampaignOut:
        return campaign_out(runtime, campaign_id)

    @r.get("/campaigns/{campaign_id}/send-groups")
    def send_groups(campaign_id: int, runtime: RuntimeDep, who: Admin) -> list[dict[str, Any]]:
        """Each send group with its own deadline countdown and counts (a V1 campaign: one)."""
        return [asdict(g) for g in runtime.scheduled.send_groups(campaign_id)]

    @r.post("/campaigns/{campaign_id}/target-group")
    async def upload_target(campaign_id: int, request: Request, who: Admin) -> dict[str, int]:
        """Append customers to a draft campaign: a JSON array, NDJSON, or CSV with a
        `customer_id` column (other columns become attributes). All or nothing."""
        runtime = runtime_of(request)
        kind = (request.headers.get("content-type") or "application/json").split(";")[0].strip()
        if kind in ("application/x-ndjson", "application/ndjson"):
            items = await _read_ndjson(request, runtime)
        elif kind in ("text/csv", "application/csv"):
            items = await _read_csv(request, runtime)
        else:
            items = await read_json(request, runtime.settings.max_body_bytes)
            if not isinstance(items, list):
                raise InvalidInput("body must be a JSON array of {customer_id, attributes}")
        campaign = await run_in_threadpool(runtime.store.get_campaign, campaign_id)
        rows = [_target_row(item, i, runtime, campaign) for i, item in enumerate(items)]
        _check_unique(rows)
        size = await run_in_threadpool(runtime.store.add_target, campaign_id, rows)
        await run_in_threadpool(
            runtime.audit,
            who.name,
            "campaign.target_group",
            f"campaign:{campaign_id}",
            added=len(rows),
        )
        return {"added": len(rows), "target_count": size}

    @r.post("/campaigns/{campaign_id}/schedule", response_model=CampaignOut)
    def schedule(campaign_id: int, runtime: RuntimeDep, who: Admin) -> CampaignOut:
        runtime.scheduled.schedule(campaign_id)
        runtime.audit(who.name, "campaign.schedule", f"campaign:{campaign_id}")
        return campaign_out(runtime, campaign_id)

    @r.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut)
    def cancel(campaign_id: int, runtime: RuntimeDep, who: Admin) -> CampaignOut:
        runtime.scheduled.cancel(campaign_id)
        runtime.audit(who.name, "campaign.cancel", f"campaign:{campaign_id}")
        return campaign_out(runtime, campaign_id)

    @r.get("/campaigns/{campaign_id}/customers")
    def customers(
        campaign_id: int,
        runtime: RuntimeDep,
        who: Admin,
        outcome: Literal["sent", "undelivered", "excluded", "approved"],
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> dict[str, Any]:
        rows = runtime.store.customer_outcomes(campaign_id, outcome, after, limit)
        return {
            "customers": [
                {
                    "customer_id": r.customer_id,
                    "outcome": r.outcome,
                    "reason": r.reason,
                    "approved_at": _iso(r.approved_at, runtime),
                    **({"error": r.error} if r.outcome == "undelivered" else {}),
                }
                for r in rows
            ],
            "next_after": rows[-1].seq if len(rows) == limit else None,
        }

    @r.get("/campaigns/{campaign_id}/notifications")
    def notifications(campaign_id: int, runtime: RuntimeDep, who: Admin) -> list[dict[str, Any]]:
        """Every notification for the campaign, with every delivery attempt."""
        runtime.store.get_campaign(campaign_id)
        return runtime.store.campaign_notifications(campaign_id)

    @r.put("/channels/{channel_id}")
    def put_channel(
        channel_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
        body: ChannelPut,
        runtime: RuntimeDep,
        who: Admin,
    ) -> dict[str, Any]:
        if body.delivery.type == "webhook":
            if not body.delivery.url:
                raise InvalidInput(
                    "delivery.url is required for webhook delivery", field="delivery.url"
                )
            target: str | None = check_outbound_url(
                body.delivery.url, runtime.settings.outbound, "delivery.url"
            )
        else:
            target = _channel_directory(body.delivery.directory)
        runtime.store.put_channel(
            ChannelConfig(
                channel_id, body.name, body.clearance_lead_seconds, body.delivery.type, target
            ),
            runtime.now_ms(),
        )
        runtime.audit(
            who.name,
            "channel.put",
            f"channel:{channel_id}",
            name=body.name,
            clearance_lead_seconds=body.clearance_lead_seconds,
            delivery=body.delivery.type,
            delivery_target=target,
        )
        return {
            "channel_id": channel_id,
            "name": body.name,
            "clearance_lead_seconds": body.clearance_lead_seconds,
            "delivery": {"type": body.delivery.type, "target": target},
        }

    return r


def _channel_directory(raw: str | None) -> str | None:
    """A file channel writes under CLEARANCE_FILE_CHANNEL_DIR: a key holder names a subdirectory,
    never a path elsewhere on the server."""
    return None if raw is None else check_subdirectory(raw)


def _placed(
    runtime: Runtime, c: Campaign, send_at: str | None, template_id: int | None
) -> tuple[str, ...]:
    """() for a V1 row; (send group id,) for a row with its own send time or template."""
    if send_at is None and template_id is None:
        return ()
    when = parse_time(send_at, runtime.settings.tz, "send_at") if send_at else None
    return (runtime.scheduled.place(c, when, template_id),)


def _target_row(item: Any, i: int, runtime: Runtime, c: Campaign) -> Any:
    if not isinstance(item, dict):
        raise InvalidInput(f"target_group[{i}] must be an object", field=f"target_group[{i}]")
    extra = set(item) - {"customer_id", "attributes", "send_at", "template_id"}
    if extra:
        raise InvalidInput(
            f"target_group[{i}] has unknown fields {sorted(extra)}", field=f"target_group[{i}]"
        )
    attributes = item.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise InvalidInput(
            f"target_group[{i}].attributes must be an object", field=f"target_group[{i}].attributes"
        )
    cid = check_customer_id(item.get("customer_id"), f"target_group[{i}].customer_id")
    send_at, template = item.get("send_at"), item.get("template_id")
    if send_at is not None and not isinstance(send_at, str):
        raise InvalidInput(f"target_group[{i}].send_at must be a time string", field="send_at")
    if template is not None and (isinstance(template, bool) or not isinstance(template, int)):
        raise InvalidInput(f"target_group[{i}].template_id must be an integer", field="template_id")
    return (cid, _attrs(attributes), *_placed(runtime, c, send_at, template))


async def _read_ndjson(request: Request, runtime: Runtime) -> list[Any]:
    out = []
    for n, line in enumerate(
        (await read_body(request, runtime.settings.max_body_bytes)).splitlines(), start=1
    ):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"line {n} is not valid JSON: {exc}", field=f"line {n}") from exc
    return out


async def _read_csv(request: Request, runtime: Runtime) -> list[Any]:
    try:
        text = (await read_body(request, runtime.settings.max_body_bytes)).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("CSV must be UTF-8") from exc
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "customer_id" not in reader.fieldnames:
        raise InvalidInput("CSV needs a header row with a customer_id column", field="customer_id")
    out = []
    for i, row in enumerate(reader):
        item: dict[str, Any] = {"customer_id": row.pop("customer_id")}
        # a customer's own send time and template (its send group), not attributes: read as
        # attributes, every customer went at execute_at with the first template
        if send_at := (row.pop("send_at", None) or "").strip():
            item["send_at"] = send_at
        if template := (row.pop("template_id", None) or "").strip():
            if not template.isdigit():
                raise InvalidInput(
                    f"target_group[{i}].template_id must be an integer", field="template_id"
                )
            item["template_id"] = int(template)
        item["attributes"] = {k: v for k, v in row.items() if k}
        out.append(item)
    return out
