"""The delivery seam. A batch is delivered whole; redelivery of the same batch is idempotent
for the file adapter and carries the same `webhook-id` for the webhook adapter."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol

from clearance.store import Batch

# What a campaign id may look like to be used in a file name as it is; anything else is hashed.
_PLAIN_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def path_component(text: str) -> str:
    """`text` as one file-name component that cannot leave its folder: the id itself when it is
    plain (letters, digits, `._-`, not starting with a dot, at most 100 characters), otherwise
    `~` and a digest of it (`~` is never in a plain id, so two ids never share a folder)."""
    if _PLAIN_COMPONENT.fullmatch(text):
        return text
    return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class ChannelError(Exception):
    """Delivery failed; the batch stays undelivered and is retried."""


@dataclass(frozen=True)
class BatchName:
    """Names a batch the same way on every delivery attempt."""

    folder: str  # "campaign-12" (scheduled) or "triggered-abc" (triggered)
    campaign: str
    channel_id: int
    first: str
    last: str

    @property
    def message_id(self) -> str:
        return f"batch_{self.campaign}_{self.channel_id}_{self.first.lstrip('0') or '0'}"

    @classmethod
    def triggered(cls, campaign_key: str, channel_id: int, first: str, last: str) -> BatchName:
        """Triggered sends of one campaign and channel; the campaign id, which a key holder
        chooses, only ever reaches a path through `path_component`."""
        return cls(
            f"triggered-{path_component(campaign_key)}", campaign_key, channel_id, first, last
        )

    @classmethod
    def scheduled(cls, batch: Batch) -> BatchName:
        return cls(
            f"campaign-{batch.campaign_id}",
            str(batch.campaign_id),
            batch.channel_id,
            f"{batch.first_seq:012d}",
            f"{batch.last_seq:012d}",
        )


def send_id(campaign_id: int, channel_id: int, seq: int) -> str:
    return f"{campaign_id}-{channel_id}-{seq}"


class Delivery(Protocol):
    def deliver(self, name: BatchName, sends: list[dict[str, Any]]) -> None: ...
