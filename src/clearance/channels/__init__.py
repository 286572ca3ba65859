"""Channel delivery adapters: where a batch of sends goes once it is recorded."""

from __future__ import annotations

from clearance.channels.base import BatchName, ChannelError, Delivery, delivery_for, send_id

__all__ = ["BatchName", "ChannelError", "Delivery", "delivery_for", "send_id"]
