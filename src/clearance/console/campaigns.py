"""Campaigns: the list, the Campaign Builder, and the draft's schedule and cancel."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse

from clearance.console.builder import preview_deadline, read_builder, read_upload
from clearance.console.campaign_page import campaign_counts, campaign_page_routes
from clearance.console.render import page
from clearance.console.session import Viewer, poster, runtime_of, viewer
from clearance.console.targetfile import parse_target_file
from clearance.domain import State
from clearance.errors import ClearanceError
from clearance.runtime import Runtime

STATES = [s.value for s in State]
Who = Annotated[Viewer, Depends(viewer)]
Poster = Annotated[Viewer, Depends(poster)]


def _list_rows(runtime: Runtime, state: str | None, search: str | None) -> list[dict[str, Any]]:
    out = []
    for row in runtime.store.list_campaigns(state, search, 100):
        c = runtime.store.campaign_of_row(row)
        out.append({"c": c, "counts": campaign_counts(runtime, c)})
    return out


def campaigns_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/console/campaigns")
    def list_campaigns(request: Request, who: Who, state: str = "", q: str = "") -> Response:
        runtime = runtime_of(request)
        picked = state if state in STATES else None
        rows = _list_rows(runtime, picked, q.strip()[:200] or None)
        return page(
            request, "campaigns.html", who, rows=rows, states=STATES, state=picked or "", q=q
        )

    @r.get("/console/campaigns/new")
    def builder(request: Request, who: Who) -> Response:
        return _builder_page(request, who, {}, {}, None)

    @r.post("/console/campaigns/deadline")
    async def deadline(request: Request, who: Poster) -> Response:
        form = await request.form()
        runtime = runtime_of(request)
        return JSONResponse(await run_in_threadpool(preview_deadline, runtime, form))

    @r.post("/console/campaigns/preview")
    async def preview(request: Request, who: Poster) -> Response:
        data, name = await read_upload(await request.form())
        if data is None:
            return JSONResponse({"rows": 0, "error_count": 1, "errors": ["no file chosen"]})
        return JSONResponse((await run_in_threadpool(parse_target_file, name, data)).summary())

    @r.post("/console/campaigns/new")
    async def create(request: Request, who: Poster) -> Response:
        form = await request.form()
        runtime = runtime_of(request)
        data, name = await read_upload(form)
        draft = await run_in_threadpool(read_builder, runtime, form, data, name)
        schedule = form.get("action") == "schedule"
        if schedule and draft.target is None:
            draft.errors["target_file"] = "choose a target group file to schedule"
        campaign = draft.values.pop("campaign", None)
        if draft.errors or campaign is None:
            return _builder_page(request, who, draft.values, draft.errors, draft.target, 400)
        rows = draft.target.rows if draft.target else []
        if schedule:
            campaign = replace(campaign, state=State.SCHEDULED)
        try:
            created = await run_in_threadpool(runtime.scheduled.create_campaign, campaign, rows)
        except ClearanceError as exc:
            draft.errors[exc.field or "form"] = exc.message
            return _builder_page(request, who, draft.values, draft.errors, draft.target, 400)
        await run_in_threadpool(
            runtime.audit,
            who.name,
            "campaign.create",
            f"campaign:{created.campaign_id}",
            name=campaign.name,
            conditional=campaign.conditional,
            draft=not schedule,
            target_group=len(rows),
            via="console",
        )
        return RedirectResponse(f"/console/campaigns/{created.campaign_id}", status_code=303)

    @r.post("/console/campaigns/{campaign_id}/schedule")
    def schedule(request: Request, campaign_id: int, who: Poster) -> Response:
        runtime = runtime_of(request)
        try:
            runtime.scheduled.schedule(campaign_id)
        except ClearanceError as exc:
            return _flash(campaign_id, exc.message)
        runtime.audit(who.name, "campaign.schedule", f"campaign:{campaign_id}", via="console")
        return _flash(campaign_id)

    @r.post("/console/campaigns/{campaign_id}/cancel")
    def cancel(request: Request, campaign_id: int, who: Poster) -> Response:
        runtime = runtime_of(request)
        try:
            runtime.scheduled.cancel(campaign_id)
        except ClearanceError as exc:
            return _flash(campaign_id, exc.message)
        runtime.audit(who.name, "campaign.cancel", f"campaign:{campaign_id}", via="console")
        return _flash(campaign_id)

    @r.post("/console/campaigns/{campaign_id}/target-group")
    async def add_target(request: Request, campaign_id: int, who: Poster) -> Response:
        runtime = runtime_of(request)
        data, name = await read_upload(await request.form())
        if data is None:
            return _flash(campaign_id, "choose a target group file")
        parsed = await run_in_threadpool(parse_target_file, name, data)
        if parsed.error_count:
            return _flash(campaign_id, f"{parsed.error_count} invalid rows: " + parsed.errors[0])
        try:
            await run_in_threadpool(runtime.store.add_target, campaign_id, parsed.rows)
        except ClearanceError as exc:
            return _flash(campaign_id, exc.message)
        await run_in_threadpool(
            runtime.audit,
            who.name,
            "campaign.target_group",
            f"campaign:{campaign_id}",
            added=len(parsed.rows),
            via="console",
        )
        return _flash(campaign_id)

    campaign_page_routes(r)
    return r


def _flash(campaign_id: int, error: str | None = None) -> Response:
    suffix = f"?error={quote(error[:300])}" if error else ""
    return RedirectResponse(f"/console/campaigns/{campaign_id}{suffix}", status_code=303)


def _builder_page(
    request: Request,
    who: Viewer,
    values: dict[str, Any],
    errors: dict[str, str],
    target: Any,
    status_code: int = 200,
) -> Response:
    runtime = runtime_of(request)
    return page(
        request,
        "builder.html",
        who,
        status_code=status_code,
        values=values,
        errors=errors,
        target=target.summary() if target is not None else None,
        channels=runtime.store.list_channel_configs(),
        default_lead=runtime.settings.default_clearance_lead_seconds,
    )
