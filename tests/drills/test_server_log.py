"""The server-log check of the soak and the hostile-input drill (bench/serverlog.py) can fail.

The lines are made by the server's own JSON formatter (clearance.logs.configure_logging), so a
change in the log format (a renamed level field, say) shows here rather than silently passing
both drills.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest
from bench import serverlog

from clearance.logs import configure_logging


@pytest.fixture
def server_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the server's logging writes to stderr, as JSON lines; the root logger, the record
    factory and stderr are put back afterwards."""
    root = logging.getLogger()
    handlers, level, factory = root.handlers[:], root.level, logging.getLogRecordFactory()
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    configure_logging("json")
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.setLogRecordFactory(factory)


def test_info_lines_pass(server_log: io.StringIO) -> None:
    logging.getLogger("clearance.access").info("GET /healthz 200")
    logging.getLogger("clearance").info("clearance serving on http://127.0.0.1:1")
    assert server_log.getvalue().count("\n") == 2
    assert serverlog.trouble(server_log.getvalue()) == []
    assert serverlog.trouble("\n\n" + server_log.getvalue() + "\n") == []  # blank lines


def test_warnings_and_errors_are_caught(server_log: io.StringIO) -> None:
    log = logging.getLogger("clearance.worker")
    log.info("fine")
    log.warning("campaign 1: POST failed; retrying")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("campaign 1 step failed")
    log.critical("gone")
    caught = serverlog.trouble(server_log.getvalue())
    assert [line.split('"message": ')[1].split('"')[1] for line in caught] == [
        "campaign 1: POST failed; retrying",
        "campaign 1 step failed",
        "gone",
    ]
    # the soak counts warnings; a drill that provokes warnings on purpose counts errors only
    assert len(serverlog.trouble(server_log.getvalue(), logging.ERROR)) == 2


def test_a_line_that_is_not_a_json_log_line_is_caught(server_log: io.StringIO) -> None:
    logging.getLogger("clearance").info("fine")
    traceback = "\n".join(
        ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "KeyError"]
    )
    text = server_log.getvalue() + traceback + "\n[1, 2]\n" + '{"message": "no level"}\n'
    caught = serverlog.trouble(text, logging.CRITICAL)
    assert caught == [*traceback.splitlines(), "[1, 2]", '{"message": "no level"}']
    # the text format is not read as levels: every line of it counts
    plain = "2026-01-01 00:00:00,000 INFO clearance [None] clearance serving\n"
    assert serverlog.trouble(plain) == [plain.strip()]


def test_only_the_expected_warning_is_let_through(server_log: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("uvicorn.error").warning("something else")
    expected = [("uvicorn.error", "Invalid HTTP request received.")]
    caught = serverlog.trouble(server_log.getvalue(), expected=expected)
    assert len(caught) == 1 and "something else" in caught[0]
