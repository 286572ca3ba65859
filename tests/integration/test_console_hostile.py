"""The console under a hostile review, over real HTTP on loopback against a real SQLite file:
sessions that must end (a revoked key, a demoted or re-passworded user), CSV exports that a
spreadsheet must not run, numbers that are not ASCII digits, listener rules the API enforces,
target group files with surprising rows, and sign-in guesses with a key."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clearance.config import Settings
from clearance.domain import State
from clearance.scheduled.service import ScheduledService
from clearance.store import GatewayConfig, Store
from tests.conftest import AsgiServer, serve_api
from tests.helpers import new_campaign

PASSWORD = "correct horse"
LIMIT = 64 * 1024


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'console.db'}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        file_channel_dir=str(tmp_path / "sends"),
        outbound_timeout_seconds=2.0,
        outbound_allow="127.0.0.0/8",
        max_body_bytes=LIMIT,
    )


OPEN: list[httpx.Client] = []


@pytest.fixture
def server(engine: ScheduledService) -> Iterator[AsgiServer]:
    s = serve_api(engine)
    yield s
    while OPEN:
        OPEN.pop().close()
    s.stop()


def browser(server: AsgiServer) -> httpx.Client:
    c = httpx.Client(base_url=server.url, timeout=10, follow_redirects=False)
    OPEN.append(c)
    return c


def sign_in(c: httpx.Client, user: str, password: str) -> httpx.Response:
    form = c.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    return c.post(
        "/console/sign-in", data={"user": user, "password": password, "csrf": token.group(1)}
    )


def csrf_of(c: httpx.Client, path: str = "/console/campaigns") -> str:
    found = re.search(r'data-csrf="([^"]+)"', c.get(path).text)
    assert found is not None
    return found.group(1)


def signed_in(server: AsgiServer, user: str, password: str) -> httpx.Client:
    c = browser(server)
    assert sign_in(c, user, password).status_code == 303
    assert c.get("/console/campaigns").status_code == 200
    return c


# --- sessions -------------------------------------------------------------------------------------
def test_a_revoked_keys_session_is_no_api_token_either(server: AsgiServer, store: Store) -> None:
    key_id, key = store.create_api_key("admin", "ops", 0)
    c = signed_in(server, "", key)
    token = c.cookies["clearance_console"]
    as_token = {"Authorization-Token": token}
    api = browser(server)
    assert api.get("/api/v1/keys", headers=as_token).status_code == 200
    other = store.create_api_key("admin", "other", 0)[1]
    revoked = api.delete(f"/api/v1/keys/{key_id}", headers={"X-API-KEY": other})
    assert revoked.status_code in (200, 204)
    assert c.get("/console/campaigns").status_code == 303  # the console ends it
    # and the same token is no Authorization-Token for the API any more
    assert api.get("/api/v1/keys", headers=as_token).status_code == 401


def test_a_demoted_user_loses_the_console(server: AsgiServer, store: Store) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    store.upsert_user("ops", PASSWORD, "integrations", 0)
    assert c.get("/console/campaigns").status_code == 303
    assert c.get("/console/keys", headers={"Accept": "application/json"}).status_code == 401


def test_a_new_password_ends_the_old_sessions(server: AsgiServer, store: Store) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    kept = signed_in(server, "ops", PASSWORD)
    store.upsert_user("ops", PASSWORD, "admin", 0)  # the same password again (a restart): kept
    assert kept.get("/console/campaigns").status_code == 200
    store.upsert_user("ops", "a new secret", "admin", 0)
    assert kept.get("/console/campaigns").status_code == 303


def test_a_deleted_user_loses_the_console(server: AsgiServer, store: Store) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    with store.db.transaction() as tx:
        tx.execute("DELETE FROM users WHERE username = ?", ("ops",))
    assert c.get("/console/campaigns").status_code == 303


# --- CSV exports --------------------------------------------------------------------------------
FORMULAS = ["=1+2", "+1+2", "-1+2", "@SUM(A1)", "\tTAB", '=HYPERLINK("http://x")']


def test_csv_export_neutralises_formulas(
    server: AsgiServer, store: Store, engine: ScheduledService
) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    campaign = new_campaign(engine, customer_ids=[*FORMULAS, "plain-1"])
    engine.cancel(campaign.campaign_id)
    assert store.get_campaign(campaign.campaign_id).state == State.CANCELED
    got = c.get(f"/console/campaigns/{campaign.campaign_id}/customers.csv")
    assert got.status_code == 200
    cells = [row[0] for row in csv.reader(io.StringIO(got.text))][1:]
    assert "plain-1" in cells
    for cell in cells:
        assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), cell
    assert "'=1+2" in cells  # kept readable: one quote in front


# --- numbers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/console/gateway", {"url": "http://127.0.0.1:9/", "timeout_ms": "²"}),
        ("/console/listeners", {"url": "http://127.0.0.1:9/", "event_type_id": "²"}),
        ("/console/triggered/save", {"id": "t1", "event": "deposit", "channel_id": "²"}),
    ],
)
def test_unicode_digits_are_refused_not_a_crash(
    server: AsgiServer, store: Store, path: str, fields: dict[str, str]
) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    got = c.post(path, data={**fields, "csrf": csrf_of(c)})
    assert got.status_code in (303, 400), got.text[:300]
    assert store.get_gateway() is None and not store.list_listeners()
    assert not store.list_triggered()


# --- listeners: the API's rules -----------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        {"event_type_id": "999"},
        {"event_type_id": "0"},
        {"event_type_id": "5", "channel_id": "504"},
        {"event_type_id": "13", "channel_id": "4294967296"},
    ],
)
def test_listener_rules_are_the_apis(
    server: AsgiServer, store: Store, fields: dict[str, str]
) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    got = c.post(
        "/console/listeners",
        data={**fields, "url": "http://127.0.0.1:9/", "csrf": csrf_of(c, "/console/listeners")},
    )
    assert got.status_code == 303 and "error=" in got.headers["location"]
    assert not store.list_listeners()


# --- target group files --------------------------------------------------------------------------
def test_a_csv_row_with_fewer_cells_refuses(
    server: AsgiServer, store: Store, engine: ScheduledService
) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    draft = c.post(
        "/console/campaigns/new",
        data={
            "csrf": csrf_of(c),
            "name": "short rows",
            "execute_at": "2030-01-01 10:00:00",
            "other_channel": "504",
            "action": "draft",
        },
        files={"target_file": ("t.csv", b"customer_id,country\nc1,UK\nc2\n", "text/csv")},
    )
    assert draft.status_code == 400
    assert "fewer cells" in draft.text
    assert not store.list_campaigns(None, None, 10)


def test_every_console_post_needs_its_csrf_token(server: AsgiServer, store: Store) -> None:
    """Enumerated from the app itself: a new POST route without `poster` fails here."""
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)

    def walk(routes: list[object]) -> list[tuple[str, set[str]]]:
        out: list[tuple[str, set[str]]] = []
        for r in routes:
            inner = getattr(getattr(r, "original_router", None), "routes", None)
            if inner is not None:
                out += walk(inner)
            elif hasattr(r, "path"):
                out.append((r.path, set(getattr(r, "methods", None) or ())))
        return out

    routes = [
        path.replace("{campaign_id}", "1")
        for path, methods in walk(server.app.routes)
        if path.startswith("/console/") and methods & {"POST", "PUT", "DELETE", "PATCH"}
    ]
    assert len(routes) >= 14
    for path in routes:
        if path == "/console/sign-in":
            continue
        for token in ({}, {"csrf": "x" * 64}):
            got = c.post(path, data={**token, "url": "http://127.0.0.1:9/", "type": "admin"})
            assert got.status_code == 403, path
    assert c.get("/console/campaigns").status_code == 200  # still signed in: nothing changed
    assert len(store.list_api_keys()) == 0 and not store.list_listeners()


# --- sign-in guesses ----------------------------------------------------------------------------
def test_admin_key_guesses_are_throttled(server: AsgiServer, store: Store) -> None:
    key = store.create_api_key("admin", "ops", 0)[1]
    c = browser(server)
    for _ in range(40):
        if sign_in(c, "", "clk_0000_guess").status_code == 429:
            break
    else:
        pytest.fail("40 wrong keys in a row, never throttled")
    # the throttle answers the same for the right key: a guess cannot tell
    assert sign_in(c, "", key).status_code == 429


def test_a_too_large_upload_is_refused_with_a_page(server: AsgiServer, store: Store) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    big = b"customer_id\n" + b"".join(b"c%d\n" % i for i in range(LIMIT // 4))
    fields = {"csrf": csrf_of(c), "name": "big", "execute_at": "2030-01-01 10:00:00"}
    sent = c.post(
        "/console/campaigns/new",
        data={**fields, "other_channel": "504", "action": "schedule"},
        files={"target_file": ("t.csv", big, "text/csv")},
    )
    assert sent.status_code == 413
    assert sent.headers["content-type"].startswith("text/html")
    assert "nothing was saved" in sent.text
    preview = c.post(
        "/console/campaigns/preview",
        files={"target_file": ("t.csv", big, "text/csv")},
        headers={"Accept": "application/json", "X-CSRF-Token": fields["csrf"]},
    )
    assert preview.status_code == 413 and preview.json()["status"] == 413
    assert not store.list_campaigns(None, None, 10)


def test_pages_on_an_empty_database_and_odd_campaigns(
    server: AsgiServer, store: Store, engine: ScheduledService
) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    pages = [
        "/console/campaigns",
        "/console/campaigns?state=executed&q=%25_",
        "/console/campaigns/new",
        "/console/why-not?customer=nobody",
        "/console/triggered",
        "/console/triggered/edit?id=missing",
        "/console/gateway",
        "/console/decisions",
        "/console/decisions?from=2020-01-01%2000:00:00&to=2030-01-01%2000:00:00",
        "/console/decisions.csv",
        "/console/listeners",
        "/console/keys",
        "/console/audit",
    ]
    for path in pages:
        assert c.get(path).status_code == 200, path
    empty = new_campaign(engine, customer_ids=[])
    canceled = new_campaign(engine, 3)
    engine.cancel(canceled.campaign_id)
    for campaign in (empty, canceled):
        for suffix in ("", "?outcome=excluded", "/live", "/customers.csv"):
            got = c.get(f"/console/campaigns/{campaign.campaign_id}{suffix}")
            assert got.status_code == 200, (campaign.campaign_id, suffix)
    for path in ("/console/decisions?after=garbage", "/console/decisions?from=yesterday"):
        assert c.get(path).status_code == 400, path


@pytest.mark.parametrize(
    "path",
    [
        "/console/campaigns/99999999999999999999999",
        "/console/campaigns?q=99999999999999999999999",
        "/console/campaigns/1?after=99999999999999999999999",
    ],
)
def test_huge_numbers_are_no_crash(server: AsgiServer, store: Store, path: str) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    got = c.get(path)
    assert got.status_code in (200, 404, 400), got.text[:200]  # 400: a hand-made pager URL
    assert "text/html" in got.headers["content-type"] or "after" in path


def test_signing_in_again_ends_the_session_it_replaces(server: AsgiServer, store: Store) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    first = c.cookies["clearance_console"]
    assert sign_in(c, "ops", PASSWORD).status_code == 303
    assert c.cookies["clearance_console"] != first
    api = browser(server)
    assert api.get("/api/v1/keys", headers={"Authorization-Token": first}).status_code == 401
    assert c.get("/console/campaigns").status_code == 200


def test_the_test_decision_goes_through_the_outbound_policy(
    server: AsgiServer, store: Store
) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    # saved past the console (an older, looser rule): the call is still judged by the policy
    store.put_gateway(GatewayConfig("http://169.254.169.254/latest/", 500, None, {}), 0)
    got = c.post("/console/gateway/test", data={"csrf": csrf_of(c), "user_id": "u1"})
    assert got.status_code == 200
    assert "outcome-error" in got.text and "169.254.169.254" in got.text
    # and the console refuses to save it, like timeouts outside 0..2500 ms
    for fields in (
        {"url": "http://169.254.169.254/latest/", "timeout_ms": "100"},
        {"url": "http://127.0.0.1:9/", "timeout_ms": "2501"},
        {"url": "http://127.0.0.1:9/", "timeout_ms": "-1"},
    ):
        refused = c.post("/console/gateway", data={**fields, "csrf": csrf_of(c)})
        assert refused.status_code == 400, fields
    gateway = store.get_gateway()
    assert gateway is not None and gateway.timeout_ms == 500


def test_a_new_triggered_campaign_never_replaces_one(server: AsgiServer, store: Store) -> None:
    store.upsert_user("ops", PASSWORD, "admin", 0)
    c = signed_in(server, "ops", PASSWORD)
    path = "/console/triggered/save"
    first = {"id": "t1", "event": "deposit", "active": "on", "conditional": "on"}
    assert c.post(path, data={**first, "csrf": csrf_of(c)}).status_code == 303
    again = c.post(path, data={**first, "event": "login", "csrf": csrf_of(c)})
    assert again.status_code == 400 and "exists" in again.text
    assert store.get_triggered("t1")["trigger"]["event"] == "deposit"
    edit = c.get("/console/triggered/edit?id=t1").text
    assert 'name="existing" value="1"' in edit
    edited = {**first, "event": "login", "existing": "1", "csrf": csrf_of(c)}
    assert c.post(path, data=edited).status_code == 303
    assert store.get_triggered("t1")["trigger"]["event"] == "login"
