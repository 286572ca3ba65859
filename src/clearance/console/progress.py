"""Will the listener finish in time? A projection from its review rate so far."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GRACE_MS = 10_000  # a listener that has said nothing yet is "waiting" this long, then at risk


@dataclass(frozen=True)
class Projection:
    status: str  # waiting · on_track · at_risk · done · frozen
    reviewed: int
    target: int
    rate_per_second: float
    seconds_left: float
    seconds_needed: float | None  # at the rate so far, for the rest; None: no rate yet
    projected_reviewed: int  # reviewed by ClearanceRequiredBy at the rate so far

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def project(
    target: int,
    reviewed: int,
    processed_at_ms: int | None,
    deadline_ms: int | None,
    now_ms: int,
    frozen: bool,
) -> Projection:
    left = max(0.0, ((now_ms if deadline_ms is None else deadline_ms) - now_ms) / 1000)
    elapsed_ms = max(0, now_ms - (now_ms if processed_at_ms is None else processed_at_ms))
    rate = reviewed / (elapsed_ms / 1000) if elapsed_ms > 0 else 0.0
    remaining = max(0, target - reviewed)
    needed = remaining / rate if rate > 0 else None
    projected = min(target, reviewed + int(rate * left))
    if frozen:
        status = "frozen"
    elif remaining == 0:
        status = "done"
    elif needed is None:
        status = "waiting" if elapsed_ms < GRACE_MS and left > 0 else "at_risk"
    else:
        status = "on_track" if needed <= left else "at_risk"
    return Projection(status, reviewed, target, rate, left, needed, projected)
