"""What the operator's functions return."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """One customer's verdict. `reason` says why a refusal was made (it is kept in the report)."""

    customer_id: str
    approved: bool
    reason: str | None = None


@dataclass(frozen=True)
class GateDecision:
    """A triggered verdict, for `decide` functions that want to give a reason."""

    allowed: bool
    reason: str | None = None
