"""Scheduled campaigns' operations, as the API and the CLI call them: create, schedule, cancel,
approve. Rules in `domain`, I/O in `store`; the worker takes the timed steps."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from clearance.clock import Clock, from_ms, to_ms
from clearance.config import Settings
from clearance.domain import (
    MAX_APPROVALS_PER_CALL,
    Campaign,
    EventType,
    State,
    first_template,
    format_wire_time,
    send_group_id,
)
from clearance.errors import ClearanceError, Conflict, DeadlinePassed, InvalidInput
from clearance.metrics import Metrics
from clearance.scheduled.deadline import deadline_for
from clearance.scheduled.heads_up import GroupStatus, clearance_status
from clearance.scheduled.membership import MembershipCache
from clearance.scheduled.notifier import build_notifications
from clearance.scheduled.placement import group_times, place_in_group
from clearance.store import ApprovalResult, GroupApprovalResult, Store
from clearance.store.campaign_rows import TargetRows


@dataclass
class ScheduledService:
    store: Store
    settings: Settings
    clock: Clock
    metrics: Metrics = field(default_factory=Metrics)
    membership: MembershipCache | None = None
    _grouped: dict[int, bool] = field(default_factory=dict)  # campaign → has send groups

    def __post_init__(self) -> None:
        if self.membership is None:
            self.membership = MembershipCache(self.store, self.settings.membership_cache_customers)

    def now_ms(self) -> int:
        return to_ms(self.clock.now())

    def _check_schedulable(self, c: Campaign, send_times: Sequence[datetime] = ()) -> None:
        """A conditional campaign (or send group) whose deadline has already passed could reach
        nobody: refuse."""
        if not c.conditional:
            return
        crb = deadline_for(self.store, c, self.settings.default_clearance_lead_seconds)
        if crb <= self.clock.now():
            raise InvalidInput(
                f"ClearanceRequiredBy would be {format_wire_time(crb, self.settings.tz)}, already "
                "past: move execute_at later or shorten clearance_lead_seconds",
                field="execute_at",
            )
        # each send group's own deadline, which must still be ahead when the campaign is
        # processed (its EventTypeID 5 goes then): one already past could reach nobody
        processed = max(self.clock.now(), c.process_at or self.clock.now())
        for when in send_times:
            group_crb = when - (c.execute_at - crb)
            if group_crb <= processed:
                why = "already past" if processed == self.clock.now() else "before process_at"
                raise InvalidInput(
                    f"a send group's ClearanceRequiredBy would be "
                    f"{format_wire_time(group_crb, self.settings.tz)}, {why}: move its "
                    "send_at later",
                    field="send_at",
                )

    def create_campaign(self, c: Campaign, target: TargetRows) -> Campaign:
        if c.state == State.SCHEDULED:
            self._check_schedulable(c, group_times(target))
        return self.store.create_campaign(c, target, self.now_ms())

    def schedule(self, campaign_id: int) -> Campaign:
        def check(c: Campaign) -> None:
            self._check_schedulable(c, self.store.placed_send_times(c.campaign_id))

        return self.store.schedule(campaign_id, self.now_ms(), check)

    def place(self, c: Campaign, send_at: datetime | None, template_id: int | None) -> str:
        """The send group of a target row with `send_at` and/or `template_id` (either missing:
        the campaign's execution time, its first template)."""
        return place_in_group(c, send_at, template_id)

    def send_groups(self, campaign_id: int) -> list[GroupStatus]:
        """How clearance stands per send group (a V1 campaign: its one group)."""
        return clearance_status(self.store, campaign_id, self.clock.now(), self.settings)

    def _has_groups(self, campaign_id: int) -> bool:
        known = self._grouped.get(campaign_id)
        # processed_at first: a campaign's groups commit with it, so once it is seen the groups
        # are too (read the other way round, a processing in between cached a V2 campaign as V1)
        if known is None and self.store.get_campaign(campaign_id).processed_at is not None:
            known = self._grouped[campaign_id] = bool(self.store.send_groups(campaign_id))
        return bool(known)

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

    def approve(
        self,
        campaign_id: int,
        entries: Sequence[tuple[str, bool]],
        expected: Mapping[str, str] | None = None,
        by: str | None = None,
    ) -> ApprovalResult | GroupApprovalResult:
        """Apply approvals. `expected`: the SendGroupID each entry named (customer → group);
        an entry whose customer is in another group is refused, never applied. `by` (the key or
        user) is recorded with the time the entries were stored with, for "Why not?"."""
        if len(entries) > MAX_APPROVALS_PER_CALL:
            raise InvalidInput(
                f"PromosUpdated has {len(entries)} entries; at most {MAX_APPROVALS_PER_CALL} "
                "per call. Nothing was applied.",
                field="PromosUpdated",
            )
        deduped = dict(entries)  # the last word on a customer within one call wins
        if len(deduped) < len(entries):
            entries = list(deduped.items())
        clock = self.now_ms  # read in the entries' transaction: the time they are stored with
        try:
            if self._has_groups(campaign_id):
                result: ApprovalResult | GroupApprovalResult = self._approve_groups(
                    campaign_id, entries, clock, expected, by
                )
            else:
                self._check_v1_group(campaign_id, expected)
                result = self._approve(campaign_id, entries, clock, by)
        except ClearanceError:
            self.metrics.approvals.labels("refused").inc(len(entries))
            raise
        self.metrics.approvals.labels("accepted").inc(result.applied)
        self.metrics.approvals.labels("not_in_target_group").inc(len(result.not_in_target_group))
        return result

    def _approve(
        self,
        campaign_id: int,
        entries: Sequence[tuple[str, bool]],
        clock: Callable[[], int],
        by: str | None = None,
    ) -> ApprovalResult:
        try:
            assert self.membership is not None
            index = self.membership.index_for(campaign_id)
            return self.store.apply_approvals(
                campaign_id,
                entries,
                clock,
                index.split if index is not None else None,
                refuse_early=self.now_ms,
                by=by,
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

    def _check_v1_group(self, campaign_id: int, expected: Mapping[str, str] | None) -> None:
        """A campaign without send groups is its one group: any other SendGroupID named in a
        call refuses the whole call (nothing applied)."""
        if not expected:
            return
        c = self.store.get_campaign(campaign_id)
        own = send_group_id(first_template(c.channels), c.execute_at)
        wrong = sorted({g for g in expected.values() if g != own})
        if wrong:
            raise InvalidInput(
                f"campaign {campaign_id} has no send group {wrong[0]!r}; nothing was applied",
                field="SendGroupID",
            )

    def _approve_groups(
        self,
        campaign_id: int,
        entries: Sequence[tuple[str, bool]],
        clock: Callable[[], int],
        expected: Mapping[str, str] | None = None,
        by: str | None = None,
    ) -> GroupApprovalResult:
        """Each entry to its customer's send group; a 409 only when every entry for the target
        group was refused for its group's deadline, or when every group's deadline has passed
        (so a one-group campaign answers as a V1 one, outsiders and empty calls included)."""
        result = self.store.apply_group_approvals(campaign_id, entries, clock, expected, by)
        late, outside = len(result.deadline_passed), len(result.not_in_target_group)
        every_group_closed = not result.open_groups and not result.send_group_mismatch
        if (late and late + outside == len(entries)) or every_group_closed:
            deadlines = result.refused_groups or result.closed_groups
            texts = [
                format_wire_time(from_ms(int(d)), self.settings.tz)
                for d in deadlines.values()
                if d is not None
            ]
            raise DeadlinePassed(
                f"ClearanceRequiredBy for campaign {campaign_id} was {', '.join(texts)} "
                f"({self.settings.timezone}); approvals are frozen and nothing was applied",
                field="CampaignID",
                clearance_required_by_text=texts[0] if texts else None,
            )
        refused = len(result.deadline_passed) + len(result.send_group_mismatch)
        self.metrics.approvals.labels("refused").inc(refused)
        return result
