"""Campaigns, approvals and the rules between them. Pure: no I/O, time passed in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from clearance.errors import InvalidInput

MAX_APPROVALS_PER_CALL = 10_000
DEFAULT_PAGE = 10_000
MAX_PAGE = 100_000
MAX_ID_LENGTH = 200
DEFAULT_CLEARANCE_LEAD_SECONDS = 1800
WIRE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class State(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    AWAITING_CLEARANCE = "awaiting_clearance"
    CLEARED = "cleared"
    EXECUTING = "executing"
    EXECUTED = "executed"
    CANCELED = "canceled"


# States in which the worker has a step to take once `next_step_at` arrives.
ACTIVE_STATES = (State.SCHEDULED, State.AWAITING_CLEARANCE, State.CLEARED, State.EXECUTING)
CANCELABLE_STATES = (State.DRAFT, *ACTIVE_STATES[:3])


class Reason(StrEnum):
    """Why a target customer did not get the campaign."""

    NOT_APPROVED = "not_approved"  # never approved by ClearanceRequiredBy
    REFUSED = "refused"  # the operator's system answered Status false (or revoked)
    APPROVED_LATE = "approved_late"
    CAMPAIGN_CANCELED = "campaign_canceled"
    # sends were recorded but their batch was never delivered (the channel kept failing until the
    # campaign's life ended); the outcome is `undelivered`, with the channel's last error
    DELIVERY_FAILED = "delivery_failed"


class EventType:
    CAMPAIGN_PROCESSED = 1
    CAMPAIGN_CANCELED = 4
    CLEARANCE_REQUIRED = 5
    CHANNEL_EXECUTED = 13


KNOWN_EVENT_TYPES = frozenset({1, 2, 3, 4, 5, 11, 13})
MAX_CHANNEL = 2**31 - 1  # channel ids are 32-bit in the store


def check_listener(event_type: int, channel: int | None) -> None:
    """What a listener registration may name (the API's and the console's one rule)."""
    if event_type not in KNOWN_EVENT_TYPES:
        raise InvalidInput(
            f"EventTypeID {event_type} is not one of {sorted(KNOWN_EVENT_TYPES)}",
            field="EventTypeID",
        )
    if channel is not None and not 1 <= channel <= MAX_CHANNEL:
        raise InvalidInput(f"ChannelID must be 1..{MAX_CHANNEL}", field="ChannelID")
    if event_type == EventType.CLEARANCE_REQUIRED and channel is not None:
        raise InvalidInput("EventTypeID 5 is registered without a ChannelID", field="ChannelID")


@dataclass(frozen=True)
class Template:
    id: int
    name: str = ""


@dataclass(frozen=True)
class ChannelRef:
    id: int
    name: str = ""
    templates: tuple[Template, ...] = ()


@dataclass
class Campaign:
    campaign_id: int
    name: str
    execute_at: datetime
    duration_days: int
    conditional: bool
    action_id: int
    action_name: str
    promo_codes: list[str]
    channels: list[ChannelRef]
    state: State
    clearance_lead_seconds: int | None = None
    process_at: datetime | None = None
    clearance_required_by: datetime | None = None
    target_count: int = 0
    created_at: datetime | None = None
    executed_at: datetime | None = None
    canceled_at: datetime | None = None
    processed_at: datetime | None = None  # target group frozen, EventTypeID 5 queued
    cleared_at: datetime | None = None  # approval set frozen at ClearanceRequiredBy
    exec_cursor: int = 0  # the last target seq the executor has handed to channels
    last_error: str | None = None  # why the worker's last step failed (it will retry)
    next_step_at: datetime | None = None

    def promo_code_for(self, seq: int) -> str:
        """Promo codes are handed out round-robin over the target group, in target order."""
        if not self.promo_codes:
            return ""
        return self.promo_codes[(seq - 1) % len(self.promo_codes)]


def clearance_required_by(
    execute_at: datetime,
    channel_leads: list[int | None],
    campaign_lead: int | None,
    default_lead: int = DEFAULT_CLEARANCE_LEAD_SECONDS,
) -> datetime:
    """Execution time minus the longest clearance lead among the campaign's channels.

    A lead set on the campaign overrides the channels'; a channel without its own lead uses
    the default.
    """
    if campaign_lead is not None:
        lead = campaign_lead
    else:
        leads = [default_lead if x is None else x for x in channel_leads] or [default_lead]
        lead = max(leads)
    return execute_at - timedelta(seconds=lead)


def parse_time(value: str, tz: ZoneInfo, field_name: str) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` in the site time zone, or ISO 8601 with an offset. Returns UTC."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field_name} must be a time string", field=field_name)
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(
            f"{field_name} must be 'YYYY-MM-DD HH:MM:SS' or ISO 8601 with offset, got {value!r}",
            field=field_name,
        ) from exc
    if parsed.tzinfo is None:
        parsed = _in_zone(parsed, tz, field_name, text)
    return parsed.astimezone(UTC)


def _in_zone(local: datetime, tz: ZoneInfo, field_name: str, text: str) -> datetime:
    """A zone-less time read in the site zone, refused when the zone skips it (a spring-forward
    gap) or passes it twice (a fall-back hour): no one can say which instant was meant."""
    first, second = local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    round_trip = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    if round_trip != local:
        raise InvalidInput(
            f"{field_name} {text!r} does not exist in {tz.key} (the clocks skip it): give an "
            "offset or another time",
            field=field_name,
        )
    raise InvalidInput(
        f"{field_name} {text!r} happens twice in {tz.key} (the clocks go back): give an offset, "
        f"e.g. {first.isoformat()} or {second.isoformat()}",
        field=field_name,
    )


def format_wire_time(when: datetime, tz: ZoneInfo) -> str:
    """The wire format's zone-less timestamp, in the site's time zone."""
    return when.astimezone(tz).strftime(WIRE_TIME_FORMAT)


_ID_RE = re.compile(r"[^\x00-\x1f\x7f]+")  # fullmatch: "$" would allow a final newline


def valid_customer_id(text: str) -> bool:
    """The fast check behind `check_customer_id`, for strings."""
    return 0 < len(text) <= MAX_ID_LENGTH and _ID_RE.fullmatch(text) is not None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def valid_customer_ids(ids: list[Any], control_possible: bool = True) -> bool:
    """`valid_customer_id` for a whole call at once: a few C-level passes, not one per id.
    `control_possible=False` skips the scan for control characters (the caller knows there are
    none, e.g. they came from a JSON body without escapes)."""
    if set(map(type, ids)) != {str}:
        return False
    if min(map(len, ids)) < 1 or max(map(len, ids)) > MAX_ID_LENGTH:
        return False
    return not control_possible or _CONTROL.search("".join(ids)) is None


def check_customer_id(value: Any, field_name: str = "CustomerID") -> str:
    """Customer ids are non-empty strings without control characters, at most 200 characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput(f"{field_name} must be a string", field=field_name)
    text = str(value)
    if not text or len(text) > MAX_ID_LENGTH:
        raise InvalidInput(
            f"{field_name} must be 1..{MAX_ID_LENGTH} characters, got {len(text)}", field=field_name
        )
    if not _ID_RE.fullmatch(text):
        raise InvalidInput(f"{field_name} contains control characters", field=field_name)
    return text


def check_page(top: int | None, skip: int | None) -> tuple[int, int]:
    """Wire paging: `$top` 1..100,000 (default 10,000), `$skip` >= 0."""
    size = DEFAULT_PAGE if top is None else top
    offset = 0 if skip is None else skip
    if size < 1 or size > MAX_PAGE:
        raise InvalidInput(f"$top must be between 1 and {MAX_PAGE}", field="$top")
    if offset < 0:
        raise InvalidInput("$skip must be >= 0", field="$skip")
    return size, offset


# --- send groups (Conditional Execution V2) -----------------------------------------------------
class GroupState(StrEnum):
    """A send group's own step: notified and awaiting clearance, frozen, executing, done."""

    AWAITING = "awaiting"
    CLEARED = "cleared"
    EXECUTING = "executing"
    EXECUTED = "executed"


_GROUP_TIME = "%Y%m%dT%H%M%SZ"


def send_group_id(template_id: int | None, scheduled_at: datetime) -> str:
    """The stable id of the customers scheduled for one template at one send time."""
    return f"{template_id or 0}@{scheduled_at.astimezone(UTC).strftime(_GROUP_TIME)}"


def parse_send_group_id(group_id: str) -> tuple[int | None, datetime]:
    """(template id, send time) back from `send_group_id`; InvalidInput for anything else."""
    template, _, when = group_id.partition("@")
    try:
        scheduled = datetime.strptime(when, _GROUP_TIME).replace(tzinfo=UTC)
        template_id = int(template)
    except ValueError as exc:
        raise InvalidInput(f"{group_id!r} is not a SendGroupID", field="SendGroupID") from exc
    return template_id or None, scheduled


@dataclass(frozen=True)
class SendGroup:
    campaign_id: int
    send_group_id: str
    template_id: int | None
    scheduled_at: datetime
    clearance_required_by: datetime | None
    state: GroupState
    target_count: int
    exec_cursor: int = 0
    last_error: str | None = None

    def template_for(self, channel: ChannelRef) -> int | None:
        """The group's template on a channel that has it, else the channel's first."""
        ids = [t.id for t in channel.templates]
        if self.template_id in ids:
            return self.template_id
        return ids[0] if ids else None


def first_template(channels: list[ChannelRef]) -> int | None:
    return next((ch.templates[0].id for ch in channels if ch.templates), None)
