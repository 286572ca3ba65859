"""Channel delivery: where a batch of sends goes once it is recorded (a file or a webhook).

Imports the store's row types, config, clock and `outbound`; never the flows or the API.
"""

from __future__ import annotations

from clearance.channels.base import BatchName, ChannelError, Delivery, send_id
from clearance.channels.registry import delivery_for

__all__ = ["BatchName", "ChannelError", "Delivery", "delivery_for", "send_id"]
