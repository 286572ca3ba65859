"""One root exception; a subclass per failure a caller can act on.

Each carries the HTTP status the API answers with, so the API layer translates them in one place.
"""

from __future__ import annotations

from typing import Any


class ClearanceError(Exception):
    status = 500
    title = "Internal Server Error"

    def __init__(self, message: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra


class InvalidInput(ClearanceError):
    status = 400
    title = "Bad Request"


class PayloadTooLarge(ClearanceError):
    status = 413
    title = "Payload Too Large"


class NotAuthenticated(ClearanceError):
    status = 401
    title = "Unauthorized"


class Forbidden(ClearanceError):
    status = 403
    title = "Forbidden"


class NotFound(ClearanceError):
    status = 404
    title = "Not Found"


class Conflict(ClearanceError):
    status = 409
    title = "Conflict"


class DeadlinePassed(Conflict):
    """An approval arrived at or after ClearanceRequiredBy; nothing was applied."""


class StoreUnavailable(ClearanceError):
    status = 503
    title = "Service Unavailable"


class TooManyRequests(ClearanceError):
    """A rate limit: `retry_after` seconds until the caller may try again."""

    status = 429
    title = "Too Many Requests"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after
