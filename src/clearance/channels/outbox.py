"""Delivering the triggered outbox: sends committed with their decisions, handed to their channels
by the worker, a batch per campaign and channel, under a lease.

Exactly once per decision and channel: a batch is made once and never changes; it is delivered by
whoever holds its lease, redelivered under the same name (the file channel replaces it, a webhook
receiver sees the same `webhook-id`) when a worker died or lost its lease before recording the
delivery, retried with backoff until `triggered_send_ttl_seconds` after its first decision, then
`failed` with the channel's last error as the reason.
"""

from __future__ import annotations

import logging
import uuid

from clearance.channels.base import BatchName, ChannelError
from clearance.channels.registry import delivery_for
from clearance.clock import Clock, to_ms
from clearance.config import Settings
from clearance.heartbeat import Heartbeat
from clearance.metrics import Metrics
from clearance.store import ChannelConfig, Store, TriggeredBatch

log = logging.getLogger("clearance.outbox")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0


class TriggeredOutbox:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        owner: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.owner = owner or f"outbox-{uuid.uuid4().hex[:8]}"
        self.metrics = metrics

    def claim(self) -> list[TriggeredBatch]:
        now = to_ms(self.clock.now())
        return self.store.claim_triggered_batches(
            now,
            self.owner,
            now + int(self.settings.lease_seconds * 1000),
            self.settings.triggered_send_ttl_seconds * 1000,
            self.settings.execution_chunk,
        )

    def _until(self) -> int:
        return to_ms(self.clock.now()) + int(self.settings.lease_seconds * 1000)

    def deliver_due(self) -> bool:
        """Claim what is due and deliver it; whether there was anything."""
        batches = self.claim()
        if not batches:
            return False
        configs = self.store.get_channels(sorted({b.channel_id for b in batches}))
        for batch in batches:
            self.deliver(batch, configs.get(batch.channel_id))
        return True

    def deliver(self, batch: TriggeredBatch, config: ChannelConfig | None) -> str | None:
        name = BatchName.triggered(
            batch.campaign_key, batch.channel_id, batch.first_decision, batch.last_decision
        )
        # A claim leases many batches at once and they go out one after another: each is leased
        # afresh before its delivery and kept while it is in flight, so a slow channel never lets
        # a second worker take a batch this one is about to deliver (or is delivering).
        if not self.store.extend_triggered_batch_lease(batch.batch_id, self.owner, self._until()):
            log.warning("triggered batch %s is no longer ours; not delivered", batch.batch_id)
            return None
        records = self.store.triggered_batch_records(batch)
        error: str | None = None
        heartbeat = Heartbeat.for_lease(
            lambda: self.store.extend_triggered_batch_lease(
                batch.batch_id, self.owner, self._until()
            ),
            self.settings,
            f"triggered batch {batch.batch_id}",
            self.store.db.release_thread,
        )
        try:
            with heartbeat:
                delivery_for(config, self.settings, self.clock).deliver(name, records)
        except ChannelError as exc:
            error = str(exc)[:500]
        except Exception as exc:  # a bug in a channel must not leave the batch leased for ever
            log.exception("triggered batch %s: delivery raised", batch.batch_id)
            error = f"{type(exc).__name__}: {exc}"[:500]
        if heartbeat.lost:
            log.warning("lost the lease on triggered batch %s while delivering", batch.batch_id)
            return None
        now = to_ms(self.clock.now())
        next_at: int | None = None
        if error is not None:
            delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**batch.attempts)
            next_at = now + int(delay * 1000)
            if next_at > batch.expires_at:
                next_at = None
        state = self.store.finish_triggered_batch(batch, self.owner, now, error, next_at)
        if error is None:
            if self.metrics is not None:
                self.metrics.sends.labels(str(batch.channel_id), "triggered").inc(batch.sends)
        elif state == "failed":
            log.error(
                "triggered sends %s on channel %s failed for good after %d attempts: %s",
                name.message_id,
                batch.channel_id,
                batch.attempts + 1,
                error,
            )
        else:
            log.warning(
                "triggered sends %s on channel %s, attempt %d failed, retrying: %s",
                name.message_id,
                batch.channel_id,
                batch.attempts + 1,
                error,
            )
        if state is None:
            log.warning("lost the lease on triggered batch %s while delivering", batch.batch_id)
        return state
