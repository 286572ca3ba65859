"""`X-API-KEY` (admin / integrations) and the legacy `Authorization-Token` from general/login."""

from __future__ import annotations

import time

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from clearance.engine import Engine
from clearance.errors import Forbidden, NotAuthenticated
from clearance.store import Principal


class KeyCache:
    """Valid keys seen in the last `ttl` seconds, so the hot paths skip a database read per call.
    A revoked key stops working within `ttl` seconds; unknown keys are never cached."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._seen: dict[str, tuple[float, Principal]] = {}

    def get(self, key: str) -> Principal | None:
        hit = self._seen.get(key)
        if hit is None or time.monotonic() - hit[0] > self.ttl:
            return None
        return hit[1]

    def put(self, key: str, principal: Principal) -> None:
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[key] = (time.monotonic(), principal)


async def authenticate(request: Request, engine: Engine, admin: bool = False) -> Principal:
    key = request.headers.get("x-api-key")
    principal: Principal | None = None
    if key:
        cache: KeyCache | None = getattr(request.app.state, "key_cache", None)
        principal = cache.get(key) if cache is not None else None
        if principal is None:
            principal = await run_in_threadpool(engine.store.principal_for_key, key)
            if principal is None:
                raise NotAuthenticated("unknown or revoked API key")
            if cache is not None:
                cache.put(key, principal)
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
