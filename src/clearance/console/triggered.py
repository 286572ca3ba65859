"""Triggered campaigns (trigger event, CEL condition checked as you type, the toggles) and the
gateway (URL, timeout, secret rotation, a real test decision)."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.datastructures import FormData

from clearance.console.render import page
from clearance.console.session import Viewer, poster, runtime_of, viewer
from clearance.domain import check_customer_id
from clearance.errors import ClearanceError, NotFound
from clearance.outbound.policy import check_outbound_url
from clearance.outbound.signing import check_secret, mask_secret
from clearance.runtime import Runtime
from clearance.store import GatewayConfig
from clearance.triggered.gate import DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS
from clearance.triggered.matching import TriggeredCampaign, compile_condition

Who = Annotated[Viewer, Depends(viewer)]
Poster = Annotated[Viewer, Depends(poster)]
PLAIN = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: str.isdigit() takes "²", which int() refuses


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def triggered_body(form: FormData, errors: dict[str, str]) -> dict[str, Any]:
    """The triggered campaign as the API stores it (TriggeredIn's shape)."""
    key, event, condition = _text(form, "id"), _text(form, "event"), _text(form, "condition")
    if not PLAIN.match(key):
        errors["id"] = "1 to 200 characters, no control characters"
    if not PLAIN.match(event):
        errors["event"] = "1 to 200 characters, no control characters"
    if len(condition) > 4000:
        errors["condition"] = "at most 4,000 characters"
    elif condition:
        try:
            compile_condition(condition)
        except ClearanceError as exc:
            errors["condition"] = exc.message
    numbers = {}
    for name in ("channel_id", "action_id"):
        raw = _text(form, name) or "1"
        ok = DIGITS.fullmatch(raw) is not None and int(raw) <= 2**31 - 1
        if not ok:
            errors[name] = "a whole number"
        numbers[name] = int(raw) if ok else 0
    codes = [c for c in re.split(r"[\s,]+", _text(form, "promo_codes")) if c][:1000]
    notes = _text(form, "notes")[:2000]
    return {
        "id": key,
        "series_id": None,
        "notes": notes,
        "tags": [],
        "action": {
            "id": numbers["action_id"],
            "name": _text(form, "action_name")[:200],
            "promo_codes": codes or None,
            "channels": [
                {"id": numbers["channel_id"], "name": "", "brand_id": None, "templates": None}
            ],
        },
        "conditional": _text(form, "conditional") == "on",
        "active": _text(form, "active") == "on",
        "shadow": _text(form, "shadow") == "on",
        "trigger": {"event": event, "condition": condition or None},
    }


def _gateway_view(config: GatewayConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    secrets = (config.secret or "").split()
    return {
        "url": config.url,
        "timeout_ms": config.timeout_ms,
        "secret": mask_secret(secrets[0]) if secrets else None,
        "previous_secret": mask_secret(secrets[1]) if len(secrets) > 1 else None,
    }


def _save_gateway(runtime: Runtime, form: FormData) -> dict[str, str]:
    errors: dict[str, str] = {}
    raw_timeout = _text(form, "timeout_ms") or str(DEFAULT_TIMEOUT_MS)
    if (
        not DIGITS.fullmatch(raw_timeout)
        or not MIN_TIMEOUT_MS <= int(raw_timeout) <= MAX_TIMEOUT_MS
    ):
        errors["timeout_ms"] = f"from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS} ms"
    current = runtime.store.get_gateway()
    old = (current.secret or "").split() if current else []
    secret: str | None = " ".join(old) or None
    new = _text(form, "new_secret")
    if new:
        try:
            check_secret(new, "secret")
        except ClearanceError as exc:
            errors["new_secret"] = exc.message
        # rotation: the new secret signs first, the one it replaces stays valid beside it
        secret = " ".join([new, *old[:1]])
    if _text(form, "drop_previous") == "on" and secret:
        secret = secret.split()[0]
    try:
        url = check_outbound_url(_text(form, "url"), runtime.settings.outbound, "url")
    except ClearanceError as exc:
        errors["url"] = exc.message
    if errors:
        return errors
    config = GatewayConfig(url, int(raw_timeout), secret, current.headers if current else {})
    runtime.store.put_gateway(config, runtime.now_ms())
    runtime.realtime.index.invalidate()
    return {}


def triggered_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/console/triggered")
    def list_triggered(request: Request, who: Who) -> Response:
        items = runtime_of(request).store.list_triggered()
        return page(request, "triggered.html", who, items=items)

    @r.get("/console/triggered/edit")
    def edit(request: Request, who: Who, id: str = "") -> Response:
        body: dict[str, Any] | None = None
        if id:
            try:
                body = runtime_of(request).store.get_triggered(id)
            except NotFound:
                body = None
        return page(request, "triggered_edit.html", who, body=body, errors={}, existing=bool(body))

    @r.post("/console/triggered/check")
    async def check(request: Request, who: Poster) -> Response:
        condition = _text(await request.form(), "condition")
        if not condition:
            return JSONResponse({"ok": True})
        try:
            compile_condition(condition)
        except ClearanceError as exc:
            return JSONResponse({"ok": False, "error": exc.message})
        return JSONResponse({"ok": True})

    @r.post("/console/triggered/save")
    async def save(request: Request, who: Poster) -> Response:
        form = await request.form()
        runtime = runtime_of(request)
        errors: dict[str, str] = {}
        body = triggered_body(form, errors)
        editing = _text(form, "existing") == "1"
        if not errors and not editing:
            # "New" never replaces: the API's create refuses an id in use, so does the console
            try:
                await run_in_threadpool(runtime.store.get_triggered, body["id"])
                errors["id"] = "a triggered campaign with this ID exists; edit it from the list"
            except NotFound:
                pass
        if errors:
            return page(
                request, "triggered_edit.html", who, 400, body=body, errors=errors, existing=editing
            )
        created = await run_in_threadpool(
            runtime.store.put_triggered,
            body["id"],
            body,
            body["trigger"]["event"],
            body["active"],
            runtime.now_ms(),
        )
        runtime.realtime.index.invalidate()
        await run_in_threadpool(
            runtime.audit,
            who.name,
            "triggered.create" if created else "triggered.replace",
            f"triggered:{body['id']}",
            via="console",
        )
        return RedirectResponse("/console/triggered", status_code=303)

    @r.get("/console/gateway")
    def gateway(request: Request, who: Who) -> Response:
        config = runtime_of(request).store.get_gateway()
        return page(
            request,
            "gateway.html",
            who,
            gw=_gateway_view(config),
            errors={},
            test=None,
            default_timeout=DEFAULT_TIMEOUT_MS,
        )

    @r.post("/console/gateway")
    async def put_gateway(request: Request, who: Poster) -> Response:
        form = await request.form()
        runtime = runtime_of(request)
        errors = await run_in_threadpool(_save_gateway, runtime, form)
        config = await run_in_threadpool(runtime.store.get_gateway)
        if errors:
            return page(
                request,
                "gateway.html",
                who,
                400,
                gw=_gateway_view(config),
                errors=errors,
                test=None,
                default_timeout=DEFAULT_TIMEOUT_MS,
                values=dict(form),
            )
        if config is not None:
            runtime.realtime.gate.warm(config.url)
        await run_in_threadpool(
            runtime.audit,
            who.name,
            "gateway.put",
            "gateway",
            url=config.url if config else None,
            via="console",
        )
        return RedirectResponse("/console/gateway", status_code=303)

    @r.post("/console/gateway/test")
    async def test_decision(request: Request, who: Poster) -> Response:
        """A real call to the gateway with a test campaign; nothing is logged or sent."""
        form = await request.form()
        runtime = runtime_of(request)
        config = await run_in_threadpool(runtime.store.get_gateway)
        errors: dict[str, str] = {}
        test: dict[str, Any] | None = None
        try:
            user = check_customer_id(_text(form, "user_id") or "console-test", "user_id")
        except ClearanceError as exc:
            errors["user_id"] = exc.message
        else:
            campaign = TriggeredCampaign.from_body(
                {
                    "id": "console-test-decision",
                    "action": {"id": 0, "name": "test decision", "channels": [{"id": 0}]},
                    "trigger": {"event": "console_test"},
                }
            )
            result = await runtime.realtime.gate.decide(
                config, campaign, user, False, time.monotonic()
            )
            test = {
                "user_id": user,
                "outcome": str(result.outcome),
                "reason": result.reason,
                "latency_ms": round(result.latency_ms, 1),
            }
        return page(
            request,
            "gateway.html",
            who,
            gw=_gateway_view(config),
            errors=errors,
            test=test,
            default_timeout=DEFAULT_TIMEOUT_MS,
        )

    return r
