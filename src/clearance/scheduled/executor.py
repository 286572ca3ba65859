"""Approved customers x campaign channels → sends, exactly once, resumable after a crash."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from clearance.channels import BatchName, ChannelError, Delivery, delivery_for, send_id
from clearance.clock import Clock, to_ms
from clearance.config import Settings
from clearance.domain import Campaign, ChannelRef, SendGroup, format_wire_time
from clearance.heartbeat import Heartbeat
from clearance.metrics import Metrics
from clearance.store import Batch, LeaseLost, Store


class RetryLater(Exception):
    """A channel could not take a batch; the step is retried later from where it stopped."""


class Executor:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        on_chunk: Callable[[Campaign, Batch], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.settings = settings
        self.clock = clock
        # A test seam: called after each chunk commits, before it is delivered.
        self.on_chunk = on_chunk

    def execute(self, campaign: Campaign, owner: str, group: SendGroup | None = None) -> None:
        """Run (or resume) execution; returns when every approved customer has a send per channel.

        Sends, their batch and the cursor commit together, so a worker killed at any point resumes
        without a customer sent twice or skipped. Batches recorded but not delivered are delivered
        first on resume.
        """
        configs = self.store.get_channels([c.id for c in campaign.channels])
        deliveries = {
            c.id: delivery_for(configs.get(c.id), self.settings, self.clock)
            for c in campaign.channels
        }
        channels = [(c.id, _template(c, group)) for c in campaign.channels]
        cid = campaign.campaign_id
        undelivered = (
            self.store.undelivered_batches(cid)
            if group is None
            else self.store.group_undelivered_batches(cid, group.send_group_id)
        )
        for batch in undelivered:
            self._deliver(campaign, batch, deliveries[batch.channel_id], owner, group)
        while True:
            lease_until = self._lease_until()
            if group is None:
                batches = self.store.next_send_chunk(
                    cid,
                    owner,
                    channels,
                    to_ms(campaign.execute_at),
                    self.settings.execution_chunk,
                    lease_until,
                    only_approved=campaign.conditional,
                )
            else:  # a send group: its customers, template and send time only
                batches = self.store.next_group_chunk(
                    group,
                    owner,
                    channels,
                    self.settings.execution_chunk,
                    lease_until,
                    only_approved=campaign.conditional,
                )
            if batches is None:
                return
            for batch in batches:
                if self.on_chunk:
                    self.on_chunk(campaign, batch)
                self._deliver(campaign, batch, deliveries[batch.channel_id], owner, group)

    def _lease_until(self) -> int:
        return to_ms(self.clock.now()) + int(self.settings.lease_seconds * 1000)

    def _deliver(
        self,
        campaign: Campaign,
        batch: Batch,
        delivery: Delivery,
        owner: str,
        group: SendGroup | None = None,
    ) -> None:
        """Deliver one batch under `owner`'s lease, extended while the delivery is in flight.

        The lease is extended (and checked) before the delivery starts, so a worker that lost it
        delivers nothing more; if it is lost during the delivery, the outcome is still recorded
        (it happened) and execution stops here."""
        when = campaign.execute_at if group is None else group.scheduled_at
        scheduled = format_wire_time(when, self.settings.tz)
        if batch.rows:  # just created: the rows are in hand
            template = next(
                _template(c, group) for c in campaign.channels if c.id == batch.channel_id
            )
            sends = [(seq, cid, template) for seq, cid in batch.rows]
        else:  # resumed after a crash: read back what was recorded
            sends = [(seq, cid, t) for seq, cid, t, _ in self.store.batch_sends(batch)]
        cid_, ch = batch.campaign_id, batch.channel_id
        records = [
            {
                "SendID": send_id(cid_, ch, seq),
                "CampaignID": cid_,
                "ChannelID": ch,
                "CustomerID": customer_id,
                "TemplateID": template_id,
                "ScheduledTime": scheduled,
                "PromoCode": campaign.promo_code_for(seq),
            }
            for seq, customer_id, template_id in sends
        ]
        cid = campaign.campaign_id

        def extend() -> bool:
            if group is None:
                return self.store.extend_lease(cid, owner, self._lease_until())
            gid = group.send_group_id
            return self.store.extend_group_lease(cid, gid, owner, self._lease_until())

        if not extend():
            raise LeaseLost(f"lost the lease on campaign {cid} before delivering a batch")
        heartbeat = Heartbeat.for_lease(
            extend,
            self.settings,
            f"campaign {cid} batch {batch.channel_id}/{batch.first_seq}",
            self.store.db.release_thread,
        )
        try:
            with heartbeat:
                delivery.deliver(BatchName.scheduled(batch), records)
        except ChannelError as exc:
            end = campaign.execute_at + timedelta(days=max(1, campaign.duration_days))
            if heartbeat.lost:  # the step is another worker's: its outcome is the one recorded
                raise LeaseLost(f"lost the lease on campaign {cid} during a delivery") from exc
            self.store.mark_batch(batch, None, str(exc))
            if self.clock.now() < end:
                raise RetryLater(str(exc)) from exc
            return  # past the campaign's life: recorded as undelivered, execution completes
        self.store.mark_batch(batch, to_ms(self.clock.now()), None)
        if heartbeat.lost:
            raise LeaseLost(f"lost the lease on campaign {cid} during a delivery")
        if self.metrics is not None:
            self.metrics.sends.labels(str(batch.channel_id), "scheduled").inc(len(records))


def _template(channel: ChannelRef, group: SendGroup | None) -> int | None:
    """The template a channel's sends carry: the group's (where the channel has it), else the
    channel's first."""
    if group is not None:
        return group.template_for(channel)
    return channel.templates[0].id if channel.templates else None
