"""Standard Webhooks headers, shared by the notifier and the channels (and the integrator kit)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from standardwebhooks.webhooks import Webhook


def webhook_headers(
    secret: str | None, message_id: str, timestamp: datetime, body: bytes
) -> dict[str, str]:
    """`webhook-id` (stable across retries), `webhook-timestamp` and, with a secret, a v1
    HMAC-SHA256 `webhook-signature` over `id.timestamp.body`.

    `secret` may hold two secrets separated by a space while one is being rotated: the header then
    carries one signature per secret, and a receiver holding either accepts the message."""
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
    }
    if secret:
        text = body.decode()
        headers["webhook-signature"] = " ".join(
            _webhook(one).sign(message_id, timestamp, text) for one in secret.split()
        )
    return headers


@lru_cache(maxsize=16)
def _webhook(secret: str) -> Webhook:
    return Webhook(secret)


def mask_secret(secret: str | None) -> str | None:
    """What replies show of a secret: its kind and that it is set, never a character of it."""
    if not secret:
        return None
    return " ".join("whsec_****" if one.startswith("whsec_") else "****" for one in secret.split())
