"""The heartbeat that keeps a lease alive only while its work is in flight."""

from __future__ import annotations

import threading
import time

from clearance.errors import StoreUnavailable
from clearance.heartbeat import Heartbeat


def test_it_extends_while_the_work_runs_and_never_after_it_returns() -> None:
    calls: list[float] = []
    with Heartbeat(lambda: calls.append(time.monotonic()) or True, 0.02, 10) as beat:
        time.sleep(0.2)
    after = len(calls)
    time.sleep(0.1)
    assert after >= 4 and len(calls) == after  # nothing once the work is over
    assert not beat.lost


def test_it_stops_when_the_work_raises() -> None:
    calls: list[int] = []
    try:
        with Heartbeat(lambda: calls.append(1) or True, 0.02, 10):
            raise RuntimeError("the worker died")
    except RuntimeError:
        pass
    time.sleep(0.1)
    assert calls == []


def test_a_lost_lease_is_reported_and_not_extended_again() -> None:
    calls: list[int] = []

    def extend() -> bool:
        calls.append(1)
        return len(calls) < 3

    with Heartbeat(extend, 0.01, 10) as beat:
        time.sleep(0.2)
    assert beat.lost and len(calls) == 3


def test_work_that_never_returns_holds_the_lease_no_longer_than_the_limit() -> None:
    calls: list[int] = []
    release = threading.Event()
    with Heartbeat(lambda: calls.append(1) or True, 0.01, 0.1):
        release.wait(0.4)
        stuck_for = len(calls)
    assert 3 <= stuck_for <= 12  # about limit / interval, then the lease is left to lapse


def test_a_database_blip_is_retried_at_the_next_beat() -> None:
    calls: list[int] = []

    def extend() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise StoreUnavailable("connection reset")
        return True

    with Heartbeat(extend, 0.01, 10) as beat:
        time.sleep(0.1)
    assert len(calls) >= 3 and not beat.lost and beat.beats == len(calls) - 1
