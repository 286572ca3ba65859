"""The worker: process → notify → freeze → execute, each step claimed under a lease; and the
triggered outbox (sends committed with their decisions), delivered under a lease too.

Any number of workers can run against one database: a campaign step is claimed with
`FOR UPDATE SKIP LOCKED` (PostgreSQL) or under SQLite's single writer, and every transition is
guarded by the expected state and the lease owner.
"""

from __future__ import annotations

import logging
import threading
import uuid

from clearance.channels.outbox import TriggeredOutbox
from clearance.clock import Clock, to_ms
from clearance.config import Settings
from clearance.domain import Campaign, EventType, State, first_template, send_group_id
from clearance.errors import StoreUnavailable
from clearance.metrics import Metrics
from clearance.scheduled.deadline import deadline_for
from clearance.scheduled.executor import Executor, RetryLater
from clearance.scheduled.heads_up import HEADS_UP_EVENT, HeadsUp, heads_up_notes
from clearance.scheduled.notifier import Notifier, build_notifications, executed_notifications
from clearance.scheduled.send_groups import GroupSteps
from clearance.store import LeaseLost, Store

log = logging.getLogger("clearance.worker")

RETRY_SECONDS = 5.0
FORGET_EVERY_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 5.0


class Worker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        notifier: Notifier | None = None,
        executor: Executor | None = None,
        worker_id: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self.notifier = notifier or Notifier(
            store, settings, clock, metrics=metrics, owner=self.worker_id
        )
        self.executor = executor or Executor(store, settings, clock, metrics=metrics)
        self.outbox = TriggeredOutbox(store, settings, clock, self.worker_id, metrics)
        self.groups = GroupSteps(store, settings, clock, self.executor, self.worker_id)
        self.notifier.renderers[HEADS_UP_EVENT] = HeadsUp(store, settings, clock, metrics).render
        self._forgot_at: int | None = None

    # --- driving ---------------------------------------------------------------------------------
    def run_once(self) -> bool:
        """Take every step that is due now; return whether anything was done."""
        did = False
        while self._step_one_campaign():
            did = True
        while self.groups.step_one():  # send groups: each frozen and executed on its own
            did = True
        while self.notifier.deliver_due():
            did = True
        while self.outbox.deliver_due():  # triggered sends, committed with their decisions
            did = True
        self._forget_event_ids()
        return did

    def _forget_event_ids(self) -> None:
        """Now and then, drop event-id reservations past the retention window."""
        now = to_ms(self.clock.now())
        if self._forgot_at is not None and now - self._forgot_at < FORGET_EVERY_SECONDS * 1000:
            return
        self._forgot_at = now
        self.store.forget_event_ids(now - int(self.settings.event_id_retention_seconds * 1000))

    def drain(self, max_rounds: int = 1000) -> None:
        """Run until nothing is due at the clock's current time (tests advance a fake clock)."""
        for _ in range(max_rounds):
            if not self.run_once():
                return
        raise RuntimeError("worker did not become idle")

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: take due steps, idle `worker_poll_seconds` between looks. While the
        database is away it backs off (doubling up to MAX_BACKOFF_SECONDS) and carries on when it
        is back; a step cut short resumes from its last commit (the worker re-claims its own
        lease at once)."""
        log.info("worker %s started", self.worker_id)
        backoff = self.settings.worker_poll_seconds
        while not stop.is_set():
            try:
                did = self.run_once()
                backoff = self.settings.worker_poll_seconds
            except StoreUnavailable as exc:
                log.warning("database unavailable; worker retrying in %.1f s: %s", backoff, exc)
                stop.wait(backoff)
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)
                continue
            except Exception:
                log.exception("worker step failed; retrying after a pause")
                did = False
            if not did:
                stop.wait(self.settings.worker_poll_seconds)
        self.notifier.close()
        log.info("worker %s stopped", self.worker_id)

    # --- steps -----------------------------------------------------------------------------------
    def _lease_until(self) -> int:
        return to_ms(self.clock.now()) + int(self.settings.lease_seconds * 1000)

    def _step_one_campaign(self) -> bool:
        now = self.clock.now()
        campaign_id = self.store.claim_due_campaign(to_ms(now), self.worker_id, self._lease_until())
        if campaign_id is None:
            return False
        campaign = self.store.get_campaign(campaign_id)
        try:
            if campaign.state == State.SCHEDULED:
                self._process(campaign)
            elif campaign.state == State.AWAITING_CLEARANCE:
                self._freeze(campaign)
            elif campaign.state in (State.CLEARED, State.EXECUTING):
                self._execute(campaign)
            else:  # canceled or finished meanwhile
                self.store.release(campaign_id, self.worker_id)
        except LeaseLost as exc:  # another worker has the step now; it is not ours to release
            log.warning("campaign %s: %s; leaving it to the new owner", campaign_id, exc)
        except RetryLater as exc:
            retry = to_ms(self.clock.now()) + int(RETRY_SECONDS * 1000)
            log.warning("campaign %s: %s; retrying", campaign_id, exc)
            self.store.release(campaign_id, self.worker_id, retry, str(exc))
        except Exception as exc:
            retry = to_ms(self.clock.now()) + int(RETRY_SECONDS * 1000)
            log.exception("campaign %s step failed", campaign_id)
            self.store.release(campaign_id, self.worker_id, retry, f"{type(exc).__name__}: {exc}")
        return True

    def _process(self, c: Campaign) -> None:
        """Freeze the target group, compute ClearanceRequiredBy, notify EventTypeID 5 listeners."""
        now = self.clock.now()
        if self.store.has_placed_rows(c.campaign_id):  # Conditional Execution V2
            self.groups.process(c)
            return
        if not c.conditional:
            self.store.transition(
                c.campaign_id,
                self.worker_id,
                [State.SCHEDULED],
                State.CLEARED,
                to_ms(c.execute_at),
                {"processed_at": to_ms(now)},
            )
            return
        c.clearance_required_by = deadline_for(
            self.store, c, self.settings.default_clearance_lead_seconds
        )
        notes = build_notifications(
            self.store,
            EventType.CLEARANCE_REQUIRED,
            c,
            now,
            c.clearance_required_by,
            self.settings,
        )
        group = send_group_id(first_template(c.channels), c.execute_at)
        notes += heads_up_notes(self.settings, c.campaign_id, group, c.clearance_required_by, now)
        self.store.transition(
            c.campaign_id,
            self.worker_id,
            [State.SCHEDULED],
            State.AWAITING_CLEARANCE,
            to_ms(c.clearance_required_by),
            {"processed_at": to_ms(now), "clearance_required_by": to_ms(c.clearance_required_by)},
            notes,
        )

    def _freeze(self, c: Campaign) -> None:
        """At ClearanceRequiredBy the approval set is frozen; later approvals are refused."""
        self.store.transition(
            c.campaign_id,
            self.worker_id,
            [State.AWAITING_CLEARANCE],
            State.CLEARED,
            to_ms(c.execute_at),
            {"cleared_at": to_ms(self.clock.now())},
            freeze_approvals=True,
        )

    def _execute(self, c: Campaign) -> None:
        if c.state == State.CLEARED and not self.store.transition(
            c.campaign_id,
            None,
            [State.CLEARED],
            State.EXECUTING,
            to_ms(self.clock.now()),
        ):
            self.store.release(c.campaign_id, self.worker_id)
            return
        self.executor.execute(c, self.worker_id)
        now = self.clock.now()
        notes = executed_notifications(self.store, c, now, self.settings)
        self.store.transition(
            c.campaign_id,
            self.worker_id,
            [State.EXECUTING],
            State.EXECUTED,
            None,
            {"executed_at": to_ms(now)},
            notes,
        )
