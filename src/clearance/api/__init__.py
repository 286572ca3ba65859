"""The HTTP API: wire-compatible calls under /current, the native API under /api/v1."""

from clearance.api.app import create_app

__all__ = ["create_app"]
