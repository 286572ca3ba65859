"""Answers: "Why not?" (every campaign and triggered decision that concerned a customer) and the
decision explorer (filters, outcome breakdown, latency histogram, CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from clearance.clock import from_ms
from clearance.console.charts import latency_histogram, outcome_bars, percentiles
from clearance.console.csvcell import row as csv_row
from clearance.console.render import page
from clearance.console.session import Viewer, runtime_of, viewer
from clearance.domain import parse_time
from clearance.errors import ClearanceError
from clearance.runtime import Runtime
from clearance.store import DecisionRow

Who = Annotated[Viewer, Depends(viewer)]
Short = Annotated[str, Query(max_length=200)]
TABLE = 100


def _filters(
    runtime: Runtime, campaign: str, user: str, outcome: str, start: str, end: str
) -> dict[str, Any]:
    tz = runtime.settings.tz
    out: dict[str, Any] = {
        "campaign_key": campaign or None,
        "user_id": user or None,
        "outcome": outcome or None,
        "from_ms": int(parse_time(start, tz, "From").timestamp() * 1000) if start else None,
        "to_ms": int(parse_time(end, tz, "To").timestamp() * 1000) if end else None,
    }
    return out


def _decision_csv(runtime: Runtime, filters: dict[str, Any]) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "decision_id",
            "at",
            "campaign_id",
            "user_id",
            "outcome",
            "reason",
            "latency_ms",
            "sent",
            "shadow",
            "event_id",
        ]
    )
    after: str | None = None
    while True:
        rows, cursor = runtime.store.query_decisions(**filters, after=after, limit=10_000)
        for d in rows:
            w.writerow(
                csv_row(
                    [
                        d.decision_id,
                        from_ms(d.at).isoformat(),
                        d.campaign_key,
                        d.user_id,
                        d.outcome,
                        d.reason or "",
                        d.latency_ms,
                        d.sent,
                        d.shadow,
                        d.event_id or "",
                    ]
                )
            )
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if len(rows) < 10_000:
            return
        after = cursor


def _answered_by(runtime: Runtime, campaign_id: int, at_ms: int | None) -> str:
    """The key or user whose call stored the customer's latest answer ("" when none was
    recorded: approvals stored before the record existed, or before it was written in the
    approvals' own transaction, when a crash could fall between the two)."""
    return "" if at_ms is None else " or ".join(runtime.store.approvers(campaign_id, at_ms))


def insight_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/console/why-not")
    def why_not(request: Request, who: Who, customer: Short = "") -> Response:
        runtime = runtime_of(request)
        customer = customer.strip()
        memberships: list[Any] = []
        decisions: list[DecisionRow] = []
        if customer:
            memberships = [
                (m, _answered_by(runtime, m.campaign_id, m.approved_at_ms))
                for m in runtime.store.customer_memberships(customer)
            ]
            decisions = runtime.store.user_decisions(customer)
        return page(
            request,
            "whynot.html",
            who,
            customer=customer,
            memberships=memberships,
            decisions=decisions,
        )

    @r.get("/console/decisions")
    def decisions(
        request: Request,
        who: Who,
        campaign: Short = "",
        user: Short = "",
        outcome: Short = "",
        start: Annotated[str, Query(alias="from", max_length=40)] = "",
        end: Annotated[str, Query(alias="to", max_length=40)] = "",
        after: Short = "",
    ) -> Response:
        runtime = runtime_of(request)
        values = {"campaign": campaign, "user": user, "outcome": outcome, "from": start, "to": end}
        try:
            filters = _filters(
                runtime, campaign.strip(), user.strip(), outcome.strip(), start.strip(), end.strip()
            )
            rows, cursor = runtime.store.query_decisions(
                **filters, after=after or None, limit=TABLE
            )
        except ClearanceError as exc:
            return page(
                request,
                "decisions.html",
                who,
                400,
                values=values,
                error=exc.message,
                rows=[],
                counts={},
                bars="",
                histogram="",
                pct=None,
                next_after=None,
                query="",
            )
        counts, latencies = runtime.store.decision_stats(**filters)
        from urllib.parse import urlencode

        query = urlencode({k: v for k, v in values.items() if v})
        return page(
            request,
            "decisions.html",
            who,
            values=values,
            error=None,
            rows=rows,
            counts=counts,
            bars=outcome_bars(counts),
            histogram=latency_histogram(latencies),
            pct=percentiles(latencies),
            sampled=len(latencies),
            next_after=cursor if len(rows) == TABLE else None,
            query=query,
        )

    @r.get("/console/decisions.csv")
    def decisions_csv(
        request: Request,
        who: Who,
        campaign: Short = "",
        user: Short = "",
        outcome: Short = "",
        start: Annotated[str, Query(alias="from", max_length=40)] = "",
        end: Annotated[str, Query(alias="to", max_length=40)] = "",
    ) -> Response:
        runtime = runtime_of(request)
        filters = _filters(
            runtime, campaign.strip(), user.strip(), outcome.strip(), start.strip(), end.strip()
        )
        return StreamingResponse(
            _decision_csv(runtime, filters),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="decisions.csv"'},
        )

    return r
