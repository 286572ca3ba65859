"""Listener notifications: who gets which event; delivery retried inside the event's life."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from clearance.clock import Clock, to_ms
from clearance.config import Settings
from clearance.domain import Campaign, EventType, format_wire_time
from clearance.heartbeat import Heartbeat
from clearance.metrics import Metrics
from clearance.outbound.signing import webhook_headers
from clearance.outbound.transport import CallFailed, OutboundRefused, Transport
from clearance.store import Notification, Store

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
NOT_NEEDED = "not sent: nothing to say any more"  # a rendered body declined; never retried


def notification_body(
    event_type_id: int,
    campaign: Campaign,
    now: datetime,
    settings: Settings,
    channel_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "EventTypeID": event_type_id,
        "TimeStamp": format_wire_time(now, settings.tz),
        "CampaignID": campaign.campaign_id,
    }
    if event_type_id == EventType.CLEARANCE_REQUIRED:
        assert campaign.clearance_required_by is not None
        body["CampaignDuration"] = campaign.duration_days
        body["ClearanceRequiredBy"] = format_wire_time(campaign.clearance_required_by, settings.tz)
    if channel_id is not None:
        body["ChannelID"] = channel_id
    if extra:  # a send group's EventTypeID 5: SendGroupID, TemplateID, ScheduledTime
        body.update(extra)
    return body


def build_notifications(
    store: Store,
    event_type_id: int,
    campaign: Campaign,
    now: datetime,
    expires_at: datetime,
    settings: Settings,
    channel_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Notification]:
    """One notification per listener registered for the event (and, if it names one, channel)."""
    body = orjson.dumps(
        notification_body(event_type_id, campaign, now, settings, channel_id, extra)
    )
    out = []
    for ev, url, listener_channel in store.list_listeners():
        if ev != event_type_id:
            continue
        if (
            listener_channel is not None
            and channel_id is not None
            and listener_channel != channel_id
        ):
            continue
        out.append(
            Notification(
                notification_id=f"msg_{uuid.uuid4().hex}",
                campaign_id=campaign.campaign_id,
                event_type_id=event_type_id,
                channel_id=channel_id or 0,
                listener_url=url,
                body=body.decode(),
                next_attempt_at=to_ms(now),
                expires_at=to_ms(expires_at),
            )
        )
    return out


def backoff_seconds(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0.5, 1] of min(cap, base * 2^attempt)."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * (2 ** max(0, attempt - 1)))
    return float(ceiling * (0.5 + rng.random() / 2))


class Notifier:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        transport: Transport | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        owner: str | None = None,
    ) -> None:
        self.metrics = metrics
        self.owner = owner or f"notifier-{uuid.uuid4().hex[:8]}"
        self.store = store
        self.settings = settings
        self.clock = clock
        # the one way out (outbound.transport): URLs read once, names resolved once through the
        # policy and called at that address only, no redirects or proxies, one deadline per call
        self.transport = transport or settings.transport
        self.rng = rng or random.Random()
        # bodies written when they go (the heads-up): event type → renderer (None: nothing to say)
        self.renderers: dict[int, Callable[[Notification], bytes | None]] = {}

    def _lease_until(self) -> int:
        return to_ms(self.clock.now()) + int(self.settings.lease_seconds * 1000)

    def deliver_due(self, limit: int = 50) -> int:
        """Attempt up to `limit` notifications that are due, one at a time, each claimed with a
        lease of its own (so the others stay free for another worker while one is in flight);
        return how many were attempted."""
        attempted = 0
        while attempted < limit:
            claimed = self.store.claim_notifications(
                to_ms(self.clock.now()), self.owner, self._lease_until(), 1
            )
            if not claimed:
                break
            self._attempt(claimed[0])
            attempted += 1
        return attempted

    def _attempt(self, n: Notification) -> None:
        """One attempt, with the notification's lease extended while the request is in flight
        (for at most the request timeout and one lease more)."""
        heartbeat = Heartbeat.for_lease(
            lambda: self.store.extend_notification_lease(
                n.notification_id, self.owner, self._lease_until()
            ),
            self.settings,
            f"notification {n.notification_id}",
            self.store.db.release_thread,
        )
        with heartbeat:
            now, status, error, duration_ms = self._post(n)
        if heartbeat.lost:  # another worker claimed it meanwhile: its attempt is the one recorded
            if self.metrics is not None:
                self.metrics.notifications.labels("lease_lost").inc()
            return
        self._record(n, now, status, error, duration_ms)

    def _post(self, n: Notification) -> tuple[datetime, int | None, str | None, int]:
        now = self.clock.now()
        now_ms = to_ms(now)
        remaining = (n.expires_at - now_ms) / 1000
        status: int | None = None
        error: str | None
        started = time.perf_counter()
        if remaining <= 0:
            error = "expired before delivery: the event's useful life had passed"
        else:
            render = self.renderers.get(n.event_type_id)
            body = n.body.encode() if render is None else render(n)
            if body is None:
                return now, None, NOT_NEEDED, 0
            try:
                status, _ = self.transport.post(
                    n.listener_url,
                    body,
                    webhook_headers(self.settings.signing_secret, n.notification_id, now, body),
                    min(self.settings.outbound_timeout_seconds, remaining),
                    field="ListenerURL",
                )
                error = None if 200 <= status < 300 else f"listener answered HTTP {status}"
            except (CallFailed, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
            except OutboundRefused as exc:
                error = f"not sent: {exc.message}"
        duration_ms = int((time.perf_counter() - started) * 1000)
        return now, status, error, duration_ms

    def _record(
        self,
        n: Notification,
        now: datetime,
        status: int | None,
        error: str | None,
        duration_ms: int,
    ) -> None:
        now_ms = to_ms(now)
        next_at: int | None = None
        if error is not None and error != NOT_NEEDED:
            retry_at = now + timedelta(seconds=backoff_seconds(n.attempts + 1, self.rng))
            if to_ms(retry_at) < n.expires_at:
                next_at = to_ms(retry_at)
        state = self.store.record_attempt(
            n, self.owner, now_ms, status, error, duration_ms, next_at
        )
        if self.metrics is not None:
            result = "failed_will_retry" if state == "pending" else state
            self.metrics.notifications.labels(result).inc()

    def close(self) -> None:
        """Nothing of its own to close: the transport is the settings' (shared)."""


def executed_notifications(
    store: Store, c: Campaign, now: datetime, settings: Settings
) -> list[Notification]:
    """A campaign's notifications once it is executed: EventTypeID 13 per channel, then 1."""
    expires = now + timedelta(seconds=settings.notification_ttl_seconds)
    notes: list[Notification] = []
    for ch in c.channels:
        notes += build_notifications(
            store, EventType.CHANNEL_EXECUTED, c, now, expires, settings, channel_id=ch.id
        )
    return notes + build_notifications(
        store, EventType.CAMPAIGN_PROCESSED, c, now, expires, settings
    )
