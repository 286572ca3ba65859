"""Standard Webhooks headers, shared by the notifier and the channels (and the integrator kit)."""

from __future__ import annotations

from datetime import datetime

from standardwebhooks.webhooks import Webhook


def webhook_headers(
    secret: str | None, message_id: str, timestamp: datetime, body: bytes
) -> dict[str, str]:
    """`webhook-id` (stable across retries), `webhook-timestamp` and, with a secret, a v1
    HMAC-SHA256 `webhook-signature` over `id.timestamp.body`."""
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
    }
    if secret:
        headers["webhook-signature"] = Webhook(secret).sign(message_id, timestamp, body.decode())
    return headers
