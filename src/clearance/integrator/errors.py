"""What the kit raises: one root, a subclass per failure a caller can act on."""

from __future__ import annotations


class IntegratorError(Exception):
    """Root of everything the integrator kit raises."""


class TransportError(IntegratorError):
    """The engine could not be reached (or did not answer) within the deadline."""


class ApiError(IntegratorError):
    """The engine answered with an error; `status`, `message` and `field` say which."""

    def __init__(self, call: str, status: int, message: str, field: str | None = None) -> None:
        super().__init__(f"{call}: HTTP {status}: {message}")
        self.call = call
        self.status = status
        self.message = message
        self.field = field


class AuthError(ApiError):
    """401/403: the key or login is wrong, revoked, expired or lacks the access type."""


class ClearanceDeadlinePassed(ApiError):
    """409 on approvals after ClearanceRequiredBy: nothing in that call was applied."""

    def __init__(
        self,
        call: str,
        status: int,
        message: str,
        field: str | None,
        clearance_required_by: str | None,
    ) -> None:
        super().__init__(call, status, message, field)
        self.clearance_required_by = clearance_required_by
