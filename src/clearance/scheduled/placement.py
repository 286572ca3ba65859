"""Which send group a target row goes to: its own send time and template, each defaulting to
the campaign's execution time and first template."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from clearance.domain import Campaign, first_template, parse_send_group_id, send_group_id
from clearance.errors import InvalidInput


def place_in_group(c: Campaign, send_at: datetime | None, template_id: int | None) -> str:
    templates = {t.id for ch in c.channels for t in ch.templates}
    if template_id is not None and template_id not in templates:
        raise InvalidInput(
            f"template_id {template_id} is not one of the campaign's templates {sorted(templates)}",
            field="template_id",
        )
    if template_id is None:
        template_id = first_template(c.channels)
    end = campaign_end(c)
    if send_at is not None and send_at >= end:  # a promotion sent after its campaign's life
        raise InvalidInput(
            f"send_at {send_at.isoformat()} is after the campaign's life (execute_at plus "
            f"{max(1, c.duration_days)} day(s), until {end.isoformat()})",
            field="send_at",
        )
    return send_group_id(template_id, send_at or c.execute_at)


def campaign_end(c: Campaign) -> datetime:
    """When the campaign's life ends (as the executor counts it: execute_at plus its days)."""
    return c.execute_at + timedelta(days=max(1, c.duration_days))


def group_times(rows: Sequence[tuple[str | None, ...]]) -> list[datetime]:
    """The send times of the groups the rows are placed in."""
    ids = {r[2] for r in rows if len(r) > 2 and r[2]}
    return sorted(parse_send_group_id(g)[1] for g in ids if g is not None)
