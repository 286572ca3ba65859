"""The decision log: every triggered decision, written in batches off the hot path.

`append` only queues; every `interval` seconds (or sooner when `batch` rows are waiting) the queue
goes to one writer thread, which writes it through the store's bulk route, then hands the batch's
sends to their channels. `close` drains everything, so nothing acknowledged is lost on a clean
shutdown.

While the database is away (a restart, a failover) the writer keeps each batch in memory and
retries with backoff for up to `retry_seconds` (CLEARANCE_DECISION_RETRY_SECONDS, default 300);
a retry first skips rows an unanswered commit already wrote, so none is logged twice. A batch
still unwritten at that deadline is dropped with its sends, logged as an error and counted in
`clearance_decisions_lost_total`; that, and a shutdown while the database is unreachable, are the
only ways an acknowledged decision is lost.

To keep that window small the log also fails closed: once writes have been failing for
`REFUSE_AFTER_SECONDS`, or `MAX_PENDING` decisions wait unwritten, `refusing()` names why and the
events API answers 503 (nothing decided, nothing sent) until the database takes writes again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from clearance.errors import StoreUnavailable
from clearance.metrics import Metrics
from clearance.store import DecisionRow, Store

log = logging.getLogger("clearance.decisions")

REFUSE_AFTER_SECONDS = 2.0
MAX_PENDING = 200_000


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
        retry_seconds: float = 300.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.deliver = deliver
        self.batch = batch
        self.interval = interval
        self.retry_seconds = retry_seconds
        self._rows: list[DecisionRow] = []
        self._sends: list[PendingSend] = []
        # One writer thread (one database connection) takes whole batches off the event loop.
        self._queue: queue.SimpleQueue[tuple[list[DecisionRow], list[PendingSend]] | None] = (
            queue.SimpleQueue()
        )
        self._queued = 0
        self._count_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._closing = False
        self._failing_since: float | None = None
        self.refuse_after = REFUSE_AFTER_SECONDS

    def refusing(self) -> str | None:
        """Why new decisions should be refused now (the log cannot keep up), or None."""
        failing_since = self._failing_since
        if failing_since is not None and time.monotonic() - failing_since >= self.refuse_after:
            return (
                "the decision log cannot be written (database unavailable for "
                f"{time.monotonic() - failing_since:.0f} s); nothing was decided or sent"
            )
        if self._queued + len(self._rows) > MAX_PENDING:
            return "the decision log is behind; nothing was decided or sent, retry shortly"
        return None

    def append(self, row: DecisionRow, sends: list[PendingSend] | None = None) -> None:
        self._rows.append(row)
        if sends:
            self._sends.extend(sends)
        if len(self._rows) >= self.batch:
            self.flush()

    def start(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_loop, name="decision-log", daemon=True
            )
            self._writer.start()
            self._tick()

    def _tick(self) -> None:
        self.flush()
        if not self._closing:
            self._ticker = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def flush(self) -> None:
        """Hand what is queued now to the writer thread (never blocks the event loop)."""
        if self._rows:
            rows, self._rows = self._rows, []
            sends, self._sends = self._sends, []
            with self._count_lock:
                self._queued += len(rows)
            self.metrics.decision_log_pending.set(self._queued)
            self._queue.put((rows, sends))

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            rows, sends = item
            written = self._write(rows)
            with self._count_lock:
                self._queued -= len(rows)
            self.metrics.decision_log_pending.set(self._queued)
            if written and sends and self.deliver is not None:
                self._hand_off(self.deliver, sends)

    def _hand_off(
        self, deliver: Callable[[list[PendingSend]], None], sends: list[PendingSend]
    ) -> None:
        """Hand logged sends to their channels. Reading the channel settings retries while the
        database is away, within the log's deadline (nothing is delivered before that read)."""
        deadline = time.monotonic() + self.retry_seconds
        delay = self.interval
        while True:
            try:
                deliver(sends)
                return
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    log.error("dropping %d logged sends: %s", len(sends), exc)
                    return
                log.warning("handing sends to channels failed, retrying in %.2f s: %s", delay, exc)
                time.sleep(delay)
                delay = min(1.0, delay * 2)
            except Exception:
                log.exception("handing %d sends to their channels failed", len(sends))
                return

    def _write(self, rows: list[DecisionRow]) -> bool:
        """Write one batch, retrying while the database is away for at most `retry_seconds`;
        False if the batch had to be dropped (its sends are then not made)."""
        deadline = time.monotonic() + self.retry_seconds
        delay = self.interval
        todo = rows
        failed = False
        while True:
            try:
                if failed:  # a commit that went unanswered may have landed: skip what did
                    present = self.store.present_decision_ids([r.decision_id for r in todo])
                    todo = [r for r in todo if r.decision_id not in present]
                self.store.write_decisions(todo)
                self._failing_since = None
                if failed:
                    log.warning("decision log write succeeded after retrying")
                return True
            except Exception as exc:  # any failure: keep the batch, retry within the deadline
                failed = True
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                if time.monotonic() + delay > deadline:
                    log.error(
                        "dropping %d acknowledged decisions (and their sends): the database "
                        "stayed unreachable for %.0f s: %s",
                        len(todo),
                        self.retry_seconds,
                        exc,
                    )
                    self.metrics.decisions_lost.inc(len(todo))
                    return False
                log.warning("decision log write failed, retrying in %.2f s: %s", delay, exc)
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    async def close(self, timeout: float = 30.0) -> None:
        """Write everything appended so far, then stop the writer."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
        self.flush()
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join, timeout)
            if self._writer.is_alive():
                log.error(
                    "shutting down with %d decisions not yet written (database unreachable)",
                    self._queued,
                )
