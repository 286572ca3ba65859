"""The server's JSON log lines (clearance.logs.JsonLines) are python-json-logger's, byte for byte:
the quick route for plain lines must not change what a log reader (bench/serverlog.py, a
collector) gets, and anything unusual still goes python-json-logger's way."""

from __future__ import annotations

import datetime
import logging
import sys

import pytest
from pythonjsonlogger.json import JsonFormatter

from clearance.logs import JsonLines, install_request_ids, log_access, request_id

REFERENCE = JsonFormatter(
    "{levelname}{name}{message}{request_id}",
    style="{",
    rename_fields={"levelname": "level", "name": "logger"},
    timestamp="time",
)


def record(msg: object, args: tuple[object, ...] = (), **extra: object) -> logging.LogRecord:
    made = logging.getLogger("clearance.test").makeRecord(
        "clearance.test", logging.INFO, __file__, 1, msg, args, None, extra=extra
    )
    made.request_id = "rid-1"
    return made


@pytest.mark.parametrize(
    "made",
    [
        record("plain"),
        record("%s %s %s", ("POST", "/api/v1/events", 200), method="POST", status=200, caller=None),
        record('ünïcode ✓ "quoted" \\ \n', (), note="é", n=1.5, flag=True, items=[1, "a"]),
        record("odd extras", (), when=datetime.date(2026, 1, 2), obj=object, _private=1),
        record({"a dict": "message"}),
    ],
)
def test_lines_are_python_json_loggers(made: logging.LogRecord) -> None:
    assert JsonLines().format(made) == REFERENCE.format(made)


def test_exceptions_go_the_general_way() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    made.request_id = None
    line = JsonLines().format(made)
    assert line == REFERENCE.format(made)
    assert "ValueError: boom" in line


def test_the_access_line_carries_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="clearance.access")
    factory = logging.getLogRecordFactory()
    install_request_ids()
    token = request_id.set("acc-9")
    try:
        log_access("POST", "/api/v1/events", 201, 0.0, "key_1")
    finally:
        request_id.reset(token)
        logging.setLogRecordFactory(factory)
    [line] = [r for r in caplog.records if r.name == "clearance.access"]
    assert line.getMessage() == "POST /api/v1/events 201"
    assert line.request_id == "acc-9"  # type: ignore[attr-defined]
    assert (line.method, line.path, line.status, line.caller) == (  # type: ignore[attr-defined]
        "POST",
        "/api/v1/events",
        201,
        "key_1",
    )
    assert line.duration_ms > 0  # type: ignore[attr-defined]
