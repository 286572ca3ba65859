"""Send groups (Conditional Execution V2) in the worker: a campaign whose target rows name a
send time or a template is processed into groups (one EventTypeID 5 each, with its own
ClearanceRequiredBy), and each group is then frozen and executed on its own, under its own lease.
A campaign without them is V1 and never comes here."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from clearance.clock import Clock, to_ms
from clearance.config import Settings
from clearance.domain import (
    Campaign,
    EventType,
    GroupState,
    SendGroup,
    first_template,
    format_wire_time,
    parse_send_group_id,
    send_group_id,
)
from clearance.scheduled.deadline import deadline_for
from clearance.scheduled.executor import Executor, RetryLater
from clearance.scheduled.heads_up import heads_up_notes
from clearance.scheduled.notifier import build_notifications, executed_notifications
from clearance.store import LeaseLost, Notification, Store

log = logging.getLogger("clearance.worker")

RETRY_SECONDS = 5.0


def group_event_fields(g: SendGroup, settings: Settings) -> dict[str, object]:
    """What a send group's EventTypeID 5 adds to the seed's fields."""
    return {
        "SendGroupID": g.send_group_id,
        "TemplateID": g.template_id,
        "ScheduledTime": format_wire_time(g.scheduled_at, settings.tz),
    }


def lead_of(store: Store, c: Campaign, settings: Settings) -> timedelta:
    """The campaign's clearance lead (its own, else its channels' longest)."""
    return c.execute_at - deadline_for(store, c, settings.default_clearance_lead_seconds)


class GroupSteps:
    def __init__(
        self, store: Store, settings: Settings, clock: Clock, executor: Executor, owner: str
    ) -> None:
        self.store, self.settings, self.clock = store, settings, clock
        self.executor, self.owner = executor, owner

    def _lease_until(self) -> int:
        return to_ms(self.clock.now()) + int(self.settings.lease_seconds * 1000)

    # --- processing (under the campaign's lease) ------------------------------------------------
    def process(self, c: Campaign) -> None:
        now = self.clock.now()
        default = send_group_id(first_template(c.channels), c.execute_at)
        sizes = self.store.place_ungrouped(c.campaign_id, default)
        lead = lead_of(self.store, c, self.settings)
        groups: list[SendGroup] = []
        notes: list[Notification] = []
        for gid in sorted(sizes, key=lambda g: (parse_send_group_id(g)[1], g)):
            template, scheduled = parse_send_group_id(gid)
            crb = scheduled - lead if c.conditional else None
            g = SendGroup(
                c.campaign_id,
                gid,
                template,
                scheduled,
                crb,
                GroupState.AWAITING if c.conditional else GroupState.CLEARED,
                sizes[gid],
            )
            groups.append(g)
            if crb is None:
                continue
            notes += build_notifications(
                self.store,
                EventType.CLEARANCE_REQUIRED,
                replace(c, clearance_required_by=crb),
                now,
                crb,  # useful until the group's deadline, as a V1's
                self.settings,
                extra=group_event_fields(g, self.settings),
            )
            notes += heads_up_notes(self.settings, c.campaign_id, gid, crb, now)
        self.store.process_groups(c.campaign_id, self.owner, groups, to_ms(now), notes)

    # --- a group's own steps --------------------------------------------------------------------
    def step_one(self) -> bool:
        claimed = self.store.claim_due_group(
            to_ms(self.clock.now()), self.owner, self._lease_until()
        )
        if claimed is None:
            return False
        campaign_id, gid = claimed
        try:
            group = self.store.get_send_group(campaign_id, gid)
            c = self.store.get_campaign(campaign_id)
            if group is None:
                return True
            if group.state == GroupState.AWAITING:
                self.store.freeze_group(campaign_id, gid, self.owner, to_ms(self.clock.now()))
            elif group.state in (GroupState.CLEARED, GroupState.EXECUTING):
                self._execute(c, group)
            else:
                self.store.release_group(campaign_id, gid, self.owner)
        except LeaseLost as exc:
            log.warning("send group %s of campaign %s: %s", gid, campaign_id, exc)
        except Exception as exc:
            retry = to_ms(self.clock.now()) + int(RETRY_SECONDS * 1000)
            if isinstance(exc, RetryLater):
                log.warning("send group %s of campaign %s: %s; retrying", gid, campaign_id, exc)
            else:
                log.exception("send group %s of campaign %s step failed", gid, campaign_id)
            self.store.release_group(campaign_id, gid, self.owner, retry, str(exc))
        return True

    def _execute(self, c: Campaign, group: SendGroup) -> None:
        cid, gid = c.campaign_id, group.send_group_id
        if group.state == GroupState.CLEARED and not self.store.start_group(cid, gid, self.owner):
            self.store.release_group(cid, gid, self.owner)
            return
        self.executor.execute(c, self.owner, group)
        now = self.clock.now()
        self.store.finish_group(cid, gid, self.owner, to_ms(now), self._final_notes(c, now))

    def _final_notes(self, c: Campaign, now: datetime) -> list[Notification]:
        """The campaign's own notifications once its last group is executed (as a V1's)."""
        return executed_notifications(self.store, c, now, self.settings)
