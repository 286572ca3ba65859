"""The HTTP API over a Runtime: wire-compatible calls under /current, the native API under /api/v1.

Imports `runtime`, the flows and the store's row types; nothing below imports the API."""

from clearance.api.app import create_app

__all__ = ["create_app"]
