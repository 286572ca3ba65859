"""One root exception; a subclass per failure a caller can act on.

These are domain errors: they say what went wrong, not how a transport reports it (the API maps
them to HTTP statuses in `clearance.api.errors`; the CLI prints the message).
"""

from __future__ import annotations

from typing import Any


class ClearanceError(Exception):
    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra


class InvalidInput(ClearanceError):
    """The request or the data is malformed or out of range; nothing was applied."""


class PayloadTooLarge(ClearanceError):
    """A body over the size limit; it was not read."""


class NotAuthenticated(ClearanceError):
    """No credential, or one that is unknown or revoked."""


class Forbidden(ClearanceError):
    """A known caller without the right to this call (or an expired token)."""


class NotFound(ClearanceError):
    """The named campaign, key, gateway or call does not exist."""


class Conflict(ClearanceError):
    """The call does not fit the current state (e.g. the campaign is already executed)."""


class DeadlinePassed(Conflict):
    """An approval arrived at or after ClearanceRequiredBy; nothing was applied."""


class StoreUnavailable(ClearanceError):
    """The database (or the decision log) cannot take the work now; retry later."""


class TooManyRequests(ClearanceError):
    """A rate limit: `retry_after` seconds until the caller may try again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after
