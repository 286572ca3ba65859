"""Webhook channel: each batch is POSTed once to the channel's URL, signed; a failed POST leaves
the batch undelivered for the caller to retry, with the same `webhook-id`."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from clearance.channels.base import BatchName, ChannelError
from clearance.clock import Clock
from clearance.config import Settings
from clearance.outbound.policy import OutboundRefused
from clearance.outbound.signing import webhook_headers


class WebhookDelivery:
    def __init__(self, url: str, settings: Settings, clock: Clock) -> None:
        self.url = url
        self.settings = settings
        self.clock = clock

    def deliver(self, name: BatchName, sends: list[dict[str, Any]]) -> None:
        body = orjson.dumps(
            {"CampaignID": name.campaign, "ChannelID": name.channel_id, "Sends": sends}
        )
        headers = webhook_headers(
            self.settings.signing_secret, name.message_id, self.clock.now(), body
        )
        try:
            self.settings.outbound.check_url(self.url)
        except OutboundRefused as exc:
            raise ChannelError(f"POST {self.url} not sent: {exc.message}") from exc
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
