"""Triggered campaigns in real time: events in, matching campaigns, gate decisions, the outbox.

Every decision is logged (outcome, reason, latency, whether a send was made) and its sends are
committed with it (the outbox, which the worker delivers); the reply waits for that commit. An
event with an `event_id` is decided once per campaign: the id is reserved in the database before
anything is decided, so a repeat (a retry, a concurrent duplicate, another replica, after a
restart) gets the first decision back, marked `repeat`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from clearance.clock import Clock, from_ms, to_ms
from clearance.config import Settings
from clearance.domain import format_wire_time
from clearance.errors import NotFound, StoreUnavailable
from clearance.metrics import Metrics
from clearance.store import DecisionRow, OutboxSend, Store
from clearance.triggered.breaker import BreakerSettings, CircuitBreaker
from clearance.triggered.decision_log import DecisionIds, DecisionLog
from clearance.triggered.events import Event
from clearance.triggered.gate import Gate, GateResult, Outcome
from clearance.triggered.matching import Match, TriggeredCampaign, TriggerIndex
from clearance.triggered.repeats import (
    Decided,
    Placeholder,
    Reservations,
    logged_repeat,
    nothing,
    placeholder,
    repeat_of,
    settle,
)

log = logging.getLogger("clearance.triggered")


def _unexpected(exc: Exception, started: float) -> GateResult:
    return GateResult(
        Outcome.ERROR,
        f"unexpected failure, nothing sent: {type(exc).__name__}: {exc}"[:300],
        (time.monotonic() - started) * 1000,
    )


class DecisionsDropped(StoreUnavailable):
    """The decision log gave up on a batch: nothing of it was logged or sent."""


class RealTime:
    def __init__(self, store: Store, settings: Settings, clock: Clock, metrics: Metrics) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.index = TriggerIndex(store)
        self.gate = Gate(
            metrics,
            clock,
            CircuitBreaker(
                BreakerSettings(
                    settings.breaker_min_calls,
                    settings.breaker_failure_ratio,
                    settings.breaker_window_seconds,
                    settings.breaker_pause_seconds,
                )
            ),
            settings.gate_concurrency,
            settings.gate_client,
            settings.outbound,
        )
        self.log = DecisionLog(
            store,
            metrics,
            settings.decision_batch,
            settings.decision_flush_seconds,
            settings.decision_retry_seconds,
        )
        self.ids = DecisionIds()
        # (campaign, event id) → the reply of its first decision, while this process decides it
        self._in_flight: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self.reservations = Reservations(store)
        self._refreshing: asyncio.Future[None] | None = None
        self._stamp_second = -1
        self._stamp_text = ""

    async def start(self) -> None:
        await asyncio.to_thread(self.index.refresh, True)
        self.log.start()
        if self.index.gateway is not None:
            self.gate.warm(self.index.gateway.url)

    async def close(self) -> None:
        if self._refreshing is not None:
            await asyncio.gather(self._refreshing, return_exceptions=True)
        await self.log.close()
        await self.gate.close()

    async def handle(
        self, events: list[Event], idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Decide every matching campaign for each event. `idempotency_key` (a batch's
        Idempotency-Key) stands for the event id of each event that has none: `key#index`."""
        why = self.log.refusing()
        if why is not None:  # fail closed: no decision we could not log
            raise StoreUnavailable(why)
        if self.index.due():
            if self.index.must_wait():
                await asyncio.to_thread(self.index.refresh)
            elif self._refreshing is None or self._refreshing.done():
                # Re-read in the background; events meanwhile match the loaded campaigns, so a
                # database restart does not stall the gate (decisions queue in the log).
                self._refreshing = asyncio.ensure_future(
                    asyncio.to_thread(self.index.refresh_or_keep)
                )
        for event in events:
            if event.campaign_key is not None and self.index.get(event.campaign_key) is None:
                raise NotFound(
                    f"triggered campaign {event.campaign_key} does not exist", field="campaign_id"
                )
        gateway = self.index.gateway
        now_ms = to_ms(self.clock.now())
        per_event: list[tuple[Event, list[Match]]] = []
        jobs: list[Awaitable[Decided]] = []
        keyed: list[tuple[tuple[str, str], str, Match, Event]] = []  # event ids to reserve
        mine: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        same_request: list[tuple[int, tuple[str, str]]] = []
        for event in events:
            matches = self.index.match(
                event.name, event.params, event.attributes, event.campaign_key
            )
            per_event.append((event, matches))
            event_id = event.event_id
            if event_id is None and idempotency_key is not None:
                # by what the event says, not where it stands: a retried batch that is reordered
                # or trimmed still maps each event onto its own first decision
                event_id = f"{idempotency_key}#{event.digest()}"
            for m in matches:
                if m.error is not None:
                    continue
                if event_id is None:
                    jobs.append(self._decide(gateway, m, event, time.monotonic()))
                    continue
                key = (m.campaign.key, event_id)
                if key in mine:  # the same event twice in one request
                    same_request.append((len(jobs), key))
                    jobs.append(nothing())
                    continue
                first = self._in_flight.get(key)
                if first is not None:  # a duplicate of an event this process is deciding
                    jobs.append(repeat_of(first))
                    continue
                mine[key] = asyncio.get_running_loop().create_future()
                keyed.append((key, self.ids.next(now_ms), m, event))
                jobs.append(placeholder())
        if keyed:
            self._in_flight.update(mine)
            try:
                held = await self.reservations.reserve(
                    [(key[0], key[1], decision_id) for key, decision_id, _, _ in keyed],
                    now_ms,
                    now_ms - int(self.settings.event_id_retention_seconds * 1000),
                )
            except BaseException as exc:
                settle(self._in_flight, mine, exc)
                for job in jobs:  # nothing is decided: drop the decisions not yet started
                    if asyncio.iscoroutine(job):
                        job.close()
                raise
            placeholders = iter(k for k, job in enumerate(jobs) if isinstance(job, Placeholder))
            for key, decision_id, m, event in keyed:
                k = next(placeholders)
                if held.get(key) == decision_id:
                    jobs[k] = self._decide(gateway, m, event, time.monotonic(), decision_id, key[1])
                else:  # decided before, by this or another process: the first decision
                    jobs[k] = logged_repeat(
                        self.store,
                        self.settings.decision_commit_wait_seconds,
                        held[key],
                        m.campaign,
                        key,
                    )
        try:
            decisions = await asyncio.gather(*jobs) if jobs else []
            self.log.kick()
            waits = {id(d.committed): d.committed for d in decisions if d.committed is not None}
            if waits:
                try:
                    await self._committed(list(waits.values()))
                except DecisionsDropped:
                    # nothing was logged or sent: free the event ids, so a repeat decides anew
                    # instead of answering `in_progress` for the whole retention window
                    ours = [(key, decision_id) for key, decision_id, _, _ in keyed]
                    await asyncio.to_thread(self.store.release_event_ids, ours)
                    raise
        except BaseException as exc:
            settle(self._in_flight, mine, exc)
            raise
        settle(self._in_flight, mine, None, decisions)
        if same_request:
            replies = {d.key: d.reply for d in decisions if d.key is not None}
            for k, key in same_request:
                decisions[k] = Decided({**replies[key], "repeat": True})
        decided = iter(d.reply for d in decisions)
        out = []
        for event, matches in per_event:
            matched, skipped = [], []
            for m in matches:
                if m.error is None:
                    matched.append(next(decided))
                else:
                    skipped.append({"campaign_id": m.campaign.body["id"], "reason": m.error})
            result: dict[str, Any] = {
                "event": event.name,
                "user_id": event.user_id,
                "is_visitor": event.is_visitor,
                "matched": matched,
            }
            if event.event_id is not None:
                result["event_id"] = event.event_id
            if skipped:
                result["skipped"] = skipped
            out.append(result)
        return out

    async def _committed(self, waits: list[asyncio.Future[bool]]) -> None:
        """Wait until the decisions (and their sends) are committed: a reply says `sent` only
        for a committed send. Beyond the wait the outcome is unknown to us, so the reply is a
        503 (a repeat with the same event_id tells what became of it)."""
        timeout = self.settings.decision_commit_wait_seconds
        try:
            async with asyncio.timeout(timeout):
                written = await asyncio.gather(*(asyncio.shield(w) for w in waits))
        except TimeoutError:
            raise StoreUnavailable(
                f"the decisions were not committed within {timeout:g} s (database unavailable); "
                "they may still be logged and sent. Events with an event_id (or a batch with an "
                "Idempotency-Key) can be repeated safely to learn what became of them; an event "
                "without one would be decided, and sent, again"
            ) from None
        if not all(written):
            raise DecisionsDropped(
                "the decision log could not be written; these decisions were dropped and "
                "nothing was sent"
            )

    async def _decide(
        self,
        gateway: Any,
        match: Match,
        event: Event,
        started: float,
        decision_id: str | None = None,
        event_id: str | None = None,
    ) -> Decided:
        campaign = match.campaign
        try:
            if campaign.conditional:
                result = await self.gate.decide(
                    gateway, campaign, event.user_id, event.is_visitor, started
                )
            else:
                result = GateResult(Outcome.NOT_CONDITIONAL, None, 0.0)
        except Exception as exc:  # an unexpected failure is an error decision: logged, no send
            log.exception("deciding campaign %s for %s failed", campaign.key, event.user_id)
            result = _unexpected(exc, started)
        allowed = result.outcome in (Outcome.ALLOWED, Outcome.NOT_CONDITIONAL)
        # shadow mode sends regardless of the gateway's answer, never after our own failure
        sent = allowed or (campaign.shadow and result.outcome != Outcome.ERROR)
        reason = result.reason
        if campaign.shadow and not allowed and sent:
            reason = f"shadow mode: sent regardless ({reason})"
        now = self.clock.now()
        at_ms = to_ms(now)
        if decision_id is None:
            decision_id = self.ids.next(at_ms)
        sends = None
        if sent:
            try:
                sends = self._sends(campaign, event, decision_id, at_ms)
            except Exception as exc:
                log.exception("the sends of campaign %s cannot be made", campaign.key)
                result, sent = _unexpected(exc, started), False
                reason = result.reason
        committed = self.log.append(
            DecisionRow(
                decision_id,
                at_ms,
                campaign.key,
                event.user_id,
                event.is_visitor,
                result.outcome.value,
                reason,
                round(result.latency_ms, 3),
                sent,
                campaign.shadow,
                event_id,
            ),
            sends,
        )
        self.metrics.decided(
            result.outcome.value,
            campaign.key,
            result.latency_ms / 1000 if campaign.conditional else None,
        )
        reply = {
            "campaign_id": campaign.body["id"],
            "decision_id": decision_id,
            "outcome": result.outcome.value,
            "reason": reason,
            "sent": sent,
            "shadow": campaign.shadow,
            "latency_ms": round(result.latency_ms, 3),
        }
        if event_id is None:
            return Decided(reply, committed)
        reply["event_id"] = event_id
        reply["repeat"] = False
        return Decided(reply, committed, (campaign.key, event_id))

    def _sends(
        self, campaign: TriggeredCampaign, event: Event, decision_id: str, at_ms: int
    ) -> list[OutboxSend]:
        """The decision's sends, one per channel, as the channel will get them."""
        action = campaign.body["action"]
        promo = (action.get("promo_codes") or [None])[0]
        stamp = self._stamp(at_ms)
        user_field = "VisitorID" if event.is_visitor else "CustomerID"
        sends = []
        for ch in action["channels"]:
            channel_id = int(ch["id"])
            sends.append(
                OutboxSend(
                    decision_id,
                    channel_id,
                    campaign.key,
                    {
                        "SendID": f"{decision_id}-{channel_id}",
                        "DecisionID": decision_id,
                        "CampaignID": campaign.body["id"],
                        "ChannelID": channel_id,
                        user_field: event.user_id,
                        "TemplateID": (ch.get("templates") or [{}])[0].get("id"),
                        "PromoCode": promo,
                        "ScheduledTime": stamp,
                    },
                    at_ms,
                )
            )
        return sends

    def _stamp(self, at_ms: int) -> str:
        """The wire timestamp for a send, formatted once per second rather than per send."""
        second = at_ms // 1000
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_text = format_wire_time(from_ms(second * 1000), self.settings.tz)
        return self._stamp_text
