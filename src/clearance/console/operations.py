"""Listeners and notifications, keys (a new key is shown once; revoke) and the audit trail."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from clearance.console.render import page
from clearance.console.session import Viewer, poster, runtime_of, viewer
from clearance.domain import check_listener
from clearance.errors import ClearanceError
from clearance.outbound.policy import check_outbound_url

Who = Annotated[Viewer, Depends(viewer)]
Poster = Annotated[Viewer, Depends(poster)]
DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: str.isdigit() takes "²", which int() refuses


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def operations_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/console/listeners")
    def listeners(
        request: Request, who: Who, error: Annotated[str, Query(max_length=400)] = ""
    ) -> Response:
        store = runtime_of(request).store
        return page(
            request,
            "listeners.html",
            who,
            listeners=store.list_listeners(),
            notifications=store.recent_notifications(100),
            error=error,
        )

    @r.post("/console/listeners")
    async def register(request: Request, who: Poster) -> Response:
        form = await request.form()  # the store work below runs off the event loop
        return await run_in_threadpool(_register, request, who, form)

    def _register(request: Request, who: Viewer, form: FormData) -> Response:
        runtime = runtime_of(request)
        raw_type = _text(form, "event_type_id") or "5"
        raw_channel = _text(form, "channel_id")
        try:
            if not DIGITS.fullmatch(raw_type) or not (
                raw_channel == "" or DIGITS.fullmatch(raw_channel)
            ):
                raise ClearanceError("EventTypeID and ChannelID are whole numbers")
            check_listener(int(raw_type), int(raw_channel) if raw_channel else None)
            url = check_outbound_url(_text(form, "url"), runtime.settings.outbound, "ListenerURL")
        except ClearanceError as exc:
            from urllib.parse import quote

            return RedirectResponse(
                f"/console/listeners?error={quote(exc.message[:300])}", status_code=303
            )
        channel = int(raw_channel) if raw_channel else None
        runtime.store.register_listener(int(raw_type), channel, url, runtime.now_ms())
        runtime.audit(
            who.name,
            "listener.register",
            f"listener:{raw_type}:{channel or 0}",
            url=url,
            via="console",
        )
        return RedirectResponse("/console/listeners", status_code=303)

    @r.get("/console/keys")
    def keys(request: Request, who: Who) -> Response:
        return page(
            request, "keys.html", who, keys=runtime_of(request).store.list_api_keys(), created=None
        )

    @r.post("/console/keys")
    async def create_key(request: Request, who: Poster) -> Response:
        form = await request.form()  # the store work below runs off the event loop
        return await run_in_threadpool(_create_key, request, who, form)

    def _create_key(request: Request, who: Viewer, form: FormData) -> Response:
        runtime = runtime_of(request)
        kind = _text(form, "type")
        if kind not in ("admin", "integrations"):
            kind = "integrations"
        name = _text(form, "name")[:200]
        key_id, key = runtime.store.create_api_key(kind, name, runtime.now_ms())
        runtime.audit(who.name, "key.create", key_id, type=kind, name=name, via="console")
        # shown once, on this page; never again
        return page(
            request,
            "keys.html",
            who,
            keys=runtime.store.list_api_keys(),
            created={"key_id": key_id, "key": key, "type": kind},
        )

    @r.post("/console/keys/revoke")
    async def revoke(request: Request, who: Poster) -> Response:
        form = await request.form()  # the store work below runs off the event loop
        return await run_in_threadpool(_revoke, request, who, form)

    def _revoke(request: Request, who: Viewer, form: FormData) -> Response:
        runtime = runtime_of(request)
        key_id = _text(form, "key_id")
        try:
            runtime.store.revoke_api_key(key_id, runtime.now_ms())
        except ClearanceError:
            return RedirectResponse("/console/keys", status_code=303)
        cache = getattr(request.app.state, "key_cache", None)
        if cache is not None:
            cache.forget(key_id)
        runtime.audit(who.name, "key.revoke", key_id, via="console")
        return RedirectResponse("/console/keys", status_code=303)

    @r.get("/console/audit")
    def audit(request: Request, who: Who, after: Annotated[int, Query(ge=0)] = 0) -> Response:
        rows = runtime_of(request).store.audit_page(after, 200)
        return page(
            request,
            "audit.html",
            who,
            entries=rows,
            next_after=rows[-1]["audit_id"] if len(rows) == 200 else None,
        )

    return r
