"""The operator's side of Conditional Execution: a client for the wire-format calls, a listener
app for scheduled campaigns, a gateway app for triggered ones, compliance rules and promo
activation.

It talks to the engine only over HTTP: of the engine's modules it imports only `clock` (the
import-linter contract in pyproject.toml, checked by `make lint`, pins this)."""

from clearance.integrator.client import ApprovalSummary, Client, Customer
from clearance.integrator.customers import CallableCustomers, CsvCustomers, SqlCustomers
from clearance.integrator.decision import Decision, GateDecision
from clearance.integrator.errors import (
    ApiError,
    AuthError,
    ClearanceDeadlinePassed,
    IntegratorError,
    TransportError,
)
from clearance.integrator.gateway import GatewayApp, User
from clearance.integrator.listener import Listener, ReviewReport
from clearance.integrator.promo import ActivationFailed, rules_decide, rules_review
from clearance.integrator.rules import RuleError, Rules

__all__ = [
    "ActivationFailed",
    "ApiError",
    "ApprovalSummary",
    "AuthError",
    "CallableCustomers",
    "ClearanceDeadlinePassed",
    "Client",
    "CsvCustomers",
    "Customer",
    "Decision",
    "GateDecision",
    "GatewayApp",
    "IntegratorError",
    "Listener",
    "ReviewReport",
    "RuleError",
    "Rules",
    "SqlCustomers",
    "TransportError",
    "User",
    "rules_decide",
    "rules_review",
]
