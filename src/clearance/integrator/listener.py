"""The listener app (ASGI): receives notifications, reviews a scheduled campaign's customers with
the operator's own function, and pushes approvals before ClearanceRequiredBy.

It acknowledges at once and reviews in the background, page by page: each page's decisions are
pushed as soon as they are made (not all at the end), and no new page is started once the deadline
is near, so everything already decided lands in time. Customers it could not review are reported
as missed. Reports are served at GET /reports and GET /reports/{campaign_id}.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clearance.clock import Clock, SystemClock
from clearance.integrator.client import Client, Customer
from clearance.integrator.decision import Decision
from clearance.integrator.errors import ClearanceDeadlinePassed, IntegratorError
from clearance.integrator.verify import Rejected, Verifier

log = logging.getLogger("clearance.integrator.listener")

Review = Callable[[list[Customer]], Awaitable[Sequence[Decision]]]
MAX_REFUSALS_KEPT = 10_000


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


@dataclass
class ReviewReport:
    campaign_id: int
    clearance_required_by: str
    state: str = "running"  # running · done · stopped_at_deadline · failed
    reviewed: int = 0
    approved: int = 0
    refused: int = 0
    missed: int = 0
    not_in_target_group: int = 0
    refusals: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started_at: str = ""
    finished_at: str | None = None
    last_push_at: str | None = None


class Listener:
    def __init__(
        self,
        client: Client,
        review: Review,
        *,
        secret: str | None = None,
        tolerance_seconds: float = 300,
        timezone: str = "UTC",
        safety_seconds: float = 2.0,
        page_size: int = 10_000,
        attributes: Sequence[str] = (),
        push_concurrency: int = 2,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.review = review
        self.clock = clock or SystemClock()
        self.verifier = Verifier(secret, self.clock, tolerance_seconds) if secret else None
        self.tz = ZoneInfo(timezone)
        self.safety = timedelta(seconds=safety_seconds)
        self.page_size = page_size
        self.attributes = tuple(attributes)
        self.push_concurrency = push_concurrency
        self.reports: dict[int, ReviewReport] = {}
        self.events: list[dict[str, Any]] = []
        self._running: dict[int, asyncio.Task[None]] = {}
        self.app = Starlette(
            routes=[
                Route("/", self.receive, methods=["POST"]),
                Route("/reports", self.list_reports, methods=["GET"]),
                Route("/reports/{campaign_id:int}", self.get_report, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.close()

    async def close(self) -> None:
        """Stop reviews in progress and close the client (run by the app's lifespan)."""
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        await self.client.close()

    # --- HTTP ------------------------------------------------------------------------------------
    async def receive(self, request: Request) -> Response:
        body = await request.body()
        if self.verifier is not None:
            try:
                self.verifier.verify(body, {k.lower(): v for k, v in request.headers.items()})
            except Rejected as exc:
                log.warning("rejected notification: %s", exc.message)
                return _json({"error": exc.message}, exc.status)
        try:
            note = orjson.loads(body)
            event_type = int(note["EventTypeID"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _json({"error": "not a notification"}, 400)
        self.events.append(note)
        if event_type == 5:
            campaign_id = int(note["CampaignID"])
            if campaign_id in self._running and not self._running[campaign_id].done():
                return _json({"status": "already reviewing"}, 200)
            self._running[campaign_id] = asyncio.get_running_loop().create_task(
                self.review_campaign(campaign_id, str(note["ClearanceRequiredBy"]))
            )
        return _json({"status": "accepted"}, 200)

    async def list_reports(self, request: Request) -> Response:
        return _json([asdict(r) for r in self.reports.values()])

    async def get_report(self, request: Request) -> Response:
        report = self.reports.get(request.path_params["campaign_id"])
        if report is None:
            return _json({"error": "no review for this campaign"}, 404)
        return _json(asdict(report))

    async def wait(self, campaign_id: int) -> ReviewReport:
        """Wait for a campaign's review to finish (for scripts and tests)."""
        await self._running[campaign_id]
        return self.reports[campaign_id]

    # --- the review ------------------------------------------------------------------------------
    def _deadline(self, text: str) -> datetime:
        when = datetime.fromisoformat(text)  # "YYYY-MM-DD HH:MM:SS", in the site's time zone
        return when if when.tzinfo else when.replace(tzinfo=self.tz)

    async def review_campaign(self, campaign_id: int, clearance_required_by: str) -> None:
        report = ReviewReport(
            campaign_id, clearance_required_by, started_at=self.clock.now().isoformat()
        )
        self.reports[campaign_id] = report
        stop_at = self._deadline(clearance_required_by) - self.safety
        pushes: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self.push_concurrency)
        stopped = False
        try:
            async for page in self.client.iter_customer_pages(
                campaign_id, page_size=self.page_size, attributes=self.attributes
            ):
                remaining = (stop_at - self.clock.now()).total_seconds()
                if stopped or remaining <= 0:
                    stopped = True
                    report.missed += len(page)
                    continue
                try:
                    decisions = await asyncio.wait_for(self.review(page), remaining)
                except TimeoutError:
                    stopped = True
                    report.missed += len(page)
                    report.errors.append("review ran into the deadline; the page was not pushed")
                    continue
                if self.clock.now() >= stop_at:  # decided too late to push safely
                    stopped = True
                    report.missed += len(page)
                    continue
                report.reviewed += len(decisions)
                for d in decisions:
                    if not d.approved:
                        report.refused += 1
                        if len(report.refusals) < MAX_REFUSALS_KEPT:
                            report.refusals.append(
                                {"customer_id": d.customer_id, "reason": d.reason}
                            )
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(
                    self._push(campaign_id, decisions, report, slots)
                )
                pushes.add(task)
                task.add_done_callback(pushes.discard)
            await asyncio.gather(*pushes)
            report.state = "stopped_at_deadline" if stopped else "done"
        except IntegratorError as exc:
            await asyncio.gather(*pushes, return_exceptions=True)
            report.state = "failed"
            report.errors.append(str(exc))
        except Exception as exc:  # the review itself broke (customer data that will not load…)
            await asyncio.gather(*pushes, return_exceptions=True)
            log.exception("review of campaign %s failed", campaign_id)
            report.state = "failed"
            report.errors.append(f"review failed: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            report.finished_at = self.clock.now().isoformat()

    async def _push(
        self,
        campaign_id: int,
        decisions: Sequence[Decision],
        report: ReviewReport,
        slots: asyncio.Semaphore,
    ) -> None:
        try:
            summary = await self.client.approve(
                campaign_id, [(d.customer_id, d.approved) for d in decisions], concurrency=1
            )
            report.approved += sum(1 for d in decisions if d.approved) - len(
                [c for c in summary.not_in_target_group]
            )
            report.not_in_target_group += len(summary.not_in_target_group)
            report.last_push_at = self.clock.now().isoformat()
        except ClearanceDeadlinePassed as exc:
            report.missed += len(decisions)
            report.reviewed -= len(decisions)
            report.errors.append(f"approvals arrived after the deadline: {exc.message}")
        except IntegratorError as exc:
            report.missed += len(decisions)
            report.reviewed -= len(decisions)
            report.errors.append(str(exc))
        finally:
            slots.release()
