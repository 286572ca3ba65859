"""The wire-compatible calls under /current/{area}/{Function} (function names case-insensitive).

Bodies are parsed with orjson and checked by hand so every error names its field and nothing is
applied from a request that fails anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from clearance.api.auth import authenticate
from clearance.api.body import read_json
from clearance.api.deps import runtime_of
from clearance.api.pages import processed_page, row_tails
from clearance.api.ratelimit import LoginThrottle
from clearance.api.responses import JSON
from clearance.api.wire_groups import approval_reply, grouped_page, named_groups
from clearance.channels import send_id
from clearance.clock import from_ms
from clearance.domain import (
    KNOWN_EVENT_TYPES,
    MAX_APPROVALS_PER_CALL,
    MAX_CHANNEL,
    MAX_ID_LENGTH,
    EventType,
    State,
    check_customer_id,
    check_page,
    format_wire_time,
    valid_customer_id,
    valid_customer_ids,
)
from clearance.errors import (
    Conflict,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    TooManyRequests,
)
from clearance.outbound.policy import check_outbound_url
from clearance.runtime import Runtime
from clearance.store import Principal

MAX_PASSWORD_LENGTH = 1024  # scrypt reads all of it: a longer one only costs the server

Handler = Callable[[Request, Runtime, Principal], Awaitable[Response]]


def _ok(payload: Any = None) -> Response:
    if payload is None:
        return Response(status_code=200)
    return JSON(payload)


def _int(
    value: Any, field: str, *, required: bool = True, minimum: int = 0, maximum: int = 2**62
) -> int | None:
    if value is None or value == "":
        if required:
            raise InvalidInput(f"{field} is required", field=field)
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be an integer", field=field)
    if isinstance(value, str):
        text = value.strip()
        digits = text.removeprefix("-")
        # ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() refuses or reads
        if not digits or not (digits.isascii() and digits.isdigit()) or len(value) > 18:
            raise InvalidInput(f"{field} must be an integer", field=field)
        value = int(text)
    if not isinstance(value, int) or value < minimum or value > maximum:
        raise InvalidInput(f"{field} must be an integer {minimum}..{maximum}", field=field)
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object")
    return body


# --- general -------------------------------------------------------------------------------------
async def login(request: Request, runtime: Runtime) -> Response:
    body = _object(await read_json(request, runtime.settings.max_body_bytes))
    username, password = body.get("Username"), body.get("Password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise InvalidInput("Username and Password are required strings", field="Username")
    if not username or len(username) > MAX_ID_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"Username must be 1..{MAX_ID_LENGTH} characters and Password at most "
            f"{MAX_PASSWORD_LENGTH}",
            field="Username",
        )
    throttle: LoginThrottle = request.app.state.login_throttle
    address = request.client.host if request.client else "?"
    wait = throttle.begin(username, address)
    if wait:
        raise TooManyRequests(
            f"too many failed logins; retry in {math.ceil(wait)} s", retry_after=wait
        )
    try:
        token = await run_in_threadpool(runtime.store.login, username, password, runtime.now_ms())
    except BaseException:
        throttle.abandoned(username, address)
        raise
    if token is None:
        throttle.failed(username, address)
        raise NotAuthenticated("wrong username or password")
    throttle.succeeded(username, address)
    return JSON(token)


async def register_listener(request: Request, runtime: Runtime, who: Principal) -> Response:
    body = _object(await read_json(request, runtime.settings.max_body_bytes))
    event_type = _int(body.get("EventTypeID"), "EventTypeID", minimum=1)
    assert event_type is not None
    if event_type not in KNOWN_EVENT_TYPES:
        raise InvalidInput(
            f"EventTypeID {event_type} is not one of {sorted(KNOWN_EVENT_TYPES)}",
            field="EventTypeID",
        )
    channel = _int(
        body.get("ChannelID"), "ChannelID", required=False, minimum=1, maximum=MAX_CHANNEL
    )
    if event_type == EventType.CLEARANCE_REQUIRED and channel is not None:
        raise InvalidInput("EventTypeID 5 is registered without a ChannelID", field="ChannelID")
    url = await run_in_threadpool(
        check_outbound_url, body.get("ListenerURL"), runtime.settings.outbound, "ListenerURL"
    )
    await run_in_threadpool(
        runtime.store.register_listener, event_type, channel, url, runtime.now_ms()
    )
    await run_in_threadpool(
        runtime.audit,
        who.name,
        "listener.register",
        f"listener:{event_type}:{channel or 0}",
        url=url,
    )
    return _ok()


async def unregister_listener(request: Request, runtime: Runtime, who: Principal) -> Response:
    body = _object(await read_json(request, runtime.settings.max_body_bytes))
    event_type = _int(body.get("EventTypeID"), "EventTypeID", minimum=1)
    channel = _int(
        body.get("ChannelID"), "ChannelID", required=False, minimum=1, maximum=MAX_CHANNEL
    )
    assert event_type is not None
    await run_in_threadpool(runtime.store.unregister_listener, event_type, channel)
    await run_in_threadpool(
        runtime.audit, who.name, "listener.unregister", f"listener:{event_type}:{channel or 0}"
    )
    return _ok()


async def get_listeners(request: Request, runtime: Runtime, who: Principal) -> Response:
    rows = await run_in_threadpool(runtime.store.list_listeners)
    return _ok([{"EventTypeID": e, "ListenerURL": u, "ChannelID": c} for e, u, c in rows])


# --- customers -----------------------------------------------------------------------------------
def _paging(request: Request) -> tuple[int, int]:
    q = request.query_params
    return check_page(
        _int(q.get("$top"), "$top", required=False), _int(q.get("$skip"), "$skip", required=False)
    )


def _campaign_id(request: Request) -> int:
    value = _int(request.query_params.get("CampaignID"), "CampaignID", minimum=1)
    assert value is not None
    return value


async def processed_customers(request: Request, runtime: Runtime, who: Principal) -> Response:
    campaign_id = _campaign_id(request)
    top, skip = _paging(request)
    q = request.query_params
    delimiter = q.get("CustomerAttributesDelimiter") or ";"
    if delimiter not in (",", ";"):
        raise InvalidInput(
            "CustomerAttributesDelimiter must be ',' or ';'", field="CustomerAttributesDelimiter"
        )
    raw_attrs = q.get("CustomerAttributes")
    names = [a.strip() for a in raw_attrs.split(delimiter) if a.strip()] if raw_attrs else []
    group = q.get("SendGroupID") or None
    body = await run_in_threadpool(_processed_page, runtime, campaign_id, top, skip, names, group)
    return Response(body, media_type="application/json")


def _processed_page(
    runtime: Runtime, campaign_id: int, top: int, skip: int, names: list[str], group: str | None
) -> bytes:
    c = runtime.store.get_campaign(campaign_id)
    if c.processed_at is None:
        raise Conflict(
            f"campaign {campaign_id} is {c.state}; its customers are listed once it is processed"
        )
    if c.state == State.AWAITING_CLEARANCE and runtime.scheduled.membership is not None:
        runtime.scheduled.membership.prefetch(campaign_id)
    if (grouped := grouped_page(runtime, c, group, top, skip, names)) is not None:
        return grouped
    tails = [t.decode() for t in row_tails(c.action_id, c.promo_codes)]
    body = runtime.store.render_page(campaign_id, skip, top, tails, names)
    if body is not None:
        return body
    rows = runtime.store.page_target(campaign_id, skip, top, attributes=bool(names))
    return processed_page(rows, c.action_id, c.promo_codes, names)


async def canceled_customers(request: Request, runtime: Runtime, who: Principal) -> Response:
    campaign_id = _campaign_id(request)
    top, skip = _paging(request)

    def page() -> list[dict[str, Any]]:
        c = runtime.store.get_campaign(campaign_id)
        rows = runtime.store.canceled_customers(campaign_id, top, skip)
        return [
            {"CustomerID": cid, "ActionID": c.action_id, "PromoCode": c.promo_code_for(seq)}
            for seq, cid in rows
        ]

    return _ok(await run_in_threadpool(page))


async def send_details(request: Request, runtime: Runtime, who: Principal) -> Response:
    campaign_id = _campaign_id(request)
    top, skip = _paging(request)
    with_templates = (request.query_params.get("IncludeTemplateIDs") or "").lower() == "true"
    tz = runtime.settings.tz

    def page() -> list[dict[str, Any]]:
        runtime.store.get_campaign(campaign_id)  # 404 for an unknown campaign
        out = []
        for seq, cid, channel, template, scheduled in runtime.store.send_details(
            campaign_id, top, skip
        ):
            row: dict[str, Any] = {
                "CustomerID": cid,
                "ChannelID": channel,
                "ScheduledTime": format_wire_time(from_ms(scheduled), tz),
                "SendID": send_id(campaign_id, channel, seq),
            }
            if with_templates:
                row["TemplateID"] = template
            out.append(row)
        return out

    return _ok(await run_in_threadpool(page))


# --- integrations --------------------------------------------------------------------------------
async def update_promotion_status(request: Request, runtime: Runtime, who: Principal) -> Response:
    body = _object(await read_json(request, runtime.settings.max_body_bytes))
    campaign_id = _int(body.get("CampaignID"), "CampaignID", minimum=1)
    assert campaign_id is not None
    updates = body.get("PromosUpdated")
    if not isinstance(updates, list):
        raise InvalidInput("PromosUpdated must be a list", field="PromosUpdated")
    if len(updates) > MAX_APPROVALS_PER_CALL:
        raise InvalidInput(
            f"PromosUpdated has {len(updates)} entries; at most {MAX_APPROVALS_PER_CALL} per call. "
            "Nothing was applied.",
            field="PromosUpdated",
        )
    # A JSON string holds a control character only through an escape (a backslash) or a raw
    # DEL; a body with neither cannot carry one, and the ids need no scan for them.
    raw = await request.body()  # already read: Starlette keeps it
    entries = _promotion_entries(updates, control_possible=b"\\" in raw or b"\x7f" in raw)
    expected = named_groups(body, updates) if b"SendGroupID" in raw else None
    result = await run_in_threadpool(
        runtime.scheduled.approve, campaign_id, entries, expected, who.name
    )
    return _ok(approval_reply(result))


def _promotion_entries(updates: list[Any], control_possible: bool = True) -> list[tuple[str, bool]]:
    """Validate PromosUpdated. The loop is the hot path of a 10,000-entry call, so it checks
    cheaply and only walks the slow, field-naming path once something is wrong.
    `control_possible=False` says the ids are known to hold no control characters."""
    try:
        ids = [entry["CustomerID"] for entry in updates]
        statuses = [entry["Status"] for entry in updates]
    except (TypeError, KeyError):
        ids = statuses = []
    if ids and valid_customer_ids(ids, control_possible) and set(map(type, statuses)) == {bool}:
        return list(zip(ids, statuses, strict=True))
    if not updates:
        return []
    for i, entry in enumerate(updates):  # something is wrong: find and name it
        if not isinstance(entry, dict):
            raise InvalidInput(f"PromosUpdated[{i}] must be an object", field=f"PromosUpdated[{i}]")
        if not isinstance(entry.get("Status"), bool):
            raise InvalidInput(
                f"PromosUpdated[{i}].Status must be true or false",
                field=f"PromosUpdated[{i}].Status",
            )
        check_customer_id(entry.get("CustomerID"), f"PromosUpdated[{i}].CustomerID")
    # numeric CustomerIDs are accepted and read as strings
    return [(check_customer_id(e["CustomerID"]), e["Status"]) for e in updates]


def _promo_list(body: Any, need_name: bool) -> list[tuple[str, str]]:
    if not isinstance(body, list):
        raise InvalidInput("body must be a JSON array")
    out = []
    for i, item in enumerate(body):
        if not isinstance(item, dict):
            raise InvalidInput(f"[{i}] must be an object", field=f"[{i}]")
        code = item.get("PromoCode")
        name = item.get("PromotionName", "")
        if not isinstance(code, str) or not valid_customer_id(code):  # same rule as ids
            raise InvalidInput(
                f"[{i}].PromoCode must be 1..200 characters without control characters",
                field=f"[{i}].PromoCode",
            )
        if need_name and (not isinstance(name, str) or len(name) > 500 or "\x00" in name):
            raise InvalidInput(
                f"[{i}].PromotionName must be a string", field=f"[{i}].PromotionName"
            )
        out.append((code, name))
    return out


async def add_promotions(request: Request, runtime: Runtime, who: Principal) -> Response:
    promos = _promo_list(await read_json(request, runtime.settings.max_body_bytes), need_name=True)
    await run_in_threadpool(runtime.store.add_promotions, promos, runtime.now_ms())
    await run_in_threadpool(
        runtime.audit, who.name, "promotions.add", "promotions", codes=[c for c, _ in promos]
    )
    return _ok()


async def get_promotions(request: Request, runtime: Runtime, who: Principal) -> Response:
    return _ok(await run_in_threadpool(runtime.store.list_promotions))


async def delete_promotions(request: Request, runtime: Runtime, who: Principal) -> Response:
    promos = _promo_list(await read_json(request, runtime.settings.max_body_bytes), need_name=False)
    await run_in_threadpool(runtime.store.delete_promotions, [c for c, _ in promos])
    await run_in_threadpool(
        runtime.audit, who.name, "promotions.delete", "promotions", codes=[c for c, _ in promos]
    )
    return _ok()


ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "general/registereventlistener"): register_listener,
    ("POST", "general/unregistereventlistener"): unregister_listener,
    ("GET", "general/getregisteredeventlisteners"): get_listeners,
    ("GET", "customers/getprocessedcampaigncustomers"): processed_customers,
    ("GET", "customers/getcanceledcampaigncustomers"): canceled_customers,
    ("GET", "customers/getcustomersenddetailsbycampaign"): send_details,
    ("POST", "integrations/updatecustomerpromotionstatus"): update_promotion_status,
    ("POST", "integrations/addpromotions"): add_promotions,
    ("GET", "integrations/getpromotions"): get_promotions,
    ("POST", "integrations/deletepromotions"): delete_promotions,
}


def wire_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.api_route("/current/{area}/{function}", methods=["GET", "POST"])
    async def dispatch(area: str, function: str, request: Request) -> Response:
        runtime = runtime_of(request)
        name = f"{area.lower()}/{function.lower()}"
        if name == "general/login" and request.method == "POST":
            return await login(request, runtime)
        principal = await authenticate(request, runtime)  # first: no key, no map of the calls
        handler = ROUTES.get((request.method, name))
        if handler is None:
            if any(key[1] == name for key in ROUTES):
                raise InvalidInput(f"{area}/{function} does not accept {request.method}")
            raise NotFound(f"unknown call {area}/{function}")
        return await handler(request, runtime, principal)

    return router
