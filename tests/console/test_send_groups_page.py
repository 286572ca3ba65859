"""The campaign page shows a V2 campaign's send groups, each with its own countdown and counts,
and the heads-up banner for the group whose ClearanceRequiredBy is within the heads-up lead."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_cli import Served
from tests.console.support import engine, sign_in
from tests.helpers import wait_until

APPROVE = "/current/integrations/UpdateCustomerPromotionStatus"


def _t(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S+00:00")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = engine(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def test_groups_with_countdowns_counts_and_a_heads_up_banner(browser: Any, served: Served) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    soon = now + timedelta(minutes=40)  # the default 30 min lead: its deadline in 10 min
    later = now + timedelta(hours=3)  # its deadline in 2 h 30 min: no heads-up yet
    body = {
        "campaign_id": 910,
        "name": "Two send times",
        "execute_at": _t(soon),
        "conditional": True,
        "action": {"id": 77, "name": "Reload", "promo_codes": ["R10"]},
        "channels": [{"id": 504, "name": "Email", "templates": [{"id": 9}, {"id": 10}]}],
        "target_group": [
            {"customer_id": "a1"},
            {"customer_id": "a2"},
            {"customer_id": "b1", "send_at": _t(later), "template_id": 10},
            {"customer_id": "b2", "send_at": _t(later), "template_id": 10},
            {"customer_id": "b3", "send_at": _t(later), "template_id": 10},
        ],
    }
    r = served.http.post("/api/v1/campaigns", json=body)
    assert r.status_code == 201, r.text

    def processed() -> bool:
        r = served.http.get("/api/v1/campaigns/910/send-groups")
        return r.status_code == 200 and len(r.json()) == 2

    wait_until("the two send groups processed", 20, processed)
    r = served.http.post(
        APPROVE,
        json={
            "TimeStamp": now.strftime("%Y-%m-%d %H:%M:%S"),
            "CampaignID": 910,
            "PromosUpdated": [
                {"CustomerID": "a1", "Status": True},
                {"CustomerID": "b1", "Status": True},
            ],
        },
    )
    assert r.status_code == 200, r.text

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        sign_in(page, served.url)
        page.goto(served.url + "/console/campaigns/910")
        rows = page.locator("#send-groups-table tbody tr")
        assert rows.count() == 2
        first, second = rows.nth(0).inner_text(), rows.nth(1).inner_text()
        assert "9@" in first and "awaiting" in first
        assert "10@" in second and "awaiting" in second
        cells = [rows.nth(i).locator("td") for i in range(2)]
        assert [c.nth(5).inner_text() for c in cells] == ["1", "1"]  # approved
        assert [c.nth(6).inner_text() for c in cells] == ["2", "3"]  # target
        # each group's own countdown, ticking in the browser
        assert cells[0].nth(3).locator(".countdown").inner_text().startswith("in 9m")
        assert cells[1].nth(3).locator(".countdown").inner_text().startswith("in 2h 29m")
        banners = page.locator(".banner.heads-up")
        assert banners.count() == 1
        text = banners.inner_text()
        assert "9@" in text and "1 of 2 approved (50 %)" in text and "at risk" in text
    finally:
        context.close()
