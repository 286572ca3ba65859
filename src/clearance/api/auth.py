"""Who is calling: `X-API-KEY` (admin / integrations) or the legacy `Authorization-Token` from
general/login; then the caller's rate limit."""

from __future__ import annotations

import hashlib
import math
import time

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from clearance.api.ratelimit import KeyRateLimiter
from clearance.errors import Forbidden, NotAuthenticated, TooManyRequests
from clearance.runtime import Runtime
from clearance.store import Principal


class KeyCache:
    """Valid keys seen in the last `ttl` seconds, so the hot paths skip a database read per call.
    A key revoked in another process stops working within `ttl` seconds (in this one, at once);
    unknown keys are never cached. Entries are keyed by a digest, not by the key itself."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._seen: dict[bytes, tuple[float, Principal]] = {}

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    def get(self, key: str) -> Principal | None:
        hit = self._seen.get(self._digest(key))
        if hit is None or time.monotonic() - hit[0] > self.ttl:
            return None
        return hit[1]

    def put(self, key: str, principal: Principal) -> None:
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[self._digest(key)] = (time.monotonic(), principal)

    def forget(self, key_id: str) -> None:
        for digest, (_, principal) in list(self._seen.items()):
            if principal.name == key_id:
                del self._seen[digest]


def limiter(request: Request) -> KeyRateLimiter | None:
    found: KeyRateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    return found


async def authenticate(request: Request, runtime: Runtime, admin: bool = False) -> Principal:
    key = request.headers.get("x-api-key")
    if not key:  # what Prometheus and most tools send: `Authorization: Bearer <key>`
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        key = credentials.strip() if scheme.lower() == "bearer" else None
    principal: Principal | None = None
    if key:
        cache: KeyCache | None = getattr(request.app.state, "key_cache", None)
        principal = cache.get(key) if cache is not None else None
        if principal is None:
            principal = await run_in_threadpool(runtime.store.principal_for_key, key)
            if principal is None:
                raise NotAuthenticated("unknown or revoked API key")
            if cache is not None:
                cache.put(key, principal)
    else:
        token = request.headers.get("authorization-token")
        if not token:
            raise NotAuthenticated("send an X-API-KEY header (or Authorization-Token from login)")
        principal, expired = await run_in_threadpool(
            runtime.store.principal_for_token,
            token.strip('"'),
            runtime.now_ms(),
            runtime.settings.token_idle_seconds * 1000,
        )
        if expired:
            raise Forbidden("Authorization-Token expired; log in again")
        if principal is None:
            raise NotAuthenticated("unknown Authorization-Token")
    request.state.principal = principal.name
    limits = limiter(request)
    if limits is not None:
        wait = limits.allow(principal.name, principal.rate_limit_per_second)
        if wait:
            raise TooManyRequests(
                f"rate limit for {principal.name} exceeded; retry in {math.ceil(wait)} s",
                retry_after=wait,
            )
    if admin and principal.access_type != "admin":
        raise Forbidden("this call needs an admin key")
    return principal
