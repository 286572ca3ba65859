"""Promises a key holder must not be able to break: ids that become paths, the login throttle and
its timing, secrets checked when saved, and zone-less times the site zone cannot place."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clearance.channels.base import BatchName, ChannelError, path_component
from clearance.channels.file import FileDelivery
from clearance.clock import FakeClock
from clearance.config import Settings
from clearance.errors import InvalidInput
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import Store, access
from tests.conftest import AsgiServer, serve_api


@pytest.fixture
def serve(store: Store, settings: Settings, clock: FakeClock) -> Iterator[object]:
    servers: list[AsgiServer] = []

    def start(**changes: object) -> str:
        server = serve_api(ScheduledService(store, settings.with_(**changes), clock))
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


# --- triggered campaign ids become folder names ---------------------------------------------------
ESCAPES = ["../../escaped", "../../../tmp/x", "..", ".", "a/../../b", "/abs/path", "a\\..\\b", "~x"]


def test_path_components_stay_in_their_folder() -> None:
    seen = set()
    for text in [*ESCAPES, "T-1", "campaign.v2", "x" * 101, "é", "a b", "\x00"]:
        part = path_component(text)
        assert "/" not in part and "\\" not in part and part not in ("", ".", "..")
        assert "\x00" not in part and len(part) <= 100
        seen.add(part)
    assert len(seen) == len(ESCAPES) + 6  # no two ids share a folder
    assert path_component("T-1") == "T-1"  # plain ids keep their readable folder


def test_file_channel_refuses_a_path_out_of_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "sends"
    (root).mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "triggered-T-1").symlink_to(outside)  # planted inside the channel folder
    with pytest.raises(ChannelError):
        FileDelivery(str(root)).deliver(BatchName.triggered("T-1", 506, "1", "1"), [{"x": 1}])
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("campaign_id", ["../../escaped", "../../../../../tmp/clearance-escape"])
def test_a_triggered_campaign_id_cannot_write_outside_the_channel_dir(
    api: httpx.Client, tmp_path: Path, campaign_id: str, worker: Worker
) -> None:
    campaign = {
        "id": campaign_id,
        "action": {"id": 5, "channels": [{"id": 506, "templates": [{"id": 1}]}]},
        "conditional": False,
        "trigger": {"event": "login"},
    }
    assert api.post("/api/v1/triggered-campaigns", json=campaign).status_code == 201
    reply = api.post("/api/v1/events", json={"customer_id": "C-1", "event": "login"})
    assert reply.json()["matched"][0]["sent"] is True
    root = tmp_path / "sends"
    worker.drain()  # the worker delivers the outbox
    written = list(root.rglob("*.ndjson"))
    assert len(written) == 1
    assert written[0].resolve().is_relative_to(root.resolve())
    escaped = [p for p in tmp_path.rglob("*.ndjson") if not p.resolve().is_relative_to(root)]
    assert escaped == []
    assert not Path("/tmp/clearance-escape").exists()


# --- login --------------------------------------------------------------------------------------
def test_parallel_wrong_guesses_get_no_more_tries_than_allowed(store: Store, serve: object) -> None:
    store.upsert_user("ops", "right-password", "admin", 0)
    url = serve(login_failures_allowed=3)  # type: ignore[operator]
    codes: list[int] = []
    start = threading.Barrier(20)

    def guess(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            start.wait()
            r = c.post("/current/general/login", json={"Username": "ops", "Password": f"g{i}"})
            codes.append(r.status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(codes)) == [401, 429]
    assert codes.count(401) == 3  # each of the 3 allowed guesses checked, every other refused
    with httpx.Client(base_url=url, timeout=30) as c:  # even the right password waits now
        r = c.post("/current/general/login", json={"Username": "ops", "Password": "right-password"})
        assert r.status_code == 429


def test_a_right_password_is_not_counted_against_the_address(store: Store, serve: object) -> None:
    store.upsert_user("ops", "right-password", "admin", 0)
    url = serve(login_failures_allowed=1)  # type: ignore[operator]
    with httpx.Client(base_url=url, timeout=30) as c:
        for _ in range(8):  # 4 x allowed per address: successes must not use it up
            r = c.post(
                "/current/general/login", json={"Username": "ops", "Password": "right-password"}
            )
            assert r.status_code == 200


def test_an_unknown_user_costs_the_same_work_as_a_known_one(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.upsert_user("ops", "right-password", "admin", 0)
    store.login("nobody", "x", 0)  # the decoy is made once per process, before counting
    calls: list[str] = []
    real = access.hash_password

    def counting(password: str, salt: bytes | None = None) -> str:
        calls.append(password)
        return real(password, salt)

    monkeypatch.setattr(access, "hash_password", counting)
    assert store.login("ops", "wrong", 0) is None
    known = len(calls)
    calls.clear()
    assert store.login("nobody", "wrong", 0) is None
    assert known == len(calls) == 1


# --- secrets are checked when saved -------------------------------------------------------------
def _secret(n: int, prefix: str = "whsec_") -> str:
    return prefix + base64.b64encode(b"k" * n).decode()


@pytest.mark.parametrize(
    "bad",
    [
        "not-base64!",
        "whsec_abc",
        "whsec_" + "a" * 10 + "=",
        _secret(8),
        _secret(23),
        "whsec_",
        "whsec_@@@@",
    ],
)
def test_a_gateway_secret_that_cannot_sign_is_refused_on_save(api: httpx.Client, bad: str) -> None:
    for field in ("secret", "previous_secret"):
        body = {"url": "http://127.0.0.1:1/g", "secret": _secret(32), field: bad}
        r = api.put("/triggered_conditional_execution_gateway", json=body)
        assert r.status_code == 400, (field, bad, r.text)
        assert r.json()["field"] == field and bad not in r.text
    assert api.get("/triggered_conditional_execution_gateway").status_code == 404  # nothing saved


def test_a_good_gateway_secret_is_kept(api: httpx.Client) -> None:
    for good in (_secret(24), _secret(64), _secret(32, prefix="")):
        body = {"url": "http://127.0.0.1:1/g", "secret": good}
        assert api.put("/triggered_conditional_execution_gateway", json=body).status_code == 200


def test_a_signing_secret_setting_that_cannot_sign_stops_the_start() -> None:
    with pytest.raises(InvalidInput, match="CLEARANCE_SIGNING_SECRET"):
        Settings.from_env({"CLEARANCE_SIGNING_SECRET": f"{_secret(32)} whsec_short"})
    assert Settings.from_env({"CLEARANCE_SIGNING_SECRET": _secret(32)}).signing_secret


# --- zone-less times the site zone skips or repeats ---------------------------------------------
@pytest.mark.parametrize(
    ("when", "why"),
    [("2027-03-28 01:30:00", "does not exist"), ("2027-10-31 01:30:00", "happens twice")],
)
def test_a_time_the_site_zone_cannot_place_is_refused(
    serve: object, admin_key: str, when: str, why: str
) -> None:
    url = serve(timezone="Europe/London")  # type: ignore[operator]
    body = {
        "name": "dst",
        "execute_at": when,
        "conditional": False,
        "action": {"id": 1},
        "channels": [{"id": 504}],
        "target_group": [{"customer_id": "C-1"}],
    }
    with httpx.Client(base_url=url, headers={"X-API-KEY": admin_key}, timeout=30) as c:
        r = c.post("/api/v1/campaigns", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "execute_at" and when in r.json()["message"]
        assert why in r.json()["message"]
        assert (
            c.post(
                "/api/v1/campaigns", json={**body, "execute_at": "2027-06-01 12:00:00"}
            ).status_code
            == 201
        )
        fixed = {**body, "execute_at": when.replace(" ", "T") + "+00:00"}
        assert c.post("/api/v1/campaigns", json=fixed).status_code == 201  # an offset says which


# --- found by the hostile review ------------------------------------------------------------------
def test_a_success_does_not_free_the_guesses_still_in_flight(clock: FakeClock) -> None:
    from clearance.api.ratelimit import LoginThrottle

    throttle = LoginThrottle(clock, allowed=3)
    assert throttle.begin("ops", "1.2.3.4") == 0.0  # two guesses in flight
    assert throttle.begin("ops", "1.2.3.4") == 0.0
    assert throttle.begin("ops", "5.6.7.8") == 0.0  # the real user, elsewhere
    throttle.succeeded("ops", "5.6.7.8")
    assert throttle.begin("ops", "1.2.3.4") == 0.0  # the third allowed
    assert throttle.begin("ops", "1.2.3.4") > 0  # not a fourth: two are still in flight
    for _ in range(3):
        throttle.failed("ops", "1.2.3.4")
    assert throttle.begin("ops", "1.2.3.4") > 0


def test_the_throttle_forgets_names_once_their_window_has_passed(clock: FakeClock) -> None:
    from clearance.api.ratelimit import LoginThrottle

    throttle = LoginThrottle(clock, allowed=3)
    for i in range(50):
        assert throttle.begin(f"user-{i}", f"10.0.0.{i}") == 0.0
        throttle.failed(f"user-{i}", f"10.0.0.{i}")
    assert len(throttle._failures) == 100
    clock.advance(301)
    throttle.begin("next", "9.9.9.9")
    throttle.abandoned("next", "9.9.9.9")
    assert len(throttle._failures) <= 2  # only what was touched since; the 50 names are gone
    assert dict(throttle._in_flight) == {}


def test_a_user_name_longer_than_an_id_is_refused_before_it_is_kept(anon: httpx.Client) -> None:
    r = anon.post("/current/general/login", json={"Username": "u" * 201, "Password": "p"})
    assert r.status_code == 400 and r.json()["field"] == "Username"


def test_a_stored_folder_outside_the_channel_dir_is_refused_at_delivery(tmp_path: Path) -> None:
    root = tmp_path / "sends"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "linked").symlink_to(tmp_path / "outside")
    name = BatchName.triggered("T-1", 506, "1", "1")
    for folder in [str(tmp_path / "outside"), "sub/../../outside", "linked", "a\x00b"]:
        with pytest.raises(ChannelError):
            FileDelivery(str(root), folder).deliver(name, [{"x": 1}])
    assert list((tmp_path / "outside").iterdir()) == []
    FileDelivery(str(root), "brand-a").deliver(name, [{"x": 1}])
    assert len(list((root / "brand-a").rglob("*.ndjson"))) == 1


@pytest.mark.parametrize("value", ["a\x01b", "a\x1bb", "a\x7fb"])
def test_a_gateway_header_value_a_client_cannot_send_is_refused_on_save(
    api: httpx.Client, value: str
) -> None:
    body = {"url": "http://127.0.0.1:1/g", "headers": {"x-tenant": value}}
    assert api.put("/triggered_conditional_execution_gateway", json=body).status_code == 400
    tab = {"url": "http://127.0.0.1:1/g", "headers": {"x-tenant": "a\tb c"}}
    assert api.put("/triggered_conditional_execution_gateway", json=tab).status_code == 200


@pytest.mark.parametrize("campaign_id", ["T\n1", "T\x001", "T\x7f"])
def test_a_triggered_campaign_id_with_control_characters_is_refused(
    api: httpx.Client, campaign_id: str
) -> None:
    campaign = {
        "id": campaign_id,
        "action": {"id": 5, "channels": [{"id": 506}]},
        "trigger": {"event": "login"},
    }
    assert api.post("/api/v1/triggered-campaigns", json=campaign).status_code == 400


def test_the_first_unknown_login_after_start_costs_one_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from clearance.runtime import Runtime

    access._decoy_hash.cache_clear()
    runtime = Runtime.open(Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}"), FakeClock())
    try:
        asyncio.run(runtime.start())
        calls: list[str] = []
        real = access.hash_password

        def counting(password: str, salt: bytes | None = None) -> str:
            calls.append(password)
            return real(password, salt)

        monkeypatch.setattr(access, "hash_password", counting)
        assert runtime.store.login("nobody", "wrong", 0) is None
        assert len(calls) == 1
        asyncio.run(runtime.stop())
    finally:
        runtime.store.close()
