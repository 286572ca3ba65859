"""The decision log: every triggered decision, written in batches off the hot path.

`append` only queues and returns the future of the batch the row will be written in; whenever
the writer thread is idle (group commit), every `interval` seconds, or when `batch` rows are
waiting, the queue goes to the one writer thread, which writes the decisions and their sends (the
outbox) in one transaction through the store's bulk route and resolves the future. The events API
awaits it, so a reply says `sent` only for a send that is committed. The writer never calls a
channel: the worker delivers the outbox. `close` drains everything.

While the database is away (a restart, a failover) the writer keeps each batch in memory and
retries with backoff for up to `retry_seconds` (CLEARANCE_DECISION_RETRY_SECONDS, default 300);
a retry first skips rows an unanswered commit already wrote, so none is logged twice. A batch
still unwritten at that deadline is dropped with its sends (its future resolves False, so its
requests answer 503), logged as an error and counted in `clearance_decisions_lost_total`.

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

from clearance.metrics import Metrics
from clearance.store import DecisionRow, OutboxSend, Store

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


_Item = tuple[list[DecisionRow], list[OutboxSend], "asyncio.Future[bool] | None"]


def _resolve(committed: asyncio.Future[bool], written: bool) -> None:
    if not committed.done():
        committed.set_result(written)


class DecisionLog:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        batch: int = 5000,
        interval: float = 0.05,
        retry_seconds: float = 300.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.batch = batch
        self.interval = interval
        self.retry_seconds = retry_seconds
        self._rows: list[DecisionRow] = []
        self._sends: list[OutboxSend] = []
        self._committed: asyncio.Future[bool] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # One writer thread (one database connection) takes whole batches off the event loop.
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
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

    def append(
        self, row: DecisionRow, sends: list[OutboxSend] | None = None
    ) -> asyncio.Future[bool]:
        """Queue a decision (and its sends); the future says whether its batch was committed
        (True) or dropped (False). Call `kick` once the request's decisions are appended."""
        committed = self._committed
        if committed is None:
            committed = self._committed = asyncio.get_running_loop().create_future()
        self._rows.append(row)
        if sends:
            self._sends.extend(sends)
        if len(self._rows) >= self.batch:
            self.flush()
        return committed

    def kick(self) -> None:
        """Group commit: if the writer is idle, hand it what is queued now; if it is busy, what
        queues meanwhile goes as one batch as soon as it is done."""
        if self._queued == 0:
            self.flush()

    def _after_write(self) -> None:  # on the event loop, when the writer ran dry
        if self._queued == 0 and self._rows:
            self.flush()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
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
            committed, self._committed = self._committed, None
            with self._count_lock:
                self._queued += len(rows)
            self.metrics.decision_log_pending.set(self._queued)
            self._queue.put((rows, sends, committed))

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            rows, sends, committed = item
            written = self._write(rows, sends)
            with self._count_lock:
                self._queued -= len(rows)
            self.metrics.decision_log_pending.set(self._queued)
            loop = self._loop
            if loop is not None and not loop.is_closed():
                try:
                    if committed is not None:
                        loop.call_soon_threadsafe(_resolve, committed, written)
                    if self._queue.empty():
                        loop.call_soon_threadsafe(self._after_write)
                except RuntimeError:  # the loop closed meanwhile: nobody is waiting
                    pass

    def _write(self, rows: list[DecisionRow], sends: list[OutboxSend]) -> bool:
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
                    sends = [s for s in sends if s.decision_id not in present]
                self.store.write_decisions(todo, sends)
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
