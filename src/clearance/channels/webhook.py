"""Webhook channel: each batch is POSTed once to the channel's URL, signed; a failed POST leaves
the batch undelivered for the executor to retry, with the same `webhook-id`."""

from __future__ import annotations

import httpx
import orjson

from clearance.channels.base import ChannelError, SendRecord
from clearance.clock import Clock
from clearance.config import Settings
from clearance.signing import webhook_headers
from clearance.store import Batch


class WebhookDelivery:
    def __init__(self, url: str, settings: Settings, clock: Clock) -> None:
        self.url = url
        self.settings = settings
        self.clock = clock

    def deliver(self, batch: Batch, sends: list[SendRecord]) -> None:
        body = orjson.dumps(
            {
                "CampaignID": batch.campaign_id,
                "ChannelID": batch.channel_id,
                "Sends": [s.wire() for s in sends],
            }
        )
        message_id = f"batch_{batch.campaign_id}_{batch.channel_id}_{batch.first_seq}"
        headers = webhook_headers(self.settings.signing_secret, message_id, self.clock.now(), body)
        try:
            response = httpx.post(
                self.url,
                content=body,
                headers=headers,
                timeout=self.settings.outbound_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            raise ChannelError(f"POST {self.url} failed: {type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise ChannelError(f"POST {self.url} answered HTTP {response.status_code}")
