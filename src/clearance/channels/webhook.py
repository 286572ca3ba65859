"""Webhook channel: each batch is POSTed once to the channel's URL, signed; a failed POST leaves
the batch undelivered for the caller to retry, with the same `webhook-id`."""

from __future__ import annotations

from typing import Any

import orjson

from clearance.channels.base import BatchName, ChannelError
from clearance.clock import Clock
from clearance.config import Settings
from clearance.outbound.signing import webhook_headers
from clearance.outbound.transport import CallFailed, OutboundRefused, Transport


class WebhookDelivery:
    def __init__(
        self, url: str, settings: Settings, clock: Clock, transport: Transport | None = None
    ) -> None:
        self.url = url
        self.settings = settings
        self.clock = clock
        # the one way out, shared with the notifier: see clearance.outbound.transport
        self.transport = transport or settings.transport

    def deliver(self, name: BatchName, sends: list[dict[str, Any]]) -> None:
        body = orjson.dumps(
            {"CampaignID": name.campaign, "ChannelID": name.channel_id, "Sends": sends}
        )
        headers = webhook_headers(
            self.settings.signing_secret, name.message_id, self.clock.now(), body
        )
        try:
            status, _ = self.transport.post(
                self.url, body, headers, self.settings.outbound_timeout_seconds
            )
        except OutboundRefused as exc:
            raise ChannelError(f"POST {self.url} not sent: {exc.message}") from exc
        except (CallFailed, TimeoutError) as exc:
            raise ChannelError(f"POST {self.url} failed: {exc}") from exc
        if not 200 <= status < 300:
            raise ChannelError(f"POST {self.url} answered HTTP {status}")
