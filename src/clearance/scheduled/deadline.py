"""A campaign's ClearanceRequiredBy, from its own lead or its channels' leads in the store."""

from __future__ import annotations

from datetime import datetime

from clearance.domain import Campaign, clearance_required_by
from clearance.store import Store


def deadline_for(store: Store, c: Campaign, default_lead_seconds: int) -> datetime:
    """`clearance_required_by` for `c` with each channel's configured lead (a channel the store
    does not know uses the default)."""
    leads = store.get_channels([ch.id for ch in c.channels])
    return clearance_required_by(
        c.execute_at,
        [leads[ch.id].clearance_lead_seconds if ch.id in leads else None for ch in c.channels],
        c.clearance_lead_seconds,
        default_lead_seconds,
    )
