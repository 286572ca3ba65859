"""Rate limits: a token bucket per API key, and a cap on failed logins.

Both are kept per API process, in memory, on the engine's clock (so tests move time instead of
sleeping). With `serve --workers N` a key may therefore make up to N times its rate in all.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque

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
        self._in_flight: Counter[str] = Counter()  # attempts begun and not yet answered
        self._lock = threading.Lock()

    def _recent(self, who: str, now: float) -> deque[float]:
        failures = self._failures.get(who)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:  # nothing left to remember: the name goes (memory stays bounded)
            del self._failures[who]
        return failures

    def _sweep(self, now: float) -> None:
        """Forget names whose last failure has left the window. The dict is kept in order of
        last failure, so the stale ones are at its front (memory stays bounded by the window)."""
        while self._failures:
            who, failures = next(iter(self._failures.items()))
            if failures and failures[-1] > now - self.window:
                return
            del self._failures[who]

    def _keys(self, username: str, address: str) -> tuple[tuple[str, int], tuple[str, int]]:
        return (
            (f"user:{username}", self.allowed),
            (f"addr:{address}", self.allowed * self.ADDRESS_FACTOR),
        )

    def begin(self, username: str, address: str) -> float:
        """Check and count a login attempt in one step: 0.0 if it may go ahead (it is in flight
        until `failed`, `succeeded` or `abandoned`); else the seconds until one may. Failures and
        attempts still in flight both count, so concurrent guesses cannot all pass the check
        before any failure is counted, and a success in between does not free theirs: at most
        `allowed` are ever in flight or failed per user name and window."""
        now = self.clock.now().timestamp()
        with self._lock:
            self._sweep(now)
            waits = []
            for who, allowed in self._keys(username, address):
                failures = self._recent(who, now)
                if len(failures) + self._in_flight[who] >= allowed:
                    # blocked by failures: until the oldest leaves the window; by attempts in
                    # flight only: they are answered within a second or so
                    waits.append(failures[0] + self.window - now if failures else 1.0)
            if waits:
                return max(0.001, max(waits))
            for who, _ in self._keys(username, address):
                self._in_flight[who] += 1
        return 0.0

    def _answered(self, username: str, address: str) -> None:
        for who, _ in self._keys(username, address):
            self._in_flight[who] -= 1
            if self._in_flight[who] <= 0:
                del self._in_flight[who]

    def failed(self, username: str, address: str) -> None:
        """A wrong password: the attempt becomes a failure of the user name and the address."""
        now = self.clock.now().timestamp()
        with self._lock:
            self._answered(username, address)
            for who, _ in self._keys(username, address):
                failures = self._recent(who, now)
                failures.append(now)
                self._failures[who] = failures
                self._failures.move_to_end(who)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, username: str, address: str) -> None:
        """The right password: the user's past failures are forgotten (attempts still in flight
        keep counting)."""
        with self._lock:
            self._answered(username, address)
            self._failures.pop(f"user:{username}", None)

    def abandoned(self, username: str, address: str) -> None:
        """The attempt could not be checked (the database was away): it does not count."""
        with self._lock:
            self._answered(username, address)
