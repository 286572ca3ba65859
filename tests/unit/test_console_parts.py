"""The console's pure parts and the gateway's optional reason: target group files, the at-risk
projection, percentiles, and `judge` keeping a gateway's `reason` (the wire stays compatible)."""

from __future__ import annotations

import orjson

from clearance.console.charts import latency_histogram, outcome_bars, percentiles
from clearance.console.csvcell import row as csv_row
from clearance.console.progress import project
from clearance.console.targetfile import parse_target_file
from clearance.triggered.gate import MAX_REASON_CHARS, Outcome, judge


def answer(**fields: object) -> bytes:
    return orjson.dumps({"user_id": "C-1", **fields})


def test_gateway_reason_is_kept_and_optional() -> None:
    plain = judge(200, answer(allowed=False), "C-1", 1.0)
    assert plain.outcome == Outcome.DENIED and plain.reason == "the gateway answered allowed: false"
    said = judge(200, answer(allowed=False, reason="minimum deposit: 5 < 20"), "C-1", 1.0)
    assert said.outcome == Outcome.DENIED
    assert said.reason == "the gateway answered allowed: false (minimum deposit: 5 < 20)"
    assert judge(200, answer(allowed=True), "C-1", 1.0).reason is None
    assert judge(200, answer(allowed=True, reason="vip"), "C-1", 1.0).reason == "gateway: vip"
    # a reason that is not a string is ignored, never an error; control characters are dropped
    odd = judge(200, answer(allowed=True, reason={"x": 1}), "C-1", 1.0)
    assert odd.outcome == Outcome.ALLOWED and odd.reason is None
    long = judge(200, answer(allowed=False, reason="a\nb" + "x" * 2000), "C-1", 1.0)
    assert long.reason is not None and "\n" not in long.reason
    assert len(long.reason) <= MAX_REASON_CHARS + 60
    # still: only a JSON true allows
    assert judge(200, answer(allowed="true", reason="ok"), "C-1", 1.0).outcome == Outcome.INVALID


def test_target_file_counts_rows_and_names_the_first_errors() -> None:
    ok = parse_target_file("t.csv", b"customer_id,Country\nC-1,UK\nC-2,IE\n")
    assert ok.ok and len(ok.rows) == 2 and ok.rows[0] == ("C-1", '{"Country":"UK"}')
    bad = parse_target_file("t.csv", b"customer_id\nC-1\nC-1\n" + b"\x01\n" * 20)
    assert bad.error_count == 21 and len(bad.errors) == 10
    assert "appears twice" in bad.errors[0]
    nd = parse_target_file("t.ndjson", b'{"customer_id": "C-1"}\nnot json\n{"x": 1}\n')
    assert len(nd.rows) == 1 and nd.error_count == 2
    assert parse_target_file("t.csv", b"id\nC-1\n").error_count == 1
    assert not parse_target_file("t.csv", b"customer_id\n").ok
    assert parse_target_file("t.csv", b"\xff\xfe").errors == ["the file is not UTF-8 text"]


def test_projection_warns_before_it_is_too_late() -> None:
    # 100 of 1000 reviewed in 10 s; 60 s left: 900 more need 90 s -> at risk
    risky = project(1000, 100, 0, 70_000, 10_000, frozen=False)
    assert risky.status == "at_risk" and risky.projected_reviewed == 700
    fine = project(1000, 500, 0, 70_000, 10_000, frozen=False)
    assert fine.status == "on_track"
    assert project(10, 0, 0, 70_000, 1_000, frozen=False).status == "waiting"
    assert project(10, 0, 0, 70_000, 30_000, frozen=False).status == "at_risk"
    assert project(10, 10, 0, 70_000, 30_000, frozen=False).status == "done"
    assert project(10, 3, 0, 70_000, 80_000, frozen=True).status == "frozen"


def test_charts_escape_and_mark_percentiles() -> None:
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p.p50, p.p95, p.p99) == (50.0, 95.0, 99.0)
    svg = str(outcome_bars({"<script>": 3, "allowed": 1}))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    hist = str(latency_histogram([1.0, 2.0, 3.0, 40.0]))
    assert "p50" in hist and "p99" in hist


def test_csv_cells_never_start_a_formula() -> None:
    hostile = ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "plain", "", 7, None]
    assert csv_row(hostile) == [
        "'=1+2",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "plain",
        "",
        7,
        None,
    ]


def test_a_console_target_file_with_send_group_columns_is_refused():
    """send_at / template_id would be read as attributes (every customer at execute_at)."""
    for header in ("customer_id,send_at", "customer_id,tier,template_id"):
        parsed = parse_target_file("t.csv", f"{header}\na,2026-01-01 16:00:00\n".encode())
        assert not parsed.ok and "send groups" in parsed.errors[0]
