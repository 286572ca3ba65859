"""Prometheus metrics, one registry per engine so several apps in one process do not mix."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._decision_children: dict[tuple[str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self.decisions = Counter(
            "clearance_decisions",
            "Triggered gate decisions by outcome and campaign",
            ["outcome", "campaign"],
            registry=r,
        )
        self.gateway_latency = Histogram(
            "clearance_gateway_latency_seconds",
            "Time from decision start to outcome",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("clearance_gate_in_flight", "Gateway calls in flight", registry=r)
        self.circuit_state = Gauge(
            "clearance_gate_circuit_state",
            "Circuit breaker: 0 closed, 1 open, 2 half-open",
            registry=r,
        )
        self.notifications = Counter(
            "clearance_notifications",
            "Listener notification attempts by result",
            ["result"],
            registry=r,
        )
        self.approvals = Counter(
            "clearance_approvals",
            "Approval entries by result (accepted, refused, not_in_target_group)",
            ["result"],
            registry=r,
        )
        self.heads_ups = Counter(
            "clearance_heads_ups",
            "Heads-ups sent before a send group's deadline, by whether the deadline was at risk",
            ["at_risk"],
            registry=r,
        )
        self.sends = Counter(
            "clearance_sends", "Sends recorded by channel and kind", ["channel", "kind"], registry=r
        )
        self.decision_log_pending = Gauge(
            "clearance_decision_log_pending", "Decisions waiting to be written", registry=r
        )
        self.decisions_lost = Counter(
            "clearance_decisions_lost",
            "Acknowledged decisions dropped because the database stayed unreachable past "
            "CLEARANCE_DECISION_RETRY_SECONDS",
            registry=r,
        )

    def decided(self, outcome: str, campaign: str, latency_seconds: float | None) -> None:
        """Count one decision (hot path: label children are looked up once and kept)."""
        key = (outcome, campaign)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(outcome, campaign)
        child.inc()
        if latency_seconds is not None:
            hist = self._latency_children.get(outcome)
            if hist is None:
                hist = self._latency_children[outcome] = self.gateway_latency.labels(outcome)
            hist.observe(latency_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
