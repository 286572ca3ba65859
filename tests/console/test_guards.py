"""The console's guards, in the browser: every free-text field renders as text (an XSS attempt
never runs), a form posted without its CSRF token is refused, integrations keys and wrong
passwords get no console, sign-out ends the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_cli import KEY, Served
from tests.console.support import engine, sign_in

XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>"\'&'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = engine(tmp_path_factory.mktemp("console-guards"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    # bypass_csp: an injected script would run, so only escaping keeps __xss unset
    context = browser.new_context(bypass_csp=True)
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()


def no_script_ran(page: Any) -> None:
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0


def test_free_text_renders_as_text(page: Any, served: Served, tmp_path: Path) -> None:
    sign_in(page, served.url)
    # campaign name and promo codes (a draft), and a target group file with a hostile id
    page.goto(served.url + "/console/campaigns/new")
    page.get_by_label("Name").fill(XSS)
    page.get_by_label("Execute at").fill("2030-01-01 10:00:00")
    page.get_by_label("Other channel ID").fill("504")
    page.get_by_label("Promo codes").fill(XSS.replace(" ", ""))
    hostile = tmp_path / "t.ndjson"
    hostile.write_text('{"customer_id": "<b>x</b>", "attributes": {"n": "<script>1</script>"}}\n')
    page.get_by_label("Target group file").set_input_files(str(hostile))
    page.wait_for_selector("#target-summary")
    page.get_by_role("button", name="Save draft").click()
    page.wait_for_url("**/console/campaigns/*")
    assert XSS in page.locator("h1").inner_text()
    no_script_ran(page)
    page.goto(served.url + "/console/campaigns")
    assert XSS in page.locator("#campaigns").inner_text()
    no_script_ran(page)
    page.goto(served.url + "/console/campaigns?q=" + "%3Cscript%3Ewindow.__xss%3D1%3C%2Fscript%3E")
    no_script_ran(page)
    # a builder error echoes what was typed
    page.goto(served.url + "/console/campaigns/new")
    page.get_by_label("Name").fill(XSS)
    page.get_by_label("Execute at").fill(XSS)
    page.get_by_role("button", name="Save draft").click()
    assert page.get_by_label("Execute at").input_value() == XSS
    no_script_ran(page)
    # triggered campaign: id, event, condition, action name, notes
    page.goto(served.url + "/console/triggered/edit")
    page.get_by_label("ID", exact=True).fill(XSS)
    page.get_by_label("Trigger event").fill(XSS)
    page.get_by_label("Action name").fill(XSS)
    page.get_by_label("Notes").fill(XSS)
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/console/triggered")
    assert XSS in page.locator("#triggered-table").inner_text()
    no_script_ran(page)
    page.get_by_role("link", name=XSS).first.click()
    assert page.get_by_label("Notes").input_value() == XSS
    page.get_by_label("Condition (CEL)").fill(XSS)
    page.get_by_role("button", name="Save").click()
    no_script_ran(page)
    # key name, why-not customer, decision filters, gateway URL, listener URL
    page.goto(served.url + "/console/keys")
    page.get_by_label("Name").fill(XSS)
    page.get_by_role("button", name="Create key").click()
    assert XSS in page.locator("#keys-table").inner_text()
    no_script_ran(page)
    page.goto(served.url + "/console/why-not")
    page.get_by_label("Customer ID").fill(XSS)
    page.get_by_role("button", name="Explain").click()
    assert XSS in page.locator("main").inner_text()
    no_script_ran(page)
    page.goto(served.url + "/console/decisions")
    page.get_by_label("Campaign").fill(XSS)
    page.get_by_label("User").fill(XSS)
    page.get_by_label("From").fill(XSS)
    page.get_by_role("button", name="Filter").click()
    no_script_ran(page)
    page.goto(served.url + "/console/gateway")
    page.get_by_label("URL").fill("http://" + XSS)
    page.get_by_role("button", name="Save gateway").click()
    no_script_ran(page)
    page.goto(served.url + "/console/listeners")
    page.get_by_label("Listener URL").fill("http://" + XSS)
    page.get_by_role("button", name="Register").click()
    no_script_ran(page)
    page.goto(served.url + "/console/audit")
    assert XSS in page.locator("#audit-table").inner_text()
    no_script_ran(page)


def test_form_without_csrf_token_is_refused(page: Any, served: Served) -> None:
    sign_in(page, served.url)
    page.goto(served.url + "/console/keys")
    before = page.locator("#keys-table tbody tr").count()
    refused = page.request.post(
        served.url + "/console/keys", form={"type": "admin", "name": "forged"}
    )
    assert refused.status == 403
    wrong = page.request.post(
        served.url + "/console/keys", form={"type": "admin", "name": "forged", "csrf": "x" * 64}
    )
    assert wrong.status == 403
    page.reload()
    assert page.locator("#keys-table tbody tr").count() == before
    assert "forged" not in page.locator("#keys-table").inner_text()
    # the same form with its token works (the test can fail)
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    ok = page.request.post(
        served.url + "/console/keys", form={"type": "integrations", "name": "real", "csrf": token}
    )
    assert ok.status == 200
    # the sign-in form too needs its own token
    assert (
        page.request.post(
            served.url + "/console/sign-in", form={"user": "ops", "password": "pa55word"}
        ).status
        == 403
    )


def test_integrations_key_and_wrong_password_get_no_console(page: Any, served: Served) -> None:
    made = served.http.post("/api/v1/keys", json={"type": "integrations", "name": "partner"})
    integrations_key = made.json()["key"]
    sign_in(page, served.url, user="", password=integrations_key)
    assert "no console access" in page.locator(".error").inner_text()
    page.goto(served.url + "/console/campaigns")
    assert page.url.endswith("/console/sign-in")
    sign_in(page, served.url, user="ops", password="wrong-password")
    assert "Wrong user or password" in page.locator(".error").inner_text()
    page.goto(served.url + "/console/keys")
    assert page.url.endswith("/console/sign-in")
    # an admin key does sign in, and its cookie is HttpOnly and SameSite
    sign_in(page, served.url, user="", password=KEY)
    page.wait_for_url("**/console/campaigns")
    cookie = next(c for c in page.context.cookies() if c["name"] == "clearance_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    page.goto(served.url + "/console/campaigns")
    assert page.url.endswith("/console/sign-in")


def test_a_user_created_with_the_cli_signs_in(page: Any, served: Served) -> None:
    from tests.acceptance.test_cli import run_cli

    url = served.env["CLEARANCE_DATABASE_URL"]
    short = run_cli(
        "users", "create", "alice", "--database-url", url, env={"CLEARANCE_NEW_PASSWORD": "short"}
    )
    assert short.returncode == 2 and "8 to 1000" in short.stderr
    made = run_cli(
        "users",
        "create",
        "alice",
        "--database-url",
        url,
        env={"CLEARANCE_NEW_PASSWORD": "alice-s3cret"},
    )
    assert made.returncode == 0, made.stderr
    assert "alice-s3cret" not in made.stdout + made.stderr
    sign_in(page, served.url, user="alice", password="alice-s3cret")
    page.wait_for_url("**/console/campaigns")
    assert page.locator(".who").inner_text() == "alice"
    # an integrations user gets no console
    run_cli(
        "users",
        "create",
        "bob",
        "--access",
        "integrations",
        "--database-url",
        url,
        env={"CLEARANCE_NEW_PASSWORD": "bob-s3cret-pw"},
    )
    page.context.clear_cookies()
    sign_in(page, served.url, user="bob", password="bob-s3cret-pw")
    assert "no console access" in page.locator(".error").inner_text()
