"""Which adapter delivers a channel's batches: the one module that knows them all.

The adapters (`file`, `webhook`) import only `base`; nothing imports this module back.
"""

from __future__ import annotations

from clearance.channels.base import ChannelError, Delivery
from clearance.channels.file import FileDelivery
from clearance.channels.webhook import WebhookDelivery
from clearance.clock import Clock
from clearance.config import Settings
from clearance.store import ChannelConfig


def delivery_for(config: ChannelConfig | None, settings: Settings, clock: Clock) -> Delivery:
    if config is not None and config.delivery == "webhook":
        if not config.target:
            raise ChannelError(f"channel {config.channel_id} has webhook delivery but no url")
        return WebhookDelivery(config.target, settings, clock)
    base = settings.file_channel_dir
    subdirectory = config.target if config and config.target else None
    return FileDelivery(base, subdirectory)
