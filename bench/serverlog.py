"""Reading a `clearance serve` log for the drills and benches: which lines are trouble.

The server logs one JSON object per line (src/clearance/logs.py), its level under `level`. A line
counts as trouble when its level is `at_least` or above, and also when it cannot be read as such a
line: not JSON (a traceback, a print, a crash of the interpreter), not an object, or without a
known level. A check built on this fails on anything it cannot read, rather than passing it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import orjson

LEVELS = logging.getLevelNamesMapping()


def trouble(
    text: str, at_least: int = logging.WARNING, expected: Collection[tuple[str, str]] = ()
) -> list[str]:
    """The lines of a server log at `at_least` or above, or that are not a log line at all;
    `expected`: (logger, message) pairs the caller provokes on purpose, not counted."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            found.append(line)
            continue
        if not isinstance(record, dict):
            found.append(line)
            continue
        level = record.get("level")
        if isinstance(level, str) and LEVELS.get(level.upper(), logging.CRITICAL) < at_least:
            continue
        if isinstance(level, str) and (record.get("logger"), record.get("message")) in expected:
            continue
        found.append(line)
    return found
