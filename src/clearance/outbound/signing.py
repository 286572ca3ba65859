"""Standard Webhooks headers, shared by the notifier and the channels (and the integrator kit)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from functools import lru_cache

from standardwebhooks.webhooks import Webhook

from clearance.errors import InvalidInput

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the Standard Webhooks recommendation: 24 to 64 random bytes


def check_secret(value: str, field: str = "secret") -> str:
    """A signing secret as Standard Webhooks reads it: `whsec_` (optional) and the base64 of at
    least 24 bytes. Checked when it is saved, so a decision or a notification never meets a
    secret it cannot sign with. The error never repeats the secret."""
    body = value.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(
            f"{field} must be whsec_ followed by base64 (a Standard Webhooks secret)", field=field
        ) from exc
    if len(key) < MIN_SECRET_BYTES:
        raise InvalidInput(
            f"{field} must hold at least {MIN_SECRET_BYTES} random bytes (it holds {len(key)})",
            field=field,
        )
    return value


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
