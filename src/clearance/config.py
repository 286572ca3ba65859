"""One settings object, read from CLEARANCE_* variables and overridden by CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clearance.errors import InvalidInput
from clearance.outbound.policy import OutboundPolicy
from clearance.outbound.signing import check_secret
from clearance.outbound.transport import Transport


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./clearance.db"
    timezone: str = "UTC"
    host: str = "127.0.0.1"
    port: int = 8080
    # Standard Webhooks secret ("whsec_<base64>") used to sign notifications and channel batches.
    # To rotate, list the new and the old secret separated by a space: both sign until the old goes.
    signing_secret: str | None = None
    default_clearance_lead_seconds: int = 1800
    # the heads-up to a campaign's owners before each send group's ClearanceRequiredBy: a JSON
    # webhook (unset: none is sent), how long before the deadline, and the approval rate below
    # which the deadline counts as at risk
    heads_up_url: str | None = None
    heads_up_lead_seconds: int = 900
    heads_up_at_risk_below: float = 0.8
    worker_poll_seconds: float = 0.5
    lease_seconds: float = 30.0
    execution_chunk: int = 5000
    # customers whose target-group membership each API process keeps in memory (16 bytes each)
    membership_cache_customers: int = 10_000_000
    file_channel_dir: str = "./clearance-sends"
    outbound_timeout_seconds: float = 10.0
    notification_ttl_seconds: int = 3600
    max_body_bytes: int = 8 * 1024 * 1024
    # triggered campaigns: the gate and its circuit breaker, the decision log
    gate_concurrency: int = 64
    gate_client: str = "pyreqwest"  # the only one since the outbound transport (bench/gate.py)
    breaker_min_calls: int = 50
    breaker_failure_ratio: float = 0.9
    breaker_window_seconds: int = 10
    breaker_pause_seconds: float = 5.0
    decision_batch: int = 5000
    decision_flush_seconds: float = 0.05
    # how long the decision log keeps retrying a batch while the database is away (then drops it,
    # counted in clearance_decisions_lost_total)
    decision_retry_seconds: float = 300.0
    # how long an events reply waits for its decisions (and their sends) to be committed before it
    # answers 503 (the decisions may still be logged and sent; repeat with the same event_id)
    decision_commit_wait_seconds: float = 5.0
    # how long an event_id is remembered per campaign: a repeat within it gets the first decision
    event_id_retention_seconds: int = 7 * 24 * 3600
    # how long the worker keeps retrying a triggered send's delivery (then it is `failed`)
    triggered_send_ttl_seconds: int = 3600
    token_idle_seconds: int = 20 * 60
    # how long a checked API key is trusted without a database read (revocation delay)
    key_cache_seconds: float = 10.0
    # requests per second per API key (a token bucket holding `rate_limit_burst`); 0 = unlimited
    rate_limit_per_second: float = 1000.0
    rate_limit_burst: int = 2000
    # failed logins per user name (4x that per client address) within 5 minutes before 429
    login_failures_allowed: int = 5
    # hosts and networks the server may call (listeners, gateway, channel webhooks), comma
    # separated: "hooks.example.com, 10.20.0.0/16". Empty: public addresses only. "*": anything.
    outbound_allow: str = ""
    # one JSON object per log line ("json") or plain text ("text"); access_log: a line per request
    log_format: str = "json"
    access_log: bool = True
    bootstrap_api_key: str | None = None
    bootstrap_user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def outbound(self) -> OutboundPolicy:
        """Where the server may send requests (CLEARANCE_OUTBOUND_ALLOW), parsed once."""
        return OutboundPolicy(self.outbound_allow)

    @cached_property
    def transport(self) -> Transport:
        """The one way out for listener notifications and channel webhooks (the gate has the
        asynchronous twin): every call checked against `outbound`, pinned to the address checked."""
        return Transport(self.outbound)

    @property
    def tz(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidInput(f"unknown time zone {self.timezone!r}", field="timezone") from exc

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(f"CLEARANCE_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            default = f.default
            if isinstance(default, bool):
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.tz  # noqa: B018  (fail at start on a bad zone, not at the first request)
        for one in (settings.signing_secret or "").split():  # at start, not at the first send
            check_secret(one, "CLEARANCE_SIGNING_SECRET")
        if settings.gate_client != "pyreqwest":
            raise InvalidInput(
                f"CLEARANCE_GATE_CLIENT={settings.gate_client!r} is not a gate client: the only "
                "one is pyreqwest (aiohttp was removed; see CHANGELOG)",
                field="gate_client",
            )
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)
