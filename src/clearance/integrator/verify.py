"""Standard Webhooks verification with an injectable clock and replay protection."""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from collections import OrderedDict
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from clearance.clock import Clock

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the Standard Webhooks recommendation (and the engine's minimum)


def check_secrets(secret: str, setting: str = "secret") -> list[str]:
    """The space-separated signing secrets in `secret` (two while one is rotated), each checked as
    the engine checks them: `whsec_` (optional) and strict base64 of at least 24 bytes. Raises
    ValueError naming `setting`, never repeating the secret: a short or malformed key would let
    anyone forge a signature (the Standard Webhooks library decodes without validating)."""
    if not isinstance(secret, str):
        raise ValueError(f"{setting} must be a string")
    parts = secret.split()
    if not parts:
        raise ValueError(f"{setting} is empty: give a whsec_ secret or no secret at all")
    if len(parts) > 2:
        raise ValueError(f"{setting} holds {len(parts)} secrets: at most two (new, old)")
    for n, one in enumerate(parts, 1):
        which = setting if len(parts) == 1 else f"{setting} (secret {n} of {len(parts)})"
        try:
            key = base64.b64decode(one.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"{which} must be whsec_ followed by base64 (a Standard Webhooks secret)"
            ) from None
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(
                f"{which} must hold at least {MIN_SECRET_BYTES} random bytes (it holds {len(key)})"
            )
    return parts


class Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Verifier:
    """Checks `webhook-signature` (v1, HMAC-SHA256), that `webhook-timestamp` is within
    `tolerance_seconds` of now, and that a `webhook-id` is not seen twice within that window.
    `secret` may hold two secrets separated by a space while one is rotated: either verifies.
    Each is checked at construction (`check_secrets`): a malformed or short one raises ValueError.
    `replay=False` skips the `webhook-id` check (the gateway: see GatewayApp)."""

    def __init__(
        self,
        secret: str,
        clock: Clock,
        tolerance_seconds: float = 300,
        *,
        replay: bool = True,
        setting: str = "secret",
    ) -> None:
        self.webhooks = [Webhook(one) for one in check_secrets(secret, setting)]
        self.clock = clock
        self.tolerance = tolerance_seconds
        self.replay = replay
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(self, body: bytes, headers: dict[str, str]) -> None:
        msg_id = headers.get("webhook-id")
        stamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not (msg_id and stamp and signatures):
            raise Rejected(401, "missing webhook-id, webhook-timestamp or webhook-signature")
        try:
            sent_at = float(stamp)
            if not math.isfinite(sent_at):
                raise ValueError(stamp)
        except ValueError:
            raise Rejected(400, "webhook-timestamp is not a number") from None
        now = self.clock.now().timestamp()
        if abs(now - sent_at) > self.tolerance:
            raise Rejected(400, "webhook-timestamp is outside the tolerance (stale or future)")
        when, text = datetime.fromtimestamp(sent_at, UTC), body.decode(errors="replace")
        expected = [
            base64.b64decode(webhook.sign(msg_id, when, text).split(",", 1)[1])
            for webhook in self.webhooks
        ]
        if not any(hmac.compare_digest(want, got) for want in expected for got in _v1(signatures)):
            raise Rejected(401, "no valid signature")
        if not self.replay:
            return
        while self._seen and next(iter(self._seen.values())) < now - self.tolerance:
            self._seen.popitem(last=False)
        if msg_id in self._seen:
            raise Rejected(409, f"message {msg_id} was already received (replay)")
        self._seen[msg_id] = now


def _v1(signatures: str) -> list[bytes]:
    found = []
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1":
            try:
                found.append(base64.b64decode(value, validate=True))
            except ValueError:
                continue
    return found
