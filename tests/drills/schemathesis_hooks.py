"""Schemathesis hooks for the hostile-input drill (loaded through SCHEMATHESIS_HOOKS).

The server under test allows outbound calls only to DRILL_OUTBOUND_ALLOW (no loopback address).
Outbound URLs in generated bodies (the gateway's `url`, a channel's `delivery.url`) go out as
schemathesis generated them, except that about a third of those bodies carry instead one of the
hostile URLs of tests/drills/support.py, aimed at the drill's loopback canary (its port comes in
CLEARANCE_DRILL_CANARY_PORT); a channel given one is made a webhook channel, a gateway given one
gets a `timeout_ms` in range. The choice is a hash of the generated body, so a seed replays the
same run.

The check `accepted_urls_are_allowed` reads the URL back from every 2xx answer to those two calls
(the URL the server stored and will call) and checks it against the same rule.
"""

from __future__ import annotations

import os
import random
import zlib
from typing import Any

import orjson
import schemathesis

from clearance.errors import InvalidInput
from clearance.outbound.policy import OutboundPolicy, check_outbound_url
from tests.drills.support import (
    CANARY_PORT_ENV,
    DRILL_OUTBOUND_ALLOW,
    hostile_urls,
)

GATEWAY = "/triggered_conditional_execution_gateway"
CHANNEL = "/api/v1/channels/{channel_id}"
POLICY = OutboundPolicy(DRILL_OUTBOUND_ALLOW)
_PORT = int(os.environ.get(CANARY_PORT_ENV, "9"))
# every hostile URL, the ones behind the fixed defects (support.known_defects) included
GATEWAY_URLS = hostile_urls(_PORT)
CHANNEL_URLS = hostile_urls(_PORT)


def _choice(body: Any, urls: list[str]) -> str | None:
    rng = random.Random(zlib.crc32(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)))
    return rng.choice(urls) if rng.random() < 1 / 3 else None


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # the body is sent from case.body after this hook (kwargs has only transport options)
    body = case.body
    if case.method.upper() != "PUT" or not isinstance(body, dict):
        return
    try:
        if case.operation.path == GATEWAY:
            url = _choice(body, GATEWAY_URLS)
            if url is not None:  # and a budget in range, or most would be refused for that
                body = {**body, "url": url, "timeout_ms": 200}
        elif case.operation.path == CHANNEL:
            url = _choice(body, CHANNEL_URLS)
            if url is not None:
                body = {**body, "delivery": {"type": "webhook", "url": url}}
    except TypeError:  # a body orjson cannot encode (a huge integer): sent as generated
        return
    case.body = body


@schemathesis.check
def accepted_urls_are_allowed(ctx: Any, response: Any, case: Any) -> bool | None:
    """A URL the server accepted and stored is one the outbound rule allows."""
    if case.method.upper() != "PUT" or not 200 <= response.status_code < 300:
        return None
    answer = response.json()
    if case.operation.path == GATEWAY:
        url = answer.get("url")
    elif case.operation.path == CHANNEL and answer.get("delivery", {}).get("type") == "webhook":
        url = answer["delivery"].get("target")
    else:
        return None
    try:
        check_outbound_url(url, POLICY)
    except InvalidInput as exc:
        raise AssertionError(f"accepted and stored {url!r}, which the rule refuses: {exc}") from exc
    return True
