from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from clearance.domain import (
    check_customer_id,
    check_page,
    clearance_required_by,
    format_wire_time,
    parse_time,
)
from clearance.errors import InvalidInput

T = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_clearance_required_by_defaults_to_thirty_minutes_before_execution():
    assert clearance_required_by(T, [None], None) == T - timedelta(minutes=30)


def test_clearance_required_by_uses_the_longest_channel_lead():
    assert clearance_required_by(T, [600, 3600, None], None) == T - timedelta(hours=1)
    assert clearance_required_by(T, [60, 120], None) == T - timedelta(seconds=120)


def test_campaign_lead_overrides_the_channels():
    assert clearance_required_by(T, [3600], 300) == T - timedelta(seconds=300)


def test_zone_less_times_are_in_the_site_time_zone():
    athens = ZoneInfo("Europe/Athens")
    parsed = parse_time("2026-06-01 15:00:00", athens, "execute_at")
    assert parsed == T  # 15:00 in Athens (UTC+3 in June) is 12:00 UTC
    assert format_wire_time(parsed, athens) == "2026-06-01 15:00:00"


def test_times_with_an_offset_keep_it():
    assert parse_time("2026-06-01T14:00:00+02:00", ZoneInfo("UTC"), "x") == T
    assert parse_time("2026-06-01T12:00:00Z", ZoneInfo("Asia/Tokyo"), "x") == T


@pytest.mark.parametrize("bad", ["", "tomorrow", "2026-13-01 00:00:00", "01/06/2026"])
def test_bad_times_name_the_field(bad):
    with pytest.raises(InvalidInput) as err:
        parse_time(bad, ZoneInfo("UTC"), "execute_at")
    assert err.value.field == "execute_at"


def test_paging_defaults_and_bounds():
    assert check_page(None, None) == (10_000, 0)
    assert check_page(100_000, 5) == (100_000, 5)
    for top, skip in [(0, 0), (100_001, 0), (-1, 0), (10, -1)]:
        with pytest.raises(InvalidInput):
            check_page(top, skip)


def test_customer_ids():
    assert check_customer_id("C-1") == "C-1"
    assert check_customer_id(42) == "42"
    for bad in ["", "x" * 201, "a\x00b", "tab\there", None, True, 1.5, ["a"]]:
        with pytest.raises(InvalidInput):
            check_customer_id(bad)
