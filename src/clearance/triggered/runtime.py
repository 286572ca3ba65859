"""Triggered campaigns in real time: events in, matching campaigns, gate decisions, sends out.

Every decision is logged (outcome, reason, latency, whether a send was made); a send is handed to
its channels only after its decision is in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

from clearance.channels import BatchName, ChannelError, delivery_for
from clearance.clock import Clock, from_ms, to_ms
from clearance.config import Settings
from clearance.domain import format_wire_time
from clearance.errors import NotFound, StoreUnavailable
from clearance.metrics import Metrics
from clearance.store import DecisionRow, Store
from clearance.triggered.breaker import BreakerSettings, CircuitBreaker
from clearance.triggered.decision_log import DecisionIds, DecisionLog, PendingSend
from clearance.triggered.events import Event
from clearance.triggered.gate import Gate, GateResult, Outcome
from clearance.triggered.matching import Match, TriggeredCampaign, TriggerIndex

log = logging.getLogger("clearance.triggered")

DELIVERY_ATTEMPTS = 3


def _unexpected(exc: Exception, started: float) -> GateResult:
    return GateResult(
        Outcome.ERROR,
        f"unexpected failure, nothing sent: {type(exc).__name__}: {exc}"[:300],
        (time.monotonic() - started) * 1000,
    )


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
            self._deliver,
            settings.decision_batch,
            settings.decision_flush_seconds,
            settings.decision_retry_seconds,
        )
        self.ids = DecisionIds()
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

    async def handle(self, events: list[Event]) -> list[dict[str, Any]]:
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
        jobs = []
        per_event: list[tuple[Event, list[Match]]] = []
        for event in events:
            matches = self.index.match(
                event.name, event.params, event.attributes, event.campaign_key
            )
            per_event.append((event, matches))
            for m in matches:
                if m.error is None:
                    jobs.append(self._decide(gateway, m, event, time.monotonic()))
        decided = iter(await asyncio.gather(*jobs)) if jobs else iter(())
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
            if skipped:
                result["skipped"] = skipped
            out.append(result)
        return out

    async def _decide(
        self, gateway: Any, match: Match, event: Event, started: float
    ) -> dict[str, Any]:
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
        sent = allowed or campaign.shadow
        reason = result.reason
        if campaign.shadow and not allowed:
            reason = f"shadow mode: sent regardless ({reason})"
        now = self.clock.now()
        at_ms = to_ms(now)
        decision_id = self.ids.next(at_ms)
        sends = None
        if sent:
            try:
                sends = self._sends(campaign, event, decision_id, at_ms)
            except Exception as exc:
                log.exception("the sends of campaign %s cannot be made", campaign.key)
                result, sent = _unexpected(exc, started), False
                reason = result.reason
        self.log.append(
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
            ),
            sends,
        )
        self.metrics.decided(
            result.outcome.value,
            campaign.key,
            result.latency_ms / 1000 if campaign.conditional else None,
        )
        return {
            "campaign_id": campaign.body["id"],
            "decision_id": decision_id,
            "outcome": result.outcome.value,
            "reason": reason,
            "sent": sent,
            "shadow": campaign.shadow,
            "latency_ms": round(result.latency_ms, 3),
        }

    def _sends(
        self, campaign: TriggeredCampaign, event: Event, decision_id: str, at_ms: int
    ) -> list[PendingSend]:
        action = campaign.body["action"]
        promo = (action.get("promo_codes") or [None])[0]
        stamp = self._stamp(at_ms)
        return [
            PendingSend(
                decision_id,
                campaign.key,
                campaign.body["id"],
                int(ch["id"]),
                (ch.get("templates") or [{}])[0].get("id"),
                promo,
                event.user_id,
                event.is_visitor,
                stamp,
            )
            for ch in action["channels"]
        ]

    def _stamp(self, at_ms: int) -> str:
        """The wire timestamp for a send, formatted once per second rather than per send."""
        second = at_ms // 1000
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp_text = format_wire_time(from_ms(second * 1000), self.settings.tz)
        return self._stamp_text

    def _deliver(self, sends: list[PendingSend]) -> None:
        """Hand logged sends to their channels, a batch per campaign and channel (in a thread)."""
        groups: dict[tuple[str, int], list[PendingSend]] = defaultdict(list)
        for s in sends:
            groups[(s.campaign_key, s.channel_id)].append(s)
        configs = self.store.get_channels(sorted({ch for _, ch in groups}))
        for (key, channel_id), items in groups.items():
            name = BatchName.triggered(key, channel_id, items[0].decision_id, items[-1].decision_id)
            records = [
                {
                    "SendID": f"{s.decision_id}-{s.channel_id}",
                    "DecisionID": s.decision_id,
                    "CampaignID": s.campaign_id,
                    "ChannelID": s.channel_id,
                    "VisitorID" if s.is_visitor else "CustomerID": s.user_id,
                    "TemplateID": s.template_id,
                    "PromoCode": s.promo_code,
                    "ScheduledTime": s.at,
                }
                for s in items
            ]
            for attempt in range(1, DELIVERY_ATTEMPTS + 1):
                try:
                    delivery_for(configs.get(channel_id), self.settings, self.clock).deliver(
                        name, records
                    )
                    self.metrics.sends.labels(str(channel_id), "triggered").inc(len(records))
                    break
                except ChannelError as exc:
                    log.error(
                        "triggered sends %s on channel %s, attempt %s failed: %s",
                        name.message_id,
                        channel_id,
                        attempt,
                        exc,
                    )
