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

from clearance.config import Settings
from clearance.errors import StoreUnavailable

log = logging.getLogger("clearance.worker")


class Heartbeat:
    def __init__(
        self,
        extend: Callable[[], bool],
        interval: float,
        limit: float,
        what: str = "lease",
        *,
        lease: float | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        self._extend = extend
        self._interval = max(0.01, interval)
        self._limit = limit
        self._what = what
        # how long a lease lasts from its last extend (the caller extended or claimed it just
        # before): past that with no successful extend, it may be someone else's
        self._lease = lease if lease is not None else self._interval * 3
        self._release = release
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {what}", daemon=True)
        self.beats = 0

    @classmethod
    def for_lease(
        cls,
        extend: Callable[[], bool],
        settings: Settings,
        what: str,
        release: Callable[[], None] | None = None,
    ) -> Heartbeat:
        """The heartbeat for one outbound call under a lease of `settings.lease_seconds`: a beat
        every third of the lease, for at most the call's timeout and one lease more."""
        lease = settings.lease_seconds
        return cls(
            extend,
            interval=lease / 3,
            limit=settings.outbound_timeout_seconds + lease,
            what=what,
            lease=lease,
            release=release,
        )

    @property
    def lost(self) -> bool:
        """The lease may be another worker's now: an extend found it taken, extends kept failing
        until it ran out, or the work outlived `limit`. Record nothing as this worker's."""
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
        try:
            self._beat()
        finally:
            if self._release is not None:
                self._release()  # e.g. this thread's SQLite connection

    def _beat(self) -> None:
        started = time.monotonic()
        deadline = started + self._limit
        held_until = started + self._lease
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            if now >= deadline:
                log.warning(
                    "%s: work still in flight after %.1f s; lease left to lapse",
                    self._what,
                    self._limit,
                )
                self._lost.set()
                return
            try:
                held = self._extend()
            except StoreUnavailable as exc:  # the next beat tries again, within the deadline
                log.warning("%s: could not extend the lease: %s", self._what, exc)
                held = None
            except Exception:
                log.exception("%s: extending the lease failed", self._what)
                held = None
            if held is None:
                if time.monotonic() >= held_until:
                    log.warning("%s: lease ran out while it could not be extended", self._what)
                    self._lost.set()
                    return
                continue
            if not held:
                log.warning("%s: lease lost to another worker", self._what)
                self._lost.set()
                return
            held_until = now + self._lease
            self.beats += 1
