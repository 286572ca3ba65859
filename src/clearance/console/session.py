"""Who is looking: a session cookie (HttpOnly, SameSite=Strict, Secure over https) for a login
user or an admin key, expiring like a login token; a CSRF token on every form."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from clearance.runtime import Runtime

COOKIE = "clearance_console"
LOGIN_COOKIE = "clearance_console_login"  # double-submit CSRF token of the sign-in form
MAX_FIELD = 300
THROTTLED = "Too many failed sign-ins; try again in a few minutes."


class SignInRequired(Exception):
    """No valid admin session: the console sends the browser to the sign-in page."""


class CsrfRefused(Exception):
    """A form posted without its CSRF token (or with another session's)."""


class Throttle(Protocol):
    def begin(self, username: str, address: str) -> float: ...
    def failed(self, username: str, address: str) -> None: ...
    def succeeded(self, username: str, address: str) -> None: ...
    def abandoned(self, username: str, address: str) -> None: ...


@dataclass(frozen=True)
class Viewer:
    name: str  # the login user, or the admin key's id
    token: str
    csrf: str


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def csrf_for(token: str) -> str:
    """Bound to the session: a token from another session (or none) is refused."""
    return hmac.new(token.encode(), b"clearance-console-csrf", hashlib.sha256).hexdigest()


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def cookie_options(request: Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "strict", "secure": is_https(request), "path": "/"}


def _viewer(runtime: Runtime, token: str) -> Viewer | None:
    settings = runtime.settings
    principal, expired = runtime.store.principal_for_token(
        token, runtime.now_ms(), settings.token_idle_seconds * 1000
    )
    if principal is None or expired or principal.access_type != "admin":
        return None
    # a session opened with a key ends when the key is revoked; a user's when the user is gone
    # or no longer admin (fail closed)
    if principal.name.startswith("key_"):
        if not runtime.store.key_active(principal.name):
            return None
    elif runtime.store.user_access(principal.name) != "admin":
        return None
    return Viewer(principal.name, token, csrf_for(token))


async def viewer(request: Request) -> Viewer:
    token = request.cookies.get(COOKIE)
    if not token or len(token) > MAX_FIELD:
        raise SignInRequired()
    found = await run_in_threadpool(_viewer, runtime_of(request), token)
    if found is None:
        raise SignInRequired()
    request.state.principal = found.name
    return found


async def poster(request: Request) -> AsyncIterator[Viewer]:
    """A signed-in viewer posting a form with its CSRF token (form field `csrf`, or the
    `X-CSRF-Token` header for the console's own fetches). The form (the one the route reads:
    Starlette keeps it) is closed after the route, its uploaded files' temporary files too."""
    who = await viewer(request)
    form = await request.form()
    try:
        sent = request.headers.get("x-csrf-token")
        if sent is None:
            value = form.get("csrf")
            sent = value if isinstance(value, str) else None
        if not sent or not hmac.compare_digest(sent, who.csrf):
            raise CsrfRefused()
        yield who
    finally:
        await form.close()


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


async def sign_in(request: Request, user: str, password: str) -> tuple[str | None, str | None]:
    """(session token, None) or (None, why not). A login user with admin access, or an admin key
    in Password (User empty). Integrations keys and users get no console."""
    runtime = runtime_of(request)
    if len(user) > MAX_FIELD or len(password) > 1000 or not password:
        return None, "Wrong user or password."
    throttle: Throttle = request.app.state.login_throttle
    address = request.client.host if request.client else "?"
    if not user:  # an admin key: its guesses count against the address like a user's
        who = f"(admin key from {address})"
        if throttle.begin(who, address):
            return None, THROTTLED
        try:
            principal = await run_in_threadpool(runtime.store.principal_for_key, password)
        except BaseException:
            throttle.abandoned(who, address)
            raise
        if principal is None:
            throttle.failed(who, address)
            return None, "Wrong user or password."
        throttle.succeeded(who, address)
        if principal.access_type != "admin":
            return None, "This key has no console access (admin keys only)."
        token = await run_in_threadpool(
            runtime.store.open_session, principal.name, "admin", runtime.now_ms()
        )
        return token, None
    if throttle.begin(user, address):
        return None, THROTTLED
    try:
        found: str | None = await run_in_threadpool(
            runtime.store.login, user, password, runtime.now_ms()
        )
    except BaseException:
        throttle.abandoned(user, address)
        raise
    if found is None:
        throttle.failed(user, address)
        return None, "Wrong user or password."
    throttle.succeeded(user, address)
    if await run_in_threadpool(_viewer, runtime, found) is None:
        await run_in_threadpool(runtime.store.close_session, found)
        return None, "This user has no console access (admin users only)."
    return found, None
