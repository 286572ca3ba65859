"""The real CLI in a subprocess: serve and worker on the system clock, a real listener."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import Listener, free_port

CLI = [sys.executable, "-m", "clearance.cli"]
KEY = "clr_acceptance_key_0123456789"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


class Served:
    def __init__(self, database_url: str, tmp: Path, *extra: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CLEARANCE_BOOTSTRAP_API_KEY": KEY,
            "CLEARANCE_OUTBOUND_ALLOW": "127.0.0.0/8",
            "CLEARANCE_BOOTSTRAP_USER": "ops:pa55word",
            "CLEARANCE_WORKER_POLL_SECONDS": "0.1",
            "CLEARANCE_FILE_CHANNEL_DIR": str(tmp / "out"),
            "CLEARANCE_DATABASE_URL": database_url,
            **env,
        }
        self.log_path = tmp / f"serve-{self.port}.log"
        with self.log_path.open("wb") as log:  # a file, not a pipe: nothing blocks on a full pipe
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port), *extra],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, headers={"X-API-KEY": KEY}, timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.http.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"serve did not start: {self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    s = Served(database_url, tmp_path)
    yield s
    s.stop()


def wire_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def wait_for_state(http: httpx.Client, campaign_id: int, state: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = http.get(f"/api/v1/campaigns/{campaign_id}").json()
        if got["state"] == state:
            return got
        time.sleep(0.1)
    raise AssertionError(f"campaign {campaign_id} stuck in {got['state']}, wanted {state}")


def test_migrate_is_versioned_and_idempotent(database_url):
    first = run_cli("migrate", "--database-url", database_url)
    assert first.returncode == 0, first.stderr
    latest = max(
        int(f.name.split("_")[0])
        for f in resources.files("clearance.store.migrations").iterdir()
        if f.name.endswith(".sql")
    )
    assert latest >= 3
    assert f"schema at version {latest}" in first.stdout
    second = run_cli("migrate", "--database-url", database_url)
    assert "already current" in second.stdout


def test_bad_database_url_is_a_clear_error():
    r = run_cli("migrate", "--database-url", "mysql://nope")
    assert r.returncode == 2
    assert "unsupported database URL" in r.stderr


def test_scheduled_conditional_campaign_end_to_end(served, tmp_path):
    """Listener approves three of eight over the wire API; only those three get the campaign."""
    approver = httpx.Client(base_url=served.url, headers={"X-API-KEY": KEY}, timeout=10)

    def on_event(body: dict) -> None:
        if body["EventTypeID"] != 5:
            return
        customers = approver.get(
            "/current/customers/GetProcessedCampaignCustomers",
            params={"CampaignID": body["CampaignID"], "$top": 3},
        ).json()
        approver.post(
            "/current/integrations/UpdateCustomerPromotionStatus",
            json={
                "TimeStamp": body["TimeStamp"],
                "CampaignID": body["CampaignID"],
                "PromosUpdated": [
                    {"CustomerID": c["CustomerID"], "Status": True} for c in customers
                ],
            },
        )

    listener = Listener(on_event=on_event).start()
    try:
        assert (
            served.http.post(
                "/current/general/RegisterEventListener",
                json={"EventTypeID": 5, "ListenerURL": listener.url},
            ).status_code
            == 200
        )
        execute_at = datetime.now(UTC) + timedelta(seconds=8)
        r = served.http.post(
            "/api/v1/campaigns",
            json={
                "campaign_id": 42,
                "name": "acceptance",
                "execute_at": wire_time(execute_at),
                "conditional": True,
                "clearance_lead_seconds": 5,
                "action": {"id": 1, "name": "bonus", "promo_codes": ["B1"]},
                "channels": [{"id": 504, "name": "Email", "templates": [{"id": 3}]}],
                "target_group": [{"customer_id": f"cust-{i}"} for i in range(8)],
            },
        )
        assert r.status_code == 201, r.text
        done = wait_for_state(served.http, 42, "executed", 30)
        assert done["counts"] == {
            "target": 8,
            "approved": 3,
            "sent": 3,
            "undelivered": 0,
            "excluded": 5,
        }
        sends = served.http.get(
            "/current/customers/GetCustomerSendDetailsByCampaign", params={"CampaignID": 42}
        ).json()
        assert sorted(s["CustomerID"] for s in sends) == ["cust-0", "cust-1", "cust-2"]
        files = list((tmp_path / "out").rglob("*.ndjson"))
        lines = [orjson.loads(x) for f in files for x in f.read_bytes().splitlines()]
        assert sorted(x["SendID"] for x in lines) == sorted(s["SendID"] for s in sends)
        [note] = listener.bodies(5)
        assert note["CampaignID"] == 42 and set(note) == {
            "EventTypeID",
            "TimeStamp",
            "CampaignID",
            "CampaignDuration",
            "ClearanceRequiredBy",
        }
        late = approver.post(
            "/current/integrations/UpdateCustomerPromotionStatus",
            json={"CampaignID": 42, "PromosUpdated": [{"CustomerID": "cust-7", "Status": True}]},
        )
        assert late.status_code == 409
    finally:
        approver.close()
        listener.stop()


def test_keys_and_bootstrap_user(served, database_url):
    r = run_cli("keys", "create", "--type", "integrations", "--database-url", database_url)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith("clr_") and "shown once" in r.stderr
    with httpx.Client(base_url=served.url, timeout=10) as c:
        assert (
            c.get(
                "/current/general/GetRegisteredEventListeners", headers={"X-API-KEY": key}
            ).status_code
            == 200
        )
        assert c.get("/api/v1/campaigns/1", headers={"X-API-KEY": key}).status_code == 403
        token = c.post(
            "/current/general/login", json={"Username": "ops", "Password": "pa55word"}
        ).json()
        assert (
            c.get(
                "/current/general/GetRegisteredEventListeners",
                headers={"Authorization-Token": token},
            ).status_code
            == 200
        )


def test_worker_killed_with_sigkill_mid_execution_resumes_exactly_once(database_url, tmp_path):
    """A separate worker process is SIGKILLed while executing; a new one finishes the job."""
    served = Served(database_url, tmp_path, "--no-worker")
    worker_env = {**served.env, "CLEARANCE_EXECUTION_CHUNK": "200", "CLEARANCE_LEASE_SECONDS": "1"}
    workers: list[subprocess.Popen[bytes]] = []

    def start_worker() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [*CLI, "worker"], env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        workers.append(p)
        return p

    try:
        n = 20_000
        served.http.post(
            "/api/v1/campaigns",
            json={
                "campaign_id": 9,
                "name": "big",
                "draft": True,
                "execute_at": wire_time(datetime.now(UTC) + timedelta(seconds=14)),
                "conditional": True,
                "clearance_lead_seconds": 9,
                "action": {"id": 1, "name": "b"},
                "channels": [{"id": 504}, {"id": 505}],
            },
        ).raise_for_status()
        body = b"\n".join(orjson.dumps({"customer_id": f"k{i}"}) for i in range(n))
        served.http.post(
            "/api/v1/campaigns/9/target-group",
            content=body,
            headers={"content-type": "application/x-ndjson"},
        ).raise_for_status()
        served.http.post("/api/v1/campaigns/9/schedule").raise_for_status()
        first = start_worker()
        wait_for_state(served.http, 9, "awaiting_clearance", 15)
        approved = [f"k{i}" for i in range(n) if i % 4 != 1]
        for i in range(0, len(approved), 10_000):
            served.http.post(
                "/current/integrations/UpdateCustomerPromotionStatus",
                json={
                    "CampaignID": 9,
                    "PromosUpdated": [
                        {"CustomerID": c, "Status": True} for c in approved[i : i + 10_000]
                    ],
                },
            ).raise_for_status()
        kills = 0
        deadline = time.monotonic() + 60
        current = first
        while kills < 3 and time.monotonic() < deadline:
            got = served.http.get("/api/v1/campaigns/9").json()
            if got["state"] == "executed":
                break
            if got["state"] == "executing" and got["counts"]["sent"] > 0:
                current.send_signal(signal.SIGKILL)
                current.wait()
                kills += 1
                current = start_worker()
                time.sleep(0.3 + 0.2 * kills)
            else:
                time.sleep(0.02)
        assert kills >= 1, "the worker finished before it could be killed; raise n"
        done = wait_for_state(served.http, 9, "executed", 60)
        assert done["counts"]["sent"] == len(approved)
        sends = []
        skip = 0
        while True:
            page = served.http.get(
                "/current/customers/GetCustomerSendDetailsByCampaign",
                params={"CampaignID": 9, "$top": 100_000, "$skip": skip},
            ).json()
            sends += page
            skip += len(page)
            if len(page) < 100_000:
                break
        pairs = [(s["CustomerID"], s["ChannelID"]) for s in sends]
        assert len(pairs) == len(set(pairs)) == 2 * len(approved)
        assert {c for c, _ in pairs} == set(approved)
        files = list((tmp_path / "out").rglob("*.ndjson"))
        ids = [orjson.loads(x)["SendID"] for f in files for x in f.read_bytes().splitlines()]
        assert len(ids) == len(set(ids)) == 2 * len(approved)
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
                p.wait()
        served.stop()


def test_demo_runs_and_explains_every_exclusion():
    r = run_cli("demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo finished." in r.stdout
    assert "EXCLUDED  C-1005  refused — self-exclusion" in r.stdout
    assert "EXCLUDED  C-1009  refused — promo activation failed" in r.stdout
    assert "SENT      C-1001" in r.stdout
    assert "C-1001: SENT" in r.stdout and "V-77: not sent" in r.stdout
    # the scheduled campaign in two send groups, each with its own deadline
    groups = [line for line in r.stdout.splitlines() if line.strip().startswith("send group ")]
    assert len(groups) == 2 and "template 9001" in groups[0] and "template 9002" in groups[1]


def test_cli_keys_logs_are_json_lines_with_request_ids_and_no_keys(served):
    """keys create / list / revoke from the CLI against a running server, and its log lines."""
    env = {"CLEARANCE_DATABASE_URL": served.env["CLEARANCE_DATABASE_URL"]}
    made = run_cli("keys", "create", "--type", "integrations", "--name", "ci", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = made.stderr.split("(", 1)[1].split(",", 1)[0]
    headers = {"X-API-KEY": key, "X-Request-ID": "acc-1"}
    r = served.http.get("/current/integrations/GetPromotions", headers=headers)
    assert r.status_code == 200 and r.headers["x-request-id"] == "acc-1"
    listed = run_cli("keys", "list", env=env)
    assert key_id in listed.stdout and key not in listed.stdout
    revoked = run_cli("keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in run_cli("keys", "list", env=env).stdout
    assert run_cli("keys", "revoke", key_id, env=env).returncode == 2  # already revoked
    served.http.get("/api/v1/audit")
    lines = [orjson.loads(line) for line in served.output().splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "clearance.access"]
    mine = [line for line in access if line["request_id"] == "acc-1"]
    assert mine and mine[0]["status"] == 200 and mine[0]["caller"] == key_id
    assert all(line["request_id"] for line in access)
    assert key not in served.output() and KEY not in served.output()
    audit = served.http.get("/api/v1/audit").json()["entries"]
    assert [(e["actor"], e["action"]) for e in audit] == [
        ("cli", "key.create"),
        ("cli", "key.revoke"),
    ]
