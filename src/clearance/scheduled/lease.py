"""Keeping a lease alive while slow work is in flight, and noticing when it is gone.

A lease is what lets another worker take over a step whose worker died, so it is extended only
while this worker is demonstrably working on it: a `Heartbeat` is a thread that lives exactly as
long as one piece of work (a batch delivery, a notification attempt) and extends the lease every
third of its length. It stops when the work returns or raises, when the process dies (a daemon
thread), when the extend says the lease now belongs to someone else, and, at the latest, after
`limit` seconds, so a call that never returns cannot hold the step forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from clearance.errors import StoreUnavailable

log = logging.getLogger("clearance.worker")


class Heartbeat:
    def __init__(
        self, extend: Callable[[], bool], interval: float, limit: float, what: str = "lease"
    ) -> None:
        self._extend = extend
        self._interval = max(0.01, interval)
        self._limit = limit
        self._what = what
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {what}", daemon=True)
        self.beats = 0

    @property
    def lost(self) -> bool:
        """The extend found the lease held by another worker: stop working on this step."""
        return self._lost.is_set()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit
        while not self._stop.wait(self._interval):
            if time.monotonic() >= deadline:
                log.warning(
                    "%s: work still in flight after %.1f s; lease left to lapse",
                    self._what,
                    self._limit,
                )
                return
            try:
                held = self._extend()
            except StoreUnavailable as exc:  # the next beat tries again, within the deadline
                log.warning("%s: could not extend the lease: %s", self._what, exc)
                continue
            except Exception:
                log.exception("%s: extending the lease failed", self._what)
                continue
            if not held:
                log.warning("%s: lease lost to another worker", self._what)
                self._lost.set()
                return
            self.beats += 1
