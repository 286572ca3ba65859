"""Mounting the console in the API's app: static files, sign-in and sign-out, the pages' routers,
and what a missing session or CSRF token becomes (a redirect to sign-in, a 403 page)."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Form, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from clearance.console.campaigns import campaigns_router
from clearance.console.insight import insight_router
from clearance.console.operations import operations_router
from clearance.console.render import page
from clearance.console.session import (
    COOKIE,
    LOGIN_COOKIE,
    THROTTLED,
    CsrfRefused,
    SignInRequired,
    Viewer,
    cookie_options,
    new_login_token,
    poster,
    runtime_of,
    sign_in,
)
from clearance.console.triggered import triggered_router


def install(app: FastAPI) -> None:
    static = resources.files("clearance.console") / "static"
    app.mount("/console/static", StaticFiles(directory=str(static)), name="console-static")
    app.add_exception_handler(SignInRequired, _to_sign_in)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.include_router(_session_router())
    app.include_router(campaigns_router())
    app.include_router(insight_router())
    app.include_router(triggered_router())
    app.include_router(operations_router())


async def _to_sign_in(request: Request, exc: Exception) -> Response:
    if request.headers.get("accept", "").startswith("application/json"):
        return Response('{"error":"sign in"}', status_code=401, media_type="application/json")
    return RedirectResponse("/console/sign-in", status_code=303)


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return page(
        request,
        "message.html",
        None,
        status_code=403,
        title="Refused",
        message="This form was sent without its security token (CSRF). Reload the page and "
        "try again.",
    )


def _sign_in_page(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    token = new_login_token()
    response = page(
        request, "signin.html", None, status_code=status_code, error=error, login_csrf=token
    )
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **cookie_options(request))
    return response


def _session_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/")
    def home() -> Response:
        return RedirectResponse("/console/campaigns", status_code=303)

    @r.get("/console/sign-in")
    def sign_in_form(request: Request) -> Response:
        return _sign_in_page(request)

    @r.post("/console/sign-in")
    async def sign_in_post(
        request: Request,
        user: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
        csrf: Annotated[str, Form()] = "",
    ) -> Response:
        expected = request.cookies.get(LOGIN_COOKIE)
        if not expected or not csrf or expected != csrf:
            raise CsrfRefused()
        token, error = await sign_in(request, user.strip(), password)
        if token is None:
            return _sign_in_page(request, error, status_code=429 if error == THROTTLED else 401)
        response = RedirectResponse("/console/campaigns", status_code=303)
        runtime = runtime_of(request)
        previous = request.cookies.get(COOKIE)
        if previous and len(previous) <= 300:  # a new sign-in ends the session it replaces
            await run_in_threadpool(runtime.store.close_session, previous)
        response.set_cookie(
            COOKIE,
            token,
            max_age=runtime.settings.token_idle_seconds * 4,
            **cookie_options(request),
        )
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return response

    @r.post("/console/sign-out")
    async def sign_out(request: Request, who: Annotated[Viewer, Depends(poster)]) -> Response:
        await run_in_threadpool(runtime_of(request).store.close_session, who.token)
        response = RedirectResponse("/console/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    return r
