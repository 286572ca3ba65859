"""The whole story, as a user clicks it: sign in, build a conditional campaign with a target
group file, watch the approved count rise while the kit's listener approves, read and export the
outcome table; set the gateway and send a test decision; create a triggered campaign (an invalid
condition shows its error), send an event, find the decision in the explorer and in "Why not?"."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_cli import Served
from tests.console.support import Kit, engine, sign_in

GOOD = {f"C-{i:02d}": 50 for i in range(24)}
LOW = {f"L-{i:02d}": 5 for i in range(6)}  # refused by the rule "minimum deposit"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Kit, Path]]:
    tmp = tmp_path_factory.mktemp("console-story")
    served = engine(tmp)
    kit = Kit(served.url, tmp, {**GOOD, **LOW})
    try:
        yield served, kit, tmp
    finally:
        kit.stop()
        served.stop()


@pytest.fixture
def page(browser: Any, world: tuple[Served, Kit, Path]) -> Iterator[Any]:
    # bypass_csp: Playwright evaluates its waits as strings; it also lets an injected script
    # run, so an XSS check sees escaping alone, not the Content-Security-Policy
    context = browser.new_context(accept_downloads=True, bypass_csp=True)
    p = context.new_page()
    p.set_default_timeout(15_000)
    sign_in(p, world[0].url)
    yield p
    context.close()


def test_scheduled_story(page: Any, world: tuple[Served, Kit, Path]) -> None:
    served, kit, tmp = world
    base = served.url
    # the listener, registered by clicking
    page.get_by_role("link", name="Listeners").click()
    page.get_by_label("Listener URL").fill(kit.listener_url)
    page.get_by_role("button", name="Register").click()
    assert page.get_by_role("cell", name=kit.listener_url).is_visible()

    target = tmp / "target.csv"
    target.write_text("customer_id,Country\n" + "".join(f"{c},UK\n" for c in {**GOOD, **LOW}))
    broken = tmp / "broken.csv"
    broken.write_text("customer_id\nC-1\nC-1\n\u0001bad\n")

    page.get_by_role("link", name="Campaign Builder").click()
    # a file with errors: the count and the first errors, before anything is saved
    page.get_by_label("Target group file").set_input_files(str(broken))
    page.wait_for_selector("#target-summary")
    assert "2 invalid" in page.locator("#target-summary").inner_text()
    assert "appears twice" in page.locator("#target-preview").inner_text()

    execute_at = datetime.now(UTC) + timedelta(seconds=24)
    page.get_by_label("Name").fill("Reload bonus")
    page.get_by_label("Execute at").fill(execute_at.strftime("%Y-%m-%d %H:%M:%S"))
    page.get_by_label("Other channel ID").fill("504")
    page.get_by_label("Promo codes").fill("RELOAD10")
    assert page.get_by_label("Conditional Execution", exact=True).is_checked()
    page.get_by_label("Clearance lead (seconds, optional)").fill("12")
    expected_crb = (execute_at - timedelta(seconds=12)).strftime("%Y-%m-%d %H:%M:%S")
    page.wait_for_function(
        "t => document.getElementById('crb-preview').textContent.startsWith(t)",
        arg=expected_crb,
    )
    page.get_by_label("Target group file").set_input_files(str(target))
    page.wait_for_function(
        "document.getElementById('target-summary')?.textContent.includes('30 rows')"
    )
    assert "all valid" in page.locator("#target-summary").inner_text()
    page.get_by_role("button", name="Schedule").click()
    page.wait_for_url("**/console/campaigns/*")
    assert page.locator("h1").inner_text().startswith("Reload bonus")

    # approvals arrive while the page stays put: the counter rises without a reload
    seen: list[int] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = page.locator("#count-approved").inner_text()
        if not seen or seen[-1] != int(text):
            seen.append(int(text))
        if seen[-1] == len(GOOD):
            break
        time.sleep(0.05)
    assert seen[-1] == len(GOOD), seen
    assert len(seen) >= 3, f"the count did not rise in steps: {seen}"
    assert page.locator("#approval-progress").get_attribute("value") == str(len(GOOD))

    # after execution the page shows the outcome table (it reloads itself on each state change)
    page.wait_for_selector("#customers-table", timeout=40_000)
    page.wait_for_function(
        "document.getElementById('state').textContent === 'executed'", timeout=40_000
    )
    headers = page.locator("#customers-table thead th").all_inner_texts()
    assert headers[:3] == ["Customer", "Outcome", "Reason"]
    assert page.locator("#count-sent").inner_text() == str(len(GOOD))
    assert page.locator("#count-excluded").inner_text() == str(len(LOW))
    page.get_by_label("Outcome").select_option("excluded")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#customers-table tbody tr").all_inner_texts()
    assert len(rows) == len(LOW) and all("refused" in r for r in rows), rows
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    exported = list(csv.DictReader(Path(download.value.path()).read_text().splitlines()))
    assert {r["customer_id"] for r in exported} == set(LOW)
    assert {r["reason"] for r in exported} == {"refused"}

    # "Why not?" for a refused customer
    page.get_by_role("link", name="Why not?").click()
    page.get_by_label("Customer ID").fill("L-03")
    page.get_by_role("button", name="Explain").click()
    row = page.locator("#whynot-campaigns tbody tr").first.inner_text()
    assert "Reload bonus" in row and "excluded" in row and "refused" in row
    assert "key_" in row  # the key whose call refused them (the listener's)
    assert base  # the engine is the one served above


def test_triggered_story(page: Any, world: tuple[Served, Kit, Path]) -> None:
    served, kit, _ = world
    page.get_by_role("link", name="Gateway").click()
    page.get_by_label("URL").fill(kit.gateway_url)
    page.get_by_label("Timeout (ms)").fill("1500")
    page.get_by_role("button", name="Save gateway").click()
    assert page.get_by_label("Timeout (ms)").input_value() == "1500"
    page.get_by_label("User ID").fill("L-01")
    page.get_by_role("button", name="Send test decision").click()
    result = page.locator("#test-result").inner_text()
    assert "denied" in result and "minimum deposit" in result and "ms" in result
    page.get_by_label("User ID").fill("C-01")
    page.get_by_role("button", name="Send test decision").click()
    assert "allowed" in page.locator("#test-result").inner_text()
    # the timeout control is limited to 0-2500 ms
    page.get_by_label("Timeout (ms)").evaluate("el => el.removeAttribute('max')")
    page.get_by_label("Timeout (ms)").fill("3000")
    page.get_by_role("button", name="Save gateway").click()
    assert "from 0 to 2500" in page.locator("#gateway-form").inner_text()

    page.get_by_role("link", name="Triggered").click()
    page.get_by_role("link", name="New triggered campaign").click()
    page.get_by_label("ID", exact=True).fill("T-100")
    page.get_by_label("Trigger event").fill("deposit")
    page.get_by_label("Condition (CEL)").fill("deposit_amount >=")
    page.wait_for_function("document.getElementById('error-condition').textContent.length > 0")
    assert "does not compile" in page.locator("#error-condition").inner_text()
    # saved anyway (no script needed): refused with the compiler's message
    page.get_by_role("button", name="Save").click()
    assert "does not compile" in page.locator("#error-condition").inner_text()
    page.get_by_label("Condition (CEL)").fill("deposit_amount >= 100")
    page.wait_for_function("document.getElementById('error-condition').textContent === ''")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/console/triggered")
    assert "deposit_amount >= 100" in page.locator("#triggered-table").inner_text()

    for user in ("C-05", "L-05"):
        reply = served.http.post(
            "/api/v1/events",
            json={"customer_id": user, "event": "deposit", "params": {"deposit_amount": 150}},
        )
        assert reply.status_code == 200, reply.text

    page.get_by_role("link", name="Decisions").click()
    page.get_by_label("Campaign").fill("T-100")
    page.get_by_role("button", name="Filter").click()
    table = page.locator("#decisions-table").inner_text()
    assert "C-05" in table and "allowed" in table
    assert "L-05" in table and "minimum deposit" in table
    assert page.locator("svg[aria-label='Latency histogram']").is_visible()
    assert "p50" in page.locator(".charts").inner_text()

    page.get_by_role("link", name="Why not?").click()
    page.get_by_label("Customer ID").fill("L-05")
    page.get_by_role("button", name="Explain").click()
    row = page.locator("#whynot-decisions tbody tr").first.inner_text()
    assert "T-100" in row and "denied" in row and "minimum deposit" in row
