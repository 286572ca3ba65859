"""Rate limits: a token bucket per API key, and a cap on failed logins.

Both are kept per API process, in memory, on the engine's clock (so tests move time instead of
sleeping). With `serve --workers N` a key may therefore make up to N times its rate in all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

from clearance.clock import Clock

MAX_TRACKED = 100_000


class KeyRateLimiter:
    """`rate` requests per second per key, in bursts of up to `burst`. A rate of 0 is unlimited."""

    def __init__(self, clock: Clock, rate: float, burst: int) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, key: str, rate: float | None = None) -> float:
        """0.0 if the call may go ahead (and is counted); else the seconds until it may."""
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return 0.0
        burst = max(1.0, float(self.burst) if rate == self.rate else rate * 2)
        now = self.clock.now().timestamp()
        tokens, at = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - at) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
        if len(self._buckets) > MAX_TRACKED:
            self._buckets.clear()
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0


class LoginThrottle:
    """At most `allowed` failed logins per user name, and 4 x `allowed` per client address (many
    users may share one address behind a proxy), in `window` seconds; past that, login answers
    429 (even with the right password) until the window moves on."""

    ADDRESS_FACTOR = 4

    def __init__(self, clock: Clock, allowed: int, window: float = 300.0) -> None:
        self.clock = clock
        self.allowed = allowed
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, who: str, now: float) -> deque[float]:
        failures = self._failures.get(who)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def begin(self, username: str, address: str) -> float:
        """Check and count a login attempt in one step: 0.0 if it may go ahead (it is counted as
        a failure until `succeeded` or `abandoned` says otherwise); else the seconds until one
        may. Concurrent guesses therefore cannot all pass the check before any failure is
        counted: at most `allowed` are ever in flight or failed per window."""
        now = self.clock.now().timestamp()
        keys = (
            (f"user:{username}", self.allowed),
            (f"addr:{address}", self.allowed * self.ADDRESS_FACTOR),
        )
        with self._lock:
            waits = [
                failures[0] + self.window - now
                for who, allowed in keys
                if len(failures := self._recent(who, now)) >= allowed
            ]
            if waits:
                return max(0.001, max(waits))
            for who, _ in keys:
                failures = self._recent(who, now)
                failures.append(now)
                self._failures[who] = failures
                self._failures.move_to_end(who)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)
        return 0.0

    def succeeded(self, username: str, address: str) -> None:
        """The right password: the user's failures are forgotten, and this attempt no longer
        counts against the address."""
        with self._lock:
            self._failures.pop(f"user:{username}", None)
            self._forget_one(f"addr:{address}")

    def abandoned(self, username: str, address: str) -> None:
        """The attempt could not be checked (the database was away): it does not count."""
        with self._lock:
            self._forget_one(f"user:{username}")
            self._forget_one(f"addr:{address}")

    def _forget_one(self, who: str) -> None:
        failures = self._failures.get(who)
        if failures:
            failures.pop()
