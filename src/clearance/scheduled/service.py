"""Scheduled campaigns' operations, as the API and the CLI call them: create, schedule, cancel,
approve. Rules in `domain`, I/O in `store`; the worker takes the timed steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from clearance.clock import Clock, from_ms, to_ms
from clearance.config import Settings
from clearance.domain import (
    MAX_APPROVALS_PER_CALL,
    Campaign,
    EventType,
    State,
    format_wire_time,
)
from clearance.errors import ClearanceError, Conflict, DeadlinePassed, InvalidInput
from clearance.metrics import Metrics
from clearance.scheduled.deadline import deadline_for
from clearance.scheduled.membership import MembershipCache
from clearance.scheduled.notifier import build_notifications
from clearance.store import ApprovalResult, Store


@dataclass
class ScheduledService:
    store: Store
    settings: Settings
    clock: Clock
    metrics: Metrics = field(default_factory=Metrics)
    membership: MembershipCache | None = None

    def __post_init__(self) -> None:
        if self.membership is None:
            self.membership = MembershipCache(self.store, self.settings.membership_cache_customers)

    def now_ms(self) -> int:
        return to_ms(self.clock.now())

    def _check_schedulable(self, c: Campaign) -> None:
        """A conditional campaign whose deadline has already passed could reach nobody: refuse."""
        if not c.conditional:
            return
        crb = deadline_for(self.store, c, self.settings.default_clearance_lead_seconds)
        if crb <= self.clock.now():
            raise InvalidInput(
                f"ClearanceRequiredBy would be {format_wire_time(crb, self.settings.tz)}, already "
                "past: move execute_at later or shorten clearance_lead_seconds",
                field="execute_at",
            )

    def create_campaign(self, c: Campaign, target: Sequence[tuple[str, str | None]]) -> Campaign:
        if c.state == State.SCHEDULED:
            self._check_schedulable(c)
        return self.store.create_campaign(c, target, self.now_ms())

    def schedule(self, campaign_id: int) -> Campaign:
        return self.store.schedule(campaign_id, self.now_ms(), self._check_schedulable)

    def cancel(self, campaign_id: int) -> Campaign:
        c = self.store.get_campaign(campaign_id)
        now = self.clock.now()
        notes = []
        if c.state not in (State.DRAFT, State.SCHEDULED):  # listeners only know processed ones
            notes = build_notifications(
                self.store,
                EventType.CAMPAIGN_CANCELED,
                c,
                now,
                now + timedelta(seconds=self.settings.notification_ttl_seconds),
                self.settings,
            )
        if not self.store.cancel(campaign_id, to_ms(now), notes):
            current = self.store.get_campaign(campaign_id).state
            raise Conflict(f"campaign {campaign_id} is {current} and can no longer be canceled")
        return self.store.get_campaign(campaign_id)

    def approve(self, campaign_id: int, entries: Sequence[tuple[str, bool]]) -> ApprovalResult:
        if len(entries) > MAX_APPROVALS_PER_CALL:
            raise InvalidInput(
                f"PromosUpdated has {len(entries)} entries; at most {MAX_APPROVALS_PER_CALL} "
                "per call. Nothing was applied.",
                field="PromosUpdated",
            )
        deduped = dict(entries)  # the last word on a customer within one call wins
        if len(deduped) < len(entries):
            entries = list(deduped.items())
        try:
            result = self._approve(campaign_id, entries)
        except ClearanceError:
            self.metrics.approvals.labels("refused").inc(len(entries))
            raise
        self.metrics.approvals.labels("accepted").inc(result.applied)
        self.metrics.approvals.labels("not_in_target_group").inc(len(result.not_in_target_group))
        return result

    def _approve(self, campaign_id: int, entries: Sequence[tuple[str, bool]]) -> ApprovalResult:
        try:
            assert self.membership is not None
            index = self.membership.index_for(campaign_id)
            return self.store.apply_approvals(
                campaign_id,
                entries,
                self.now_ms,
                index.split if index is not None else None,
                refuse_early=self.now_ms,
            )
        except DeadlinePassed as exc:
            deadline = exc.extra.get("clearance_required_by")
            if deadline is None:
                raise
            text = format_wire_time(from_ms(int(deadline)), self.settings.tz)
            raise DeadlinePassed(
                f"ClearanceRequiredBy for campaign {campaign_id} was {text} "
                f"({self.settings.timezone}); approvals are frozen and nothing was applied",
                field="CampaignID",
                clearance_required_by_text=text,
            ) from exc
