"""Triggered campaigns and matching: an event name plus an optional CEL condition over the event's
parameters and the customer's attributes, compiled once when the campaign is saved."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import cel
import orjson

from clearance.errors import InvalidInput, StoreUnavailable
from clearance.store import GatewayConfig, Store

log = logging.getLogger("clearance.triggers")


def compile_condition(text: str) -> cel.Program:
    """Compile a condition; a condition that does not compile is a 400, never an event-time
    failure."""
    try:
        return cel.compile(text)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise InvalidInput(
            f"trigger.condition does not compile: {exc}", field="trigger.condition"
        ) from exc


@dataclass(frozen=True)
class TriggeredCampaign:
    key: str
    body: dict[str, Any]
    event: str
    condition: cel.Program | None
    conditional: bool
    active: bool
    shadow: bool
    gateway_campaign: bytes  # the "campaign" object of the gateway payload, serialized once
    channel_ids: tuple[int, ...]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> TriggeredCampaign:
        trigger = body["trigger"]
        condition = trigger.get("condition")
        action = body["action"]
        return cls(
            key=str(body["id"]),
            body=body,
            event=trigger["event"],
            condition=compile_condition(condition) if condition else None,
            conditional=bool(body.get("conditional", True)),
            active=bool(body.get("active", True)),
            shadow=bool(body.get("shadow", False)),
            gateway_campaign=orjson.dumps(
                {
                    "id": body["id"],
                    "series_id": body.get("series_id"),
                    "notes": body.get("notes", ""),
                    "tags": body.get("tags", []),
                    "action": {
                        "id": action["id"],
                        "name": action.get("name", ""),
                        "promo_codes": action.get("promo_codes"),
                        "channels": action.get("channels", []),
                    },
                }
            ),
            channel_ids=tuple(int(c["id"]) for c in action.get("channels", [])),
        )


@dataclass(frozen=True)
class Match:
    campaign: TriggeredCampaign
    error: str | None = None  # the condition could not be evaluated for this event


def variables(params: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
    """What a condition sees: every parameter and attribute by name (parameters win on a clash),
    and the two maps as `params` and `customer`."""
    return {**attributes, **params, "params": params, "customer": attributes}


class TriggerIndex:
    """Active triggered campaigns by event name, reloaded when their version changes (checked at
    most every `refresh_seconds`, so replicas pick up each other's changes)."""

    def __init__(self, store: Store, refresh_seconds: float = 1.0) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._version = -1
        self._checked = 0.0
        self._by_event: dict[str, list[TriggeredCampaign]] = {}
        self._by_key: dict[str, TriggeredCampaign] = {}
        self._lock = threading.Lock()
        self._wait = False
        self._generation = 0
        self.gateway: GatewayConfig | None = None

    def invalidate(self) -> None:
        """Re-read on the next event, which waits for it (this process changed something)."""
        self._checked = 0.0
        self._wait = True
        self._generation += 1  # a reload already running read too early to count

    def must_wait(self) -> bool:
        """Whether the next event has to wait for a reload: nothing loaded yet, or this process
        changed something. Otherwise a due reload may run while events match the loaded set."""
        return self._version < 0 or self._wait

    def refresh_or_keep(self) -> None:
        """Reload if due; while the database is unavailable keep matching the campaigns already
        loaded (they are the latest anyone could have saved) and try again later."""
        try:
            self.refresh()
        except Exception as exc:
            if self._version < 0:
                raise
            self._checked = time.monotonic()
            if isinstance(exc, StoreUnavailable):
                log.warning("triggered campaigns not re-read, keeping the loaded ones: %s", exc)
            else:
                log.exception("triggered campaigns not re-read, keeping the loaded ones")

    def due(self) -> bool:
        return time.monotonic() - self._checked >= self.refresh_seconds

    def refresh(self, force: bool = False) -> None:
        """Reload campaigns and the gateway if their version moved (they share one). Callers
        that arrive while a reload runs wait for it rather than match against stale campaigns."""
        with self._lock:
            if not force and not self.due():
                return
            generation = self._generation
            version = self.store.triggered_version()
            if version == self._version and not force:
                if generation == self._generation:
                    self._checked = time.monotonic()
                    self._wait = False
                return
            by_event: dict[str, list[TriggeredCampaign]] = {}
            by_key: dict[str, TriggeredCampaign] = {}
            for body in self.store.list_triggered():
                campaign = TriggeredCampaign.from_body(body)
                by_key[campaign.key] = campaign
                if campaign.active:
                    by_event.setdefault(campaign.event, []).append(campaign)
            self.gateway = self.store.get_gateway()
            self._by_event, self._by_key, self._version = by_event, by_key, version
            if generation == self._generation:
                self._checked = time.monotonic()
                self._wait = False

    def get(self, key: str) -> TriggeredCampaign | None:
        return self._by_key.get(key)

    def match(
        self,
        event: str,
        params: dict[str, Any],
        attributes: dict[str, Any],
        only: str | None = None,
    ) -> list[Match]:
        candidates = self._by_event.get(event, ())
        if not candidates:
            return []
        env: dict[str, Any] | None = None
        out = []
        for campaign in candidates:
            if only is not None and campaign.key != only:
                continue
            if campaign.condition is None:
                out.append(Match(campaign))
                continue
            if env is None:
                env = variables(params, attributes)
            try:
                result = campaign.condition.execute(env)
            except (RuntimeError, TypeError, ValueError) as exc:
                out.append(Match(campaign, f"condition could not be evaluated: {exc}"))
                continue
            if result is True:
                out.append(Match(campaign))
            elif result is not False:
                out.append(Match(campaign, f"condition gave {result!r}, not true or false"))
        return out
