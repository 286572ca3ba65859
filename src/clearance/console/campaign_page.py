"""One campaign: its timeline, live approval progress against ClearanceRequiredBy with the
at-risk projection, and (after execution) every customer's outcome, paged and exportable."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from clearance.clock import from_ms, to_ms
from clearance.console.csvcell import row as csv_row
from clearance.console.progress import project
from clearance.console.render import page
from clearance.console.send_groups import group_rows
from clearance.console.session import Viewer, runtime_of, viewer
from clearance.domain import Campaign, State
from clearance.errors import NotFound
from clearance.runtime import Runtime
from clearance.store.console import OutcomeRow

Who = Annotated[Viewer, Depends(viewer)]
PAGE = 50
OUTCOME_FILTERS = ("all", "sent", "excluded", "undelivered", "approved")
EXPORT_PAGE = 10_000
MAX_CAMPAIGN_ID = 2**63 - 1


def _ms(value: Any) -> int | None:
    return None if value is None else to_ms(value)


# Counts of campaigns that can no longer change (executed or canceled, nothing undelivered: no
# send is added after execution and a delivered batch stays delivered), per store and campaign.
_FINAL: dict[tuple[int, int], dict[str, int]] = {}


def campaign_counts(runtime: Runtime, c: Campaign) -> dict[str, int]:
    key = (id(runtime.store), c.campaign_id)
    if key in _FINAL:
        return _FINAL[key]
    counts = runtime.store.executed_counts(c.campaign_id) or runtime.store.counts(c.campaign_id)
    if c.state in (State.EXECUTED, State.CANCELED) and counts["undelivered"] == 0:
        if len(_FINAL) > 10_000:
            _FINAL.clear()
        _FINAL[key] = counts
    return counts


def live_state(runtime: Runtime, c: Campaign) -> dict[str, Any]:
    counts = campaign_counts(runtime, c)
    frozen = c.cleared_at is not None
    # once frozen nobody is reviewed any more: the projection says so, no count needed
    live = c.conditional and not frozen
    reviewed = runtime.store.reviewed_count(c.campaign_id, False) if live else None
    now = runtime.now_ms()
    crb = _ms(c.clearance_required_by)
    out: dict[str, Any] = {
        "state": c.state.value,
        "counts": counts,
        "reviewed": reviewed,
        "now_ms": now,
        "clearance_required_by_ms": crb,
    }
    if c.conditional and c.processed_at is not None:
        stopped = frozen or c.state == State.CANCELED
        out["projection"] = project(
            counts["target"],
            counts["approved"] if reviewed is None else reviewed,
            _ms(c.processed_at),
            crb,
            now,
            stopped,
        ).as_dict()
    return out


def timeline(runtime: Runtime, c: Campaign) -> list[dict[str, Any]]:
    """What happened, in order, and what is still to come."""
    now = runtime.now_ms()
    steps: list[dict[str, Any]] = [
        {
            "at": _ms(c.created_at),
            "what": f"created ({c.state.value if c.state == State.DRAFT else 'scheduled'})",
            "attempts": [],
        }
    ]
    if c.processed_at is not None:
        steps.append(
            {
                "at": _ms(c.processed_at),
                "what": f"processed: target group frozen ({c.target_count} customers)",
                "attempts": [],
            }
        )
    for note in runtime.store.campaign_notifications(c.campaign_id):
        steps.append(
            {
                "at": note["attempt_log"][0]["at"] if note["attempt_log"] else None,
                "what": f"EventTypeID {note['event_type_id']} to {note['listener_url']}: "
                f"{note['state']}",
                "attempts": note["attempt_log"],
            }
        )
    crb = _ms(c.clearance_required_by)
    if c.conditional and crb is not None:
        steps.append(
            {
                "at": crb,
                "what": "ClearanceRequiredBy"
                + (": approvals frozen" if c.cleared_at else " (to come)" if crb > now else ""),
                "attempts": [],
            }
        )
    if c.executed_at is not None:
        steps.append({"at": _ms(c.executed_at), "what": "executed", "attempts": []})
    elif c.state not in (State.CANCELED, State.DRAFT):
        steps.append(
            {
                "at": _ms(c.execute_at),
                "what": "execution (to come)" if c.state != State.EXECUTING else "executing",
                "attempts": [],
            }
        )
    if c.canceled_at is not None:
        steps.append({"at": _ms(c.canceled_at), "what": "canceled", "attempts": []})
    return steps


def customer_rows(
    runtime: Runtime, c: Campaign, outcome: str, after: int, limit: int
) -> list[OutcomeRow]:
    if outcome == "all":
        return runtime.store.outcome_page(
            c.campaign_id, c.state, c.cleared_at is not None, after, limit
        )
    return [
        OutcomeRow(o.seq, o.customer_id, o.outcome, o.reason, _ms(o.approved_at))
        for o in runtime.store.customer_outcomes(c.campaign_id, outcome, after, limit)
    ]


def _export(runtime: Runtime, c: Campaign, outcome: str) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["customer_id", "outcome", "reason", "approved_at"])
    after = 0
    tz = runtime.settings.tz
    while True:
        rows = customer_rows(runtime, c, outcome, after, EXPORT_PAGE)
        for o in rows:
            at = (
                ""
                if o.approved_at_ms is None
                else from_ms(o.approved_at_ms).astimezone(tz).isoformat()
            )
            w.writerow(csv_row([o.customer_id, o.outcome, o.reason or "", at]))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if len(rows) < EXPORT_PAGE:
            return
        after = rows[-1].seq


def campaign_page_routes(r: APIRouter) -> None:
    @r.get("/console/campaigns/{campaign_id}")
    def campaign(
        request: Request,
        campaign_id: int,
        who: Who,
        outcome: str = "all",
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        error: Annotated[str, Query(max_length=400)] = "",
    ) -> Response:
        runtime = runtime_of(request)
        try:
            if not 0 <= campaign_id <= MAX_CAMPAIGN_ID:  # the store's BIGINT: no such campaign
                raise NotFound(f"no campaign {campaign_id}")
            c = runtime.store.get_campaign(campaign_id)
        except NotFound:
            return page(
                request,
                "message.html",
                who,
                404,
                title="Not found",
                message=f"No campaign {campaign_id}.",
            )
        outcome = outcome if outcome in OUTCOME_FILTERS else "all"
        show_table = (
            c.state in (State.EXECUTED, State.CANCELED, State.EXECUTING) or outcome == "approved"
        )
        rows = customer_rows(runtime, c, outcome, after, PAGE) if show_table else []
        return page(
            request,
            "campaign.html",
            who,
            c=c,
            live=live_state(runtime, c),
            steps=timeline(runtime, c),
            groups=group_rows(runtime, c),
            rows=rows,
            outcome=outcome,
            outcomes=OUTCOME_FILTERS,
            after=after,
            next_after=rows[-1].seq if len(rows) == PAGE else None,
            show_table=show_table,
            error=error,
            cancelable=c.state
            in (State.DRAFT, State.SCHEDULED, State.AWAITING_CLEARANCE, State.CLEARED),
        )

    @r.get("/console/campaigns/{campaign_id}/live")
    def live(request: Request, campaign_id: int, who: Who) -> Response:
        runtime = runtime_of(request)
        c = runtime.store.get_campaign(campaign_id)
        return JSONResponse(live_state(runtime, c), headers={"Cache-Control": "no-store"})

    @r.get("/console/campaigns/{campaign_id}/customers.csv")
    def export(request: Request, campaign_id: int, who: Who, outcome: str = "all") -> Response:
        runtime = runtime_of(request)
        c = runtime.store.get_campaign(campaign_id)
        outcome = outcome if outcome in OUTCOME_FILTERS else "all"
        return StreamingResponse(
            _export(runtime, c, outcome),
            media_type="text/csv",
            headers={
                "Content-Disposition": (
                    f'attachment; filename="campaign-{campaign_id}-{outcome}.csv"'
                )
            },
        )
