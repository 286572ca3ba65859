"""Repeats of an event id: the first decision, for a duplicate in this process (awaited), or
from the log (decided earlier, before a restart, or by another replica)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from clearance.errors import StoreUnavailable
from clearance.store import Store
from clearance.triggered.matching import TriggeredCampaign


class Reservations:
    """Event-id reservations, group-committed: the requests that want a reservation while one
    is being written go together in the next transaction (one commit, not one per request)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[tuple[list[tuple[str, str, str, int, int]], _Held]] = []
        self._writing = False
        self._writer: asyncio.Future[None] | None = None

    async def reserve(
        self, wanted: list[tuple[str, str, str]], now_ms: int, retained_from_ms: int
    ) -> dict[tuple[str, str], str]:
        held: _Held = asyncio.get_running_loop().create_future()
        self._waiting.append(([(*w, now_ms, retained_from_ms) for w in wanted], held))
        if not self._writing:
            self._writing = True
            self._writer = asyncio.ensure_future(self._write())
        return await asyncio.shield(held)

    async def _write(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    got = await asyncio.to_thread(
                        self.store.reserve_event_ids, [w for ws, _ in group for w in ws]
                    )
                except BaseException as exc:
                    for _, held in group:
                        if not held.done():
                            held.set_exception(
                                exc if isinstance(exc, Exception) else StoreUnavailable(str(exc))
                            )
                            held.exception()  # retrieved: a waiter may be gone
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for _, held in group:
                        if not held.done():
                            held.set_result(got)
        finally:
            self._writing = False


_Held = asyncio.Future[dict[tuple[str, str], str]]


@dataclass(frozen=True)
class Decided:
    reply: dict[str, Any]
    committed: asyncio.Future[bool] | None = None  # None: nothing new to write (a repeat)
    key: tuple[str, str] | None = None  # (campaign, event id) this decision holds


class Placeholder:
    def __await__(self) -> Any:  # never awaited: replaced once the event ids are reserved
        raise AssertionError("unreplaced placeholder")
        yield


def placeholder() -> Any:
    return Placeholder()


async def nothing() -> Decided:
    return Decided({})


def settle(
    in_flight: dict[tuple[str, str], asyncio.Future[dict[str, Any]]],
    mine: dict[tuple[str, str], asyncio.Future[dict[str, Any]]],
    failure: BaseException | None,
    decisions: list[Decided] | None = None,
) -> None:
    """Tell in-process duplicates what the first decision of their event id was."""
    replies = {d.key: d.reply for d in decisions or () if d.key is not None}
    for key, future in mine.items():
        if in_flight.get(key) is future:
            del in_flight[key]
        if future.done():
            continue
        if key in replies:
            future.set_result(replies[key])
            continue
        if not isinstance(failure, Exception):
            failure = StoreUnavailable("the first event with this event_id was not decided")
        future.set_exception(failure)
        future.exception()  # retrieved: no waiter is a fine outcome too


async def repeat_of(first: asyncio.Future[dict[str, Any]]) -> Decided:
    reply = await asyncio.shield(first)
    return Decided({**reply, "repeat": True})


async def logged_repeat(
    store: Store,
    wait_seconds: float,
    decision_id: str,
    campaign: TriggeredCampaign,
    key: tuple[str, str],
) -> Decided:
    """The first decision for this event id, decided earlier or elsewhere (another replica,
    before a restart): read it from the log, waiting a little for one still being written."""
    event_id = key[1]
    deadline = time.monotonic() + wait_seconds
    delay = 0.01
    while True:
        row = await asyncio.to_thread(store.get_decision, decision_id)
        if row is not None or time.monotonic() + delay > deadline:
            break
        await asyncio.sleep(delay)
        delay = min(0.2, delay * 2)
    if row is None:
        return Decided(
            {
                "campaign_id": campaign.body["id"],
                "decision_id": decision_id,
                "outcome": "in_progress",
                "reason": "an event with this event_id is being decided (or its decision "
                "was lost before it was logged); it is not decided again",
                "sent": None,
                "shadow": campaign.shadow,
                "latency_ms": 0.0,
                "event_id": event_id,
                "repeat": True,
            },
            key=key,
        )
    return Decided(
        {
            "campaign_id": campaign.body["id"],
            "decision_id": row.decision_id,
            "outcome": row.outcome,
            "reason": row.reason,
            "sent": row.sent,
            "shadow": row.shadow,
            "latency_ms": row.latency_ms,
            "event_id": event_id,
            "repeat": True,
        },
        key=key,
    )
