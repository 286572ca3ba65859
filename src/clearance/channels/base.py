"""The delivery seam. A batch is delivered whole; redelivery of the same batch is idempotent
for the file adapter and carries the same `webhook-id` for the webhook adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from clearance.store import Batch


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
