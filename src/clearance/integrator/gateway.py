"""The gateway app (ASGI): answers triggered decisions, always with valid JSON, always in time.

The operator's `decide(user, campaign)` returns a bool or a GateDecision. If it raises, or runs past
`budget_ms` (keep it below the engine's timeout), the app answers `allowed: false` itself and logs
why — the engine would treat silence as a no anyway, but an explicit answer keeps its circuit
breaker and metrics honest.

With a `secret` (the one the engine was given as the gateway's secret, or "new old" while
rotating) every request must carry a valid Standard Webhooks signature and a timestamp within
`tolerance_seconds`, checked as the listener checks notifications; an unsigned, forged or stale
request is answered 401 `allowed: false` and `decide` is not called. There is no `webhook-id`
replay check: the engine numbers gateway messages per process, so ids repeat across its workers
and restarts, and a replayed request only repeats a question the engine already asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clearance.clock import Clock, SystemClock
from clearance.integrator.decision import GateDecision
from clearance.integrator.verify import Rejected, Verifier

log = logging.getLogger("clearance.integrator.gateway")


@dataclass(frozen=True)
class User:
    user_id: str
    is_visitor: bool


Decide = Callable[[User, dict[str, Any]], Awaitable[bool | GateDecision]]


def _answer(user_id: Any, allowed: bool, status: int = 200, reason: str | None = None) -> Response:
    body: dict[str, Any] = {"user_id": user_id, "allowed": allowed}
    if reason:  # optional on the wire: the engine keeps it with the decision
        body["reason"] = reason
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
    )


class GatewayApp:
    def __init__(
        self,
        decide: Decide,
        *,
        budget_ms: int = 1500,
        secret: str | None = None,
        clock: Clock | None = None,
        tolerance_seconds: float = 300,
    ) -> None:
        self.decide = decide
        self.verifier = (
            Verifier(secret, clock or SystemClock(), tolerance_seconds, replay=False)
            if secret
            else None
        )
        self.budget = budget_ms / 1000
        self.counts: Counter[str] = Counter()
        self.app = Starlette(
            routes=[
                Route("/", self.answer, methods=["POST"]),
                Route("/stats", self.stats, methods=["GET"]),
            ]
        )

    async def answer(self, request: Request) -> Response:
        body = await request.body()
        if self.verifier is not None:
            try:
                self.verifier.verify(body, {k.lower(): v for k, v in request.headers.items()})
            except Rejected as exc:
                self.counts["unauthenticated"] += 1
                log.warning("refused an unauthenticated gateway request: %s", exc.message)
                return _answer(None, False, 401)
            except Exception:  # a verifier that breaks refuses too
                self.counts["unauthenticated"] += 1
                log.exception("could not verify a gateway request: refused")
                return _answer(None, False, 401)
        try:
            payload = orjson.loads(body)
            user = payload["user"]
            if not isinstance(user["user_id"], str) or not isinstance(user["is_visitor"], bool):
                raise TypeError("user_id must be a string and is_visitor a boolean")
            campaign = payload["campaign"]
            if not isinstance(campaign, dict):
                raise TypeError("campaign must be an object")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self.counts["malformed"] += 1
            log.warning("malformed gateway payload: %s", exc)
            return _answer(None, False, 400)
        who = User(user["user_id"], user["is_visitor"])
        try:
            async with asyncio.timeout(self.budget):
                verdict = await self.decide(who, campaign)
        except TimeoutError:
            self.counts["timeout"] += 1
            log.warning(
                "decide() for %s ran past %.0f ms: answered false", who.user_id, self.budget * 1000
            )
            return _answer(who.user_id, False, reason="decide() ran past the budget")
        except Exception:
            self.counts["error"] += 1
            log.exception("decide() for %s raised: answered false", who.user_id)
            return _answer(who.user_id, False, reason="decide() raised")
        # only a real True allows: a decide() that returns "yes", 1 or None refuses
        allowed = (verdict.allowed if isinstance(verdict, GateDecision) else verdict) is True
        if isinstance(verdict, GateDecision) and not verdict.allowed and verdict.reason:
            log.info("refused %s: %s", who.user_id, verdict.reason)
        self.counts["allowed" if allowed else "denied"] += 1
        reason = verdict.reason if isinstance(verdict, GateDecision) and not allowed else None
        return _answer(who.user_id, allowed, reason=reason)

    async def stats(self, request: Request) -> Response:
        return Response(orjson.dumps(dict(self.counts)), media_type="application/json")
