"""Pages: one Jinja2 environment (autoescaped: everything rendered is escaped), time in the site
zone, and the layout's navigation."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from clearance.clock import from_ms
from clearance.console.session import Viewer, runtime_of

NAV = (
    ("campaigns", "Campaigns", "/console/campaigns"),
    ("new", "Campaign Builder", "/console/campaigns/new"),
    ("whynot", "Why not?", "/console/why-not"),
    ("triggered", "Triggered", "/console/triggered"),
    ("gateway", "Gateway", "/console/gateway"),
    ("decisions", "Decisions", "/console/decisions"),
    ("listeners", "Listeners", "/console/listeners"),
    ("keys", "Keys", "/console/keys"),
    ("audit", "Audit", "/console/audit"),
)


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("clearance.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def page(
    request: Request,
    template: str,
    who: Viewer | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    runtime = runtime_of(request)
    tz = runtime.settings.tz

    def when(value: datetime | int | None) -> str:
        if value is None:
            return "—"
        moment = from_ms(value) if isinstance(value, int) else value
        return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    html = (
        environment()
        .get_template(template)
        .render(
            who=who,
            csrf=who.csrf if who else "",
            nav=NAV,
            zone=runtime.settings.timezone,
            when=when,
            now_ms=runtime.now_ms(),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response
