"""The gateway call for conditional triggered campaigns: one budget, strict answers, fail closed.

Only a well-formed answer that arrives within the budget (measured from the moment the decision
starts, waiting for a connection included), for the same user, with `"allowed": true` allows a send.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum

import orjson

from clearance.clock import Clock
from clearance.metrics import Metrics
from clearance.outbound.async_transport import AsyncTransport
from clearance.outbound.policy import OutboundPolicy, OutboundRefused
from clearance.outbound.signing import webhook_headers
from clearance.outbound.transport import CallFailed
from clearance.store import GatewayConfig
from clearance.triggered.breaker import CircuitBreaker
from clearance.triggered.matching import TriggeredCampaign

MAX_ANSWER_BYTES = 64 * 1024
MAX_REASON_CHARS = 500  # of a gateway's own `reason`, kept with the decision
TIMER_GUARD_SECONDS = 0.001
MIN_TIMEOUT_MS, MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS = 0, 2500, 2000
CLIENTS = ("pyreqwest",)  # the gate's HTTP client: the outbound transport's (aiohttp was removed)


class Outcome(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    TIMEOUT = "timeout"
    ERROR = "error"
    INVALID = "invalid"
    NO_GATEWAY = "no_gateway"
    CIRCUIT_OPEN = "circuit_open"
    NOT_CONDITIONAL = "not_conditional"  # the campaign sends without asking


FAILURES = frozenset({Outcome.TIMEOUT, Outcome.ERROR, Outcome.INVALID})


@dataclass(frozen=True)
class GateResult:
    outcome: Outcome
    reason: str | None
    latency_ms: float


class Gate:
    def __init__(
        self,
        metrics: Metrics,
        clock: Clock,
        breaker: CircuitBreaker | None = None,
        concurrency: int = 64,
        client: str = "pyreqwest",
        outbound: OutboundPolicy | None = None,
    ) -> None:
        if client not in CLIENTS:
            raise ValueError(f"unknown gate client {client!r}: the only one is pyreqwest")
        self.metrics = metrics
        self.clock = clock
        self.outbound = outbound or OutboundPolicy("*")
        self._checked_urls: set[str] = set()
        self.breaker = breaker or CircuitBreaker()
        self.concurrency = concurrency
        self.client_kind = client
        self._poster: AsyncTransport | None = None
        self._warming: set[asyncio.Task[None]] = set()
        self._message_no = 0
        # read when /metrics is scraped, not written per decision (a prometheus value takes a lock)
        self.in_flight = 0
        metrics.in_flight.set_function(lambda: self.in_flight)
        metrics.circuit_state.set_function(lambda: self.breaker.state)

    def _http(self) -> AsyncTransport:
        if self._poster is None:
            self._poster = AsyncTransport(self.outbound, self.concurrency)
        return self._poster

    def warm(self, url: str) -> None:
        """Get the client for a gateway ready before the first decision needs it (building one
        can take tens of milliseconds: a budget-sized wait for the first events after a start or
        a gateway change). Call on the event loop; failures surface at the first real call."""
        task = asyncio.get_running_loop().create_task(self._http().prepare(url))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def close(self) -> None:
        for task in list(self._warming):
            task.cancel()
        if self._poster is not None:
            await self._poster.close()

    async def decide(
        self,
        gateway: GatewayConfig | None,
        campaign: TriggeredCampaign,
        user_id: str,
        is_visitor: bool,
        started: float,
    ) -> GateResult:
        """Ask the gateway; `started` is the `time.monotonic()` at which the decision began."""
        if gateway is None:
            return GateResult(Outcome.NO_GATEWAY, "no gateway is set", 0.0)
        if gateway.timeout_ms <= 0:
            return GateResult(
                Outcome.TIMEOUT, "the budget is 0 ms; the gateway was not called", 0.0
            )
        if gateway.url not in self._checked_urls:
            try:  # read once, an address judged; a name is judged as it resolves, by the transport
                self.outbound.check_url(gateway.url, resolve=False)
            except OutboundRefused as exc:
                return GateResult(Outcome.ERROR, exc.message, 0.0)
            self._checked_urls.add(gateway.url)
        if not self.breaker.allow():
            return GateResult(
                Outcome.CIRCUIT_OPEN,
                "circuit open: the gateway is failing",
                (time.monotonic() - started) * 1000,
            )
        # Whatever happens from here on is recorded, an unexpected exception included: a
        # half-open breaker whose probe never reports back would stay half-open for good.
        failed = True
        try:
            result = await self._call(gateway, campaign, user_id, is_visitor, started)
            failed = result.outcome in FAILURES
            return result
        finally:
            self.breaker.record(failed)

    async def _call(
        self,
        gateway: GatewayConfig,
        campaign: TriggeredCampaign,
        user_id: str,
        is_visitor: bool,
        started: float,
    ) -> GateResult:
        deadline = started + gateway.timeout_ms / 1000
        body = (
            b'{"user":{"user_id":'
            + orjson.dumps(user_id)
            + b',"is_visitor":'
            + (b"true" if is_visitor else b"false")
            + b'},"campaign":'
            + campaign.gateway_campaign
            + b"}"
        )
        if gateway.secret:
            self._message_no += 1
            headers = dict(gateway.headers)
            headers.update(
                webhook_headers(
                    gateway.secret, f"gate_{self._message_no}_{user_id}", self.clock.now(), body
                )
            )
        else:
            headers = {**gateway.headers, "content-type": "application/json"}
        status = 0
        answer = b""
        self.in_flight += 1
        try:
            # event-loop timers may fire up to a millisecond early (uvloop rounds to ms): the
            # guard makes sure the budget is never cut short
            async with asyncio.timeout_at(deadline + TIMER_GUARD_SECONDS):
                remaining = max(0.001, deadline - time.monotonic())
                status, answer = await self._http().post(
                    gateway.url, body, headers, MAX_ANSWER_BYTES + 1, remaining + 0.05
                )
        except TimeoutError:
            result = GateResult(
                Outcome.TIMEOUT,
                f"no answer within {gateway.timeout_ms} ms",
                (time.monotonic() - started) * 1000,
            )
        except (CallFailed, OutboundRefused) as exc:
            result = GateResult(
                Outcome.ERROR,
                f"{type(exc).__name__}: {exc}"[:300],
                (time.monotonic() - started) * 1000,
            )
        else:
            result = judge(status, answer, user_id, (time.monotonic() - started) * 1000)
        finally:
            self.in_flight -= 1
        return result


def judge(status: int, answer: bytes, user_id: str, latency_ms: float) -> GateResult:
    """Turn an in-time HTTP answer into an outcome. Anything but a JSON boolean `true` for the
    same user is not an allow."""
    if not 200 <= status < 300:
        return GateResult(Outcome.ERROR, f"gateway answered HTTP {status}", latency_ms)
    if len(answer) > MAX_ANSWER_BYTES:
        return GateResult(
            Outcome.INVALID, f"answer larger than {MAX_ANSWER_BYTES} bytes", latency_ms
        )
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return GateResult(Outcome.INVALID, "answer is not JSON", latency_ms)
    if not isinstance(parsed, dict):
        return GateResult(Outcome.INVALID, "answer is not a JSON object", latency_ms)
    answered_for = parsed.get("user_id")
    if not isinstance(answered_for, str):
        return GateResult(Outcome.INVALID, "answer has no user_id string", latency_ms)
    if answered_for != user_id:
        return GateResult(Outcome.INVALID, f"answer is for user {answered_for[:100]!r}", latency_ms)
    allowed = parsed.get("allowed")
    said = gateway_reason(parsed.get("reason"))
    if allowed is True:
        return GateResult(Outcome.ALLOWED, f"gateway: {said}" if said else None, latency_ms)
    if allowed is False:
        return GateResult(
            Outcome.DENIED,
            f"the gateway answered allowed: false ({said})"
            if said
            else "the gateway answered allowed: false",
            latency_ms,
        )
    return GateResult(Outcome.INVALID, "allowed is not a JSON boolean", latency_ms)


def gateway_reason(raw: object) -> str | None:
    """The gateway's own `reason`, optional: kept with the decision when it is a string (control
    characters dropped, at most MAX_REASON_CHARS); anything else is ignored, never an error, so a
    gateway that answers only `user_id` and `allowed` works as before."""
    if not isinstance(raw, str):
        return None
    text = "".join(ch if ch.isprintable() else " " for ch in raw).strip()
    return text[:MAX_REASON_CHARS] or None
