"""The decision log: every triggered decision, written in batches off the hot path.

`append` only queues; a background task writes the queue every `interval` seconds (or sooner when
`batch` rows are waiting) through the store's bulk route, retrying while the database is away,
then hands the batch's sends to their channels. `close` drains everything, so nothing
acknowledged is lost on a clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from clearance.errors import StoreUnavailable
from clearance.metrics import Metrics
from clearance.store import DecisionRow, Store

log = logging.getLogger("clearance.decisions")


class DecisionIds:
    """Stable, unique, time-ordered ids: epoch ms, a per-process counter, a process token."""

    def __init__(self) -> None:
        self._token = secrets.token_hex(3)
        self._counter = itertools.count(1)

    def next(self, at_ms: int) -> str:
        return f"{at_ms:013d}{next(self._counter) % 10**10:010d}{self._token}"


@dataclass(frozen=True)
class PendingSend:
    decision_id: str
    campaign_key: str
    campaign_id: object
    channel_id: int
    template_id: int | None
    promo_code: str | None
    user_id: str
    is_visitor: bool
    at: str


class DecisionLog:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        deliver: Callable[[list[PendingSend]], None] | None = None,
        batch: int = 5000,
        interval: float = 0.05,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.deliver = deliver
        self.batch = batch
        self.interval = interval
        self._rows: list[DecisionRow] = []
        self._sends: list[PendingSend] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def append(self, row: DecisionRow, sends: list[PendingSend] | None = None) -> None:
        self._rows.append(row)
        if sends:
            self._sends.extend(sends)
        if len(self._rows) >= self.batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is queued now; on a database outage keep it and try again later."""
        while self._rows:
            rows, self._rows = self._rows, []
            sends, self._sends = self._sends, []
            self.metrics.decision_log_pending.set(len(rows))
            try:
                await asyncio.to_thread(self.store.write_decisions, rows)
            except StoreUnavailable as exc:
                log.warning("decision log write failed, will retry: %s", exc)
                self._rows[:0] = rows
                self._sends[:0] = sends
                await asyncio.sleep(min(1.0, self.interval * 10))
                if self._closing:
                    continue
                return
            self.metrics.decision_log_pending.set(len(self._rows))
            if sends and self.deliver is not None:
                await asyncio.to_thread(self.deliver, sends)

    async def close(self, timeout: float = 30.0) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        async with asyncio.timeout(timeout):
            await self.flush()
