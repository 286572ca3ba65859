"""A circuit breaker for the gateway: stop calling a gateway that fails almost every call.

Closed: every call goes through; outcomes are counted in one-second buckets over a sliding window.
When the window holds at least `min_calls` and the failure share reaches `failure_ratio`, it opens:
calls are skipped (outcome `circuit_open`) for `pause_seconds`. Then it is half-open: one probe at a
time goes through; a healthy answer closes it, a failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = 0, 1, 2


@dataclass(frozen=True)
class BreakerSettings:
    min_calls: int = 50
    failure_ratio: float = 0.9
    window_seconds: int = 10
    pause_seconds: float = 5.0


class CircuitBreaker:
    def __init__(
        self,
        settings: BreakerSettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or BreakerSettings()
        self.monotonic = monotonic
        n = self.settings.window_seconds
        self._calls = [0] * n
        self._failures = [0] * n
        self._bucket_second = [0] * n
        self.state = CLOSED
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a call go to the gateway now? (A half-open breaker lets one probe through.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self.monotonic() - self._opened_at >= self.settings.pause_seconds:
            self.state = HALF_OPEN
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record(self, failed: bool) -> None:
        if self.state == HALF_OPEN:
            self._probing = False
            if failed:
                self._open()
            else:
                self._reset()
            return
        if self.state == OPEN:
            return
        second = int(self.monotonic())
        i = second % len(self._calls)
        if self._bucket_second[i] != second:
            self._bucket_second[i], self._calls[i], self._failures[i] = second, 0, 0
        self._calls[i] += 1
        self._failures[i] += failed
        if failed:
            horizon = second - len(self._calls)
            calls = failures = 0
            for j, s in enumerate(self._bucket_second):
                if s > horizon:
                    calls += self._calls[j]
                    failures += self._failures[j]
            if calls >= self.settings.min_calls and failures >= calls * self.settings.failure_ratio:
                self._open()

    def _open(self) -> None:
        self.state = OPEN
        self._opened_at = self.monotonic()
        self._probing = False

    def _reset(self) -> None:
        self.state = CLOSED
        n = len(self._calls)
        self._calls, self._failures, self._bucket_second = [0] * n, [0] * n, [0] * n
