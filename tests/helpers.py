from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from clearance.domain import Campaign, ChannelRef, State, Template
from clearance.scheduled.service import ScheduledService


def new_campaign(
    engine: ScheduledService,
    customers: int = 10,
    *,
    conditional: bool = True,
    execute_in: timedelta = timedelta(hours=2),
    channels: tuple[int, ...] = (504,),
    lead: int | None = None,
    campaign_id: int = 0,
    customer_ids: list[str] | None = None,
    targets: list[tuple[str, str | None]] | None = None,
    promo_codes: tuple[str, ...] = ("P1", "P2"),
) -> Campaign:
    """A scheduled campaign of `customers` (c0, c1, ...), or of `customer_ids`, or of `targets`
    (id, attributes JSON) rows."""
    c = Campaign(
        campaign_id=campaign_id,
        name="test",
        execute_at=engine.clock.now() + execute_in,
        duration_days=1,
        conditional=conditional,
        action_id=7,
        action_name="bonus",
        promo_codes=list(promo_codes),
        channels=[ChannelRef(ch, f"ch{ch}", (Template(ch * 10, "t"),)) for ch in channels],
        state=State.SCHEDULED,
        clearance_lead_seconds=lead,
    )
    if targets is None:
        ids = customer_ids if customer_ids is not None else [f"c{i}" for i in range(customers)]
        targets = [(cid, None) for cid in ids]
    return engine.create_campaign(c, targets)


def wait_until(what: str, seconds: float, check: Callable[[], Any]) -> Any:
    """Poll `check` until it returns something truthy (and return that), or fail naming `what`
    after `seconds`: tests wait on conditions, not on sleeps that happen to be long enough."""
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def new_grouped_campaign(
    engine: ScheduledService,
    groups: list[tuple[timedelta, int]],
    *,
    conditional: bool = True,
    execute_in: timedelta = timedelta(hours=2),
    channels: tuple[int, ...] = (504,),
    templates: tuple[int, ...] = (),
) -> Campaign:
    """A campaign with send groups: per (send time from now, customers), customers g{k}c{i}
    at that time; group k uses templates[k] when given (one of the first channel's)."""
    first = channels[0]
    c = Campaign(
        campaign_id=0,
        name="grouped",
        execute_at=engine.clock.now() + execute_in,
        duration_days=1,
        conditional=conditional,
        action_id=7,
        action_name="bonus",
        promo_codes=["P1", "P2"],
        channels=[
            ChannelRef(
                ch,
                f"ch{ch}",
                tuple(Template(t, "t") for t in (*templates, ch * 10) if ch == first)
                or (Template(ch * 10, "t"),),
            )
            for ch in channels
        ],
        state=State.SCHEDULED,
    )
    rows: list[tuple[str, str | None, str | None]] = []
    for k, (offset, n) in enumerate(groups):
        template = templates[k] if k < len(templates) else None
        gid = engine.place(c, engine.clock.now() + offset, template)
        rows += [(f"g{k}c{i}", None, gid) for i in range(n)]
    return engine.create_campaign(c, rows)
