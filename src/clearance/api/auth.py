"""`X-API-KEY` (admin / integrations) and the legacy `Authorization-Token` from general/login."""

from __future__ import annotations

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from clearance.engine import Engine
from clearance.errors import Forbidden, NotAuthenticated
from clearance.store import Principal


async def authenticate(request: Request, engine: Engine, admin: bool = False) -> Principal:
    key = request.headers.get("x-api-key")
    principal: Principal | None = None
    if key:
        principal = await run_in_threadpool(engine.store.principal_for_key, key)
        if principal is None:
            raise NotAuthenticated("unknown or revoked API key")
    else:
        token = request.headers.get("authorization-token")
        if not token:
            raise NotAuthenticated("send an X-API-KEY header (or Authorization-Token from login)")
        principal, expired = await run_in_threadpool(
            engine.store.principal_for_token,
            token.strip('"'),
            engine.now_ms(),
            engine.settings.token_idle_seconds * 1000,
        )
        if expired:
            raise Forbidden("Authorization-Token expired; log in again")
        if principal is None:
            raise NotAuthenticated("unknown Authorization-Token")
    if admin and principal.access_type != "admin":
        raise Forbidden("this call needs an admin key")
    return principal
