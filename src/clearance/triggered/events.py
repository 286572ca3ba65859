"""Events in: the body of POST /api/v1/events, parsed and checked before anything is decided."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from clearance.domain import MAX_ID_LENGTH
from clearance.errors import InvalidInput

MAX_EVENTS_PER_REQUEST = 1000
_CONTROL = re.compile(r"[\x00-\x1f]")


@dataclass(frozen=True)
class Event:
    user_id: str
    is_visitor: bool
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    campaign_key: str | None = None
    event_id: str | None = None  # decided at most once per campaign within the retention window

    def digest(self) -> str:
        """What the event says (user, name, params, attributes, campaign), as a short stable
        digest: an Idempotency-Key names each event of a batch by it."""
        body = orjson.dumps(
            [
                self.user_id,
                self.is_visitor,
                self.name,
                self.params,
                self.attributes,
                self.campaign_key,
            ],
            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        )
        return hashlib.sha256(body).hexdigest()[:32]


def _text(value: Any, name: str, limit: int = MAX_ID_LENGTH) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput(f"{name} must be a string", field=name)
    text = str(value)
    if not text or len(text) > limit or _CONTROL.search(text):
        raise InvalidInput(f"{name} must be 1..{limit} printable characters", field=name)
    return text


def idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header of an events request, checked like an event id."""
    return None if value is None else _text(value, "Idempotency-Key", 200)


def parse_events(body: Any) -> tuple[list[Event], bool]:
    """One event object, or a JSON array of them. Everything is checked before anything runs."""
    single = isinstance(body, dict)
    items = [body] if single else body
    if not isinstance(items, list) or not items:
        raise InvalidInput("body must be an event object or a non-empty array of events")
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
    events = []
    for i, item in enumerate(items):
        at = "" if single else f"[{i}]."
        if not isinstance(item, dict):
            raise InvalidInput(f"{at or 'event '}must be an object", field=at.rstrip(".") or None)
        customer, visitor = item.get("customer_id"), item.get("visitor_id")
        if (customer is None) == (visitor is None):
            raise InvalidInput(
                "give exactly one of customer_id or visitor_id", field=f"{at}customer_id"
            )
        user = _text(
            customer if customer is not None else visitor,
            f"{at}{'customer_id' if customer is not None else 'visitor_id'}",
        )
        params = item.get("params", {})
        attributes = item.get("attributes", {})
        if not isinstance(params, dict):
            raise InvalidInput("params must be an object", field=f"{at}params")
        if not isinstance(attributes, dict):
            raise InvalidInput("attributes must be an object", field=f"{at}attributes")
        campaign = item.get("campaign_id")
        event_id = item.get("event_id")
        events.append(
            Event(
                user_id=user,
                is_visitor=customer is None,
                name=_text(item.get("event"), f"{at}event"),
                params=params,
                attributes=attributes,
                campaign_key=None if campaign is None else _text(campaign, f"{at}campaign_id"),
                event_id=None if event_id is None else _text(event_id, f"{at}event_id", 200),
            )
        )
    return events, single
