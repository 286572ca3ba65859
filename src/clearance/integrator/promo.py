"""Promo activation: a customer is approved only if activating their promotion succeeded."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence

from clearance.integrator.client import Customer
from clearance.integrator.customers import CustomerData
from clearance.integrator.decision import Decision, GateDecision
from clearance.integrator.gateway import User
from clearance.integrator.rules import Rules

Activate = Callable[[str, str], Awaitable[None] | None]


class ActivationFailed(Exception):
    """Raise from `activate` with a reason the report should show."""


def rules_review(
    rules: Rules,
    data: CustomerData,
    activate: Activate | None = None,
    activation_concurrency: int = 16,
) -> Callable[[list[Customer]], Awaitable[Sequence[Decision]]]:
    """A `review` for the listener: every rule must pass, then (if given) the promotion must
    activate; failures are refusals with their reason."""
    gate = asyncio.Semaphore(activation_concurrency)

    async def activate_one(customer: Customer) -> Decision:
        assert activate is not None
        async with gate:
            try:
                result = activate(customer.customer_id, customer.promo_code)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                return Decision(
                    customer.customer_id,
                    False,
                    f"promo activation failed: {exc or type(exc).__name__}",
                )
        return Decision(customer.customer_id, True)

    async def review(batch: list[Customer]) -> Sequence[Decision]:
        records = await asyncio.to_thread(data.lookup, [c.customer_id for c in batch])
        decisions: list[Decision | None] = []
        to_activate = []
        for customer in batch:
            reason = rules.check(records.get(customer.customer_id))
            if reason is not None:
                decisions.append(Decision(customer.customer_id, False, reason))
            elif activate is None:
                decisions.append(Decision(customer.customer_id, True))
            else:
                decisions.append(None)
                to_activate.append(customer)
        activated = iter(await asyncio.gather(*(activate_one(c) for c in to_activate)))
        return [d if d is not None else next(activated) for d in decisions]

    return review


def rules_decide(
    rules: Rules, data: CustomerData
) -> Callable[[User, dict[str, object]], Awaitable[GateDecision]]:
    """A `decide` for the gateway app from the same rules (visitors have no data: refused)."""

    async def decide(user: User, campaign: dict[str, object]) -> GateDecision:
        if user.is_visitor:
            return GateDecision(False, "visitors have no customer data")
        record = data.lookup([user.user_id]).get(user.user_id)
        reason = rules.check(record)
        return GateDecision(reason is None, reason)

    return decide
