"""Schemathesis hooks for the hostile-input drill (loaded through SCHEMATHESIS_HOOKS).

Generated bodies may set outbound URLs (the gateway, webhook channels); every such string is
pointed at a closed loopback port before the request goes out, so the fuzzed server never calls
anything but loopback. Everything else about the generated request is left as it is.
"""

from __future__ import annotations

from typing import Any

import schemathesis

SAFE_URL = "http://127.0.0.1:9/fuzz"  # the discard port: nothing listens, so a call is refused


def _loopback(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: SAFE_URL if k == "url" and isinstance(v, str) else _loopback(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_loopback(v) for v in value]
    return value


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if "json" in kwargs:
        kwargs["json"] = _loopback(kwargs["json"])
