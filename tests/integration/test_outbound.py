"""The one way out (clearance.outbound.transport), through its three callers: the gate, the
notifier and channel webhooks, and the save-time check.

Real servers on loopback, no mocks. A canary listens on 127.0.0.1, 127.0.0.2, 127.255.255.254 and
::1, on the same port as the allowed server (127.0.0.3): it records every connection and must never
get one. Names are answered by a fake DNS (the process's getaddrinfo, replaced for the names below
only), so the same tests also run against code that resolves names itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from clearance.channels.base import BatchName, ChannelError
from clearance.channels.webhook import WebhookDelivery
from clearance.clock import FakeClock
from clearance.config import Settings
from clearance.errors import InvalidInput
from clearance.metrics import Metrics
from clearance.outbound.policy import OutboundPolicy, check_outbound_url
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import GatewayConfig, open_store
from clearance.triggered.breaker import BreakerSettings, CircuitBreaker
from clearance.triggered.gate import Gate
from clearance.triggered.matching import TriggeredCampaign
from tests.helpers import new_campaign
from tests.integration.test_triggered import CAMPAIGN

ALLOWED_ADDRESS = "127.0.0.3"
CANARY_ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.255.255.254", "::1")
PUBLIC_ADDRESS = "93.184.216.34"  # what allowed.example is under the public-only rule: never called
DEADLINE_S = 1.0


class Canary:
    """Sockets on every loopback address but the allowed one, all on `port`: any connection is a
    hit, recorded with what was sent, and answered 200 so that nothing waits on it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.hits: list[tuple[str, bytes]] = []
        self.sockets: list[socket.socket] = []
        for address in CANARY_ADDRESSES:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError:
                s.close()
                self.close()
                raise
            s.listen(64)
            self.sockets.append(s)
            threading.Thread(target=self._accept, args=(s, address), daemon=True).start()

    def _accept(self, s: socket.socket, address: str) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                self.hits.append((address, data))
                with contextlib.suppress(OSError):
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
                    )

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@dataclass
class Allowed:
    """The one server callers may reach (127.0.0.3): answers a gateway question with an allow,
    anything else with 200; `/redirect` sends to the canary, `/drip-*` drips its answer."""

    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    server: Any = None

    def start(self) -> Allowed:
        allowed = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                allowed.received.append(
                    {"path": self.path, "host": self.headers.get("host"), "raw": raw}
                )
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("location", f"http://127.0.0.1:{allowed.port}/followed")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                try:
                    user = orjson.loads(raw)["user"]["user_id"]
                    out = orjson.dumps({"user_id": user, "allowed": True})
                except Exception:
                    out = b"{}"
                if self.path.startswith("/drip"):
                    self.drip(out, headers_too=self.path.startswith("/drip-headers"))
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def drip(self, out: bytes, headers_too: bool) -> None:
                """A byte every 0.3 s (40+ bytes: 12 s and more), never a gap a per-read
                timeout would notice."""
                body = out + b" " * 40
                head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                head += b"content-length: %d\r\n\r\n" % len(body)
                dripped = head + body if headers_too else body
                try:
                    if not headers_too:
                        self.wfile.write(head)
                        self.wfile.flush()
                    for i in range(len(dripped)):
                        self.wfile.write(dripped[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.3)
                except OSError:
                    pass
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server((ALLOWED_ADDRESS, self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Servers:
    allowed: Allowed
    canary: Canary

    @property
    def port(self) -> int:
        return self.allowed.port


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    for _ in range(50):  # the canary needs the allowed server's port on the other addresses
        allowed = Allowed().start()
        try:
            canary = Canary(allowed.port)
        except OSError:
            allowed.stop()
            continue
        break
    else:
        pytest.fail("no port free on every loopback address")
    yield Servers(allowed, canary)
    canary.close()
    allowed.stop()


@pytest.fixture
def fresh(servers: Servers) -> Servers:
    servers.canary.hits.clear()
    servers.allowed.received.clear()
    return servers


class FakeDns:
    """Answers for the names in `answers` (each lookup takes the next answer; the last one
    repeats) and counts lookups; every other name goes to the real resolver."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.answers: dict[str, list[str]] = {}
        self.lookups: dict[str, int] = {}

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        name = name.lower().rstrip(".")
        if name not in self.answers:
            return self.real(host, port, *args, **kwargs)
        seen = self.lookups.get(name, 0)
        self.lookups[name] = seen + 1
        answers = self.answers[name]
        address = answers[min(seen, len(answers) - 1)]
        port_number = int(port or 0) if not isinstance(port, str) or port.isdigit() else 0
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port_number, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port_number))]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def spellings(port: int) -> list[str]:
    """URLs that must never reach the canary (or the allowed server), by any caller."""
    p = port
    return [
        f"http://127.0.0.1:{p}/",
        f"http://127.0.0.1:{p}\\@allowed.example/",
        f"http://127.0.0.1:{p}\\\\@allowed.example/",
        f"http://127.0.0.1:{p}\\allowed.example/",
        f"http://allowed.example\\@127.0.0.1:{p}/",
        f"http://allowed.example:{p}\\@127.0.0.1:{p}/",
        f"http://allowed.example@127.0.0.1:{p}/",
        f"http://allowed.example:{p}@127.0.0.1:{p}/",
        f"http://user:pass@127.0.0.1:{p}/",
        f"http://127.0.0.1:{p}@allowed.example/",
        f"http://127.0.0.1:{p}%5C@allowed.example/",
        f"http://127.0.0.1:{p}#@allowed.example/",
        f"http://127.0.0.1:{p}?@allowed.example/",
        f"http://127.0.0.1:{p}/#fragment",
        f"http://2130706433:{p}/",
        f"http://0x7f000001:{p}/",
        f"http://0x7f.1:{p}/",
        f"http://0x7F.0x0.0x0.0x1:{p}/",
        f"http://0177.0.0.1:{p}/",
        f"http://0177.1:{p}/",
        f"http://017700000001:{p}/",
        f"http://127.1:{p}/",
        f"http://127.0.1:{p}/",
        f"http://127.0.0.1.:{p}/",
        f"http://127.000.000.001:{p}/",
        f"http://localhost:{p}/",
        f"http://LOCALHOST.:{p}/",
        f"http://LocalHost:{p}/",
        f"http://[::1]:{p}/",
        f"http://[0:0:0:0:0:0:0:1]:{p}/",
        f"http://[::ffff:127.0.0.1]:{p}/",
        f"http://[::ffff:7f00:1]:{p}/",
        f"http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/",
        f"http://[::127.0.0.1]:{p}/",
        f"http://[::]:{p}/",
        f"http://[64:ff9b::7f00:1]:{p}/",
        f"http://[2002:7f00:1::]:{p}/",
        f"http://[::ffff:127.0.0.1%25lo]:{p}/",
        f"http://0:{p}/",
        f"http://0.0.0.0:{p}/",
        f"http://127.0.0.2:{p}/",
        f"http://127.255.255.254:{p}/",
        f"http://{ALLOWED_ADDRESS}:{p}/",
        f"http://10.0.0.1:{p}/",
        f"http://172.16.0.1:{p}/",
        f"http://192.168.0.1:{p}/",
        f"http://169.254.169.254:{p}/",
        f"http://[fe80::1]:{p}/",
        f"http://[fc00::1]:{p}/",
        f"http://100.64.0.1:{p}/",
        f"http://%31%32%37.0.0.1:{p}/",
        f"http://127%2E0%2E0%2E1:{p}/",
        f"http://allowed.example%40127.0.0.1:{p}/",
        f"http://127.0.0.1\t:{p}/",
        f"http://127.0.\t0.1:{p}/",
        f"http://local\nhost:{p}/",
        f"http://127.0.0.1:{p}/\r\n",
        f" http://127.0.0.1:{p}/",
        f"http://127.0.0.1:{p}/ ",
        f"http://127.0.0.\u00ad1:{p}/",
        f"http://127\u30020\u30020\u30021:{p}/",
        f"http://\uff11\uff12\uff17.0.0.1:{p}/",
        f"HTTP://127.0.0.1:{p}/",
        f"http:/127.0.0.1:{p}/",
        f"http:127.0.0.1:{p}/",
        f"http:\\\\127.0.0.1:{p}\\",
        f"http:///127.0.0.1:{p}/",
        f"https://127.0.0.1:{p}/",
        f"http://127.0.0.1:0{p}/",
        f"http://127.0.0.1:+{p}/",
        f"http://127.0.0.1:{p}:{p}/",
    ]


# the rule is public-only, or names allowed.example only
POLICIES = {"public only": ("", PUBLIC_ADDRESS), "allowlisted name": ("allowed.example", None)}


def _settings(tmp_path: Path, allow: str) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'outbound.db'}",
        file_channel_dir=str(tmp_path / "sends"),
        outbound_timeout_seconds=DEADLINE_S,
        outbound_allow=allow,
    )


def _gate(clock: FakeClock, allow: str) -> Gate:
    never_opens = CircuitBreaker(BreakerSettings(min_calls=10**9))
    return Gate(Metrics(), clock, never_opens, client="pyreqwest", outbound=OutboundPolicy(allow))


async def _decide_all(gate: Gate, urls: list[str]) -> list[tuple[str, str | None]]:
    campaign = TriggeredCampaign.from_body(CAMPAIGN)
    out = []
    try:
        for url in urls:
            config = GatewayConfig(url, int(DEADLINE_S * 1000), None, {})
            try:
                result = await gate.decide(config, campaign, "ok-1", False, time.monotonic())
                out.append((result.outcome.value, result.reason))
            except Exception as exc:  # counted: a crash is not a refusal
                out.append(("crashed", f"{type(exc).__name__}: {exc}"))
    finally:
        await gate.close()
    return out


def _batch() -> BatchName:
    return BatchName("campaign-1", "1", 504, "000000000001", "000000000001")


def _notify_all(tmp_path: Path, settings: Settings, clock: FakeClock, urls: list[str]) -> list:
    """Each URL a listener (written straight to the database, as if saved before the rule), one
    campaign, one drain: the attempts, one per URL, in the order of `urls`."""
    store = open_store(settings.database_url)
    try:
        for i, url in enumerate(urls, start=1):
            store.register_listener(5, i, url, 0)
        engine = ScheduledService(store, settings, clock)
        c = new_campaign(engine, customer_ids=["c1"])
        worker = Worker(store, settings, clock, worker_id="w")
        worker.drain()
        notes = store.campaign_notifications(c.campaign_id)
        by_url = {n["listener_url"]: n for n in notes}
        return [by_url.get(url) for url in urls]
    finally:
        store.close()


@pytest.mark.parametrize("policy", list(POLICIES))
def test_no_spelling_reaches_loopback_through_any_caller(fresh, dns, tmp_path, clock, policy):
    allow, name_address = POLICIES[policy]
    dns.answers["allowed.example"] = [name_address or ALLOWED_ADDRESS]
    port = fresh.port
    urls = spellings(port)
    controls = (
        []
        if name_address
        else [f"http://allowed.example:{port}/ok", f"http://ALLOWED.EXAMPLE.:{port}/ok"]
    )
    settings = _settings(tmp_path, allow)
    reached: list[tuple[str, str]] = []

    def watch(caller: str, url: str, before: tuple[int, int]) -> None:
        if (len(fresh.canary.hits), len(fresh.allowed.received)) != before:
            reached.append((caller, url))

    # save time: refused (a 400 naming the field)
    for url in urls:
        with pytest.raises(InvalidInput):
            check_outbound_url(url, settings.outbound, "url")
    for url in controls:
        assert (
            check_outbound_url(url, settings.outbound, "url") == f"http://allowed.example:{port}/ok"
        )

    # the gate: an error (fail closed), never an allow
    gated = asyncio.run(_decide_all(_gate(clock, allow), urls + controls))
    assert [o for o, _ in gated[len(urls) :]] == ["allowed"] * len(controls)
    wrong = [(u, o, r) for u, (o, r) in zip(urls, gated, strict=False) if o != "error"]
    assert wrong == []
    assert len(fresh.allowed.received) == len(controls)
    if fresh.canary.hits:
        reached.append(("gate", f"{len(fresh.canary.hits)} canary hits"))
    fresh.allowed.received.clear()
    fresh.canary.hits.clear()

    # channel webhooks: ChannelError, nothing sent
    for url in urls:
        before = (len(fresh.canary.hits), len(fresh.allowed.received))
        with pytest.raises(ChannelError):
            WebhookDelivery(url, settings, clock).deliver(_batch(), [{"SendID": "1-504-1"}])
        watch("webhook", url, before)
    for url in controls:
        WebhookDelivery(url, settings, clock).deliver(_batch(), [{"SendID": "1-504-1"}])

    # the notifier: a failed attempt recorded, not delivered
    before = (len(fresh.canary.hits), len(fresh.allowed.received))
    notes = _notify_all(tmp_path, settings, clock, urls + controls)
    for url, note in zip(urls, notes, strict=False):
        assert note is not None, url
        assert note["state"] != "delivered", (url, note["attempt_log"])
        [attempt] = note["attempt_log"]
        assert attempt["status_code"] is None and attempt["error"], (url, attempt)
    assert [n["state"] for n in notes[len(urls) :]] == ["delivered"] * len(controls)
    if len(fresh.canary.hits) != before[0]:
        reached.append(("notifier", f"{len(fresh.canary.hits) - before[0]} canary hits"))

    assert reached == []
    assert fresh.canary.hits == []
    assert len(fresh.allowed.received) == 2 * len(controls)  # the webhook's and the notifier's
    print(f"\n{policy}: {len(urls)} spellings x 4 callers, 0 reached the canary")


def test_the_spellings_are_many(servers):
    assert len(spellings(servers.port)) >= 40
    assert len(set(spellings(servers.port))) == len(spellings(servers.port))


def _deliver_once(settings: Settings, clock: FakeClock, url: str) -> str:
    try:
        WebhookDelivery(url, settings, clock).deliver(_batch(), [{"SendID": "1-504-1"}])
    except ChannelError as exc:
        return f"ChannelError: {exc}"
    return "delivered"


@pytest.mark.parametrize("allow", [f"{ALLOWED_ADDRESS}/32", "rebind.example"])
def test_a_name_is_resolved_once_per_call_and_called_at_the_address_checked(
    fresh, dns, tmp_path, clock, allow
):
    """rebind.example answers 127.0.0.3 (allowed) the first time and 127.0.0.1 (the canary) after
    that: each caller looks it up once per call and connects where that answer said."""
    settings = _settings(tmp_path, allow)
    url = f"http://rebind.example:{fresh.port}/hook"
    lookups = {}

    dns.answers["rebind.example"] = [ALLOWED_ADDRESS, "127.0.0.1"]
    assert _deliver_once(settings, clock, url) == "delivered"
    lookups["webhook"] = dns.lookups.pop("rebind.example", 0)

    [note] = _notify_all(tmp_path, settings, clock, [url])
    assert note["state"] == "delivered", note["attempt_log"]
    lookups["notifier"] = dns.lookups.pop("rebind.example", 0)

    gated = asyncio.run(_decide_all(_gate(clock, allow), [url]))
    assert gated == [("allowed", None)]
    lookups["gate"] = dns.lookups.pop("rebind.example", 0)

    assert fresh.canary.hits == []
    assert len(fresh.allowed.received) == 3
    assert all(r["host"] == f"rebind.example:{fresh.port}" for r in fresh.allowed.received)
    assert lookups == {"webhook": 1, "notifier": 1, "gate": 1}
    if "/" in allow:  # by network: the next call sees 127.0.0.1, which the rule refuses
        dns.lookups["rebind.example"] = 1  # (each caller above started from the first answer)
        assert "not sent" in _deliver_once(settings, clock, url)
        assert fresh.canary.hits == []


def test_proxy_variables_are_ignored(fresh, tmp_path, clock, monkeypatch):
    canary = f"http://127.0.0.1:{fresh.port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, canary)
        monkeypatch.setenv(name.lower(), canary)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    allow = f"{ALLOWED_ADDRESS}/32"
    settings = _settings(tmp_path, allow)
    url = f"http://{ALLOWED_ADDRESS}:{fresh.port}/hook"

    assert _deliver_once(settings, clock, url) == "delivered"
    [note] = _notify_all(tmp_path, settings, clock, [url])
    assert note["state"] == "delivered", note["attempt_log"]
    assert asyncio.run(_decide_all(_gate(clock, allow), [url])) == [("allowed", None)]
    assert fresh.canary.hits == []
    assert len(fresh.allowed.received) == 3


def test_redirects_are_not_followed(fresh, tmp_path, clock):
    """The allowed server answers 302 to the canary: every caller takes the 302 as the answer."""
    allow = f"{ALLOWED_ADDRESS}/32, 127.0.0.1/32"  # even where the rule would allow the target
    settings = _settings(tmp_path, allow)
    url = f"http://{ALLOWED_ADDRESS}:{fresh.port}/redirect"

    assert "answered HTTP 302" in _deliver_once(settings, clock, url)
    [note] = _notify_all(tmp_path, settings, clock, [url])
    assert note["state"] != "delivered"
    assert note["attempt_log"][0]["status_code"] == 302
    assert asyncio.run(_decide_all(_gate(clock, allow), [url])) == [
        ("error", "gateway answered HTTP 302")
    ]
    assert fresh.canary.hits == []
    assert [r["path"] for r in fresh.allowed.received] == ["/redirect"] * 3


@pytest.mark.parametrize("drip", ["drip-headers", "drip-body"])
def test_an_answer_dripped_a_byte_at_a_time_is_cut_at_the_deadline(fresh, tmp_path, clock, drip):
    """One deadline per call (1 s here), not per read: a listener, webhook or gateway that sends
    a byte every 0.3 s (which no per-read timeout notices) holds nobody past it."""
    allow = f"{ALLOWED_ADDRESS}/32"
    settings = _settings(tmp_path, allow)
    url = f"http://{ALLOWED_ADDRESS}:{fresh.port}/{drip}"
    bound = DEADLINE_S + 1.0  # generous: a loaded machine, thread start-up

    started = time.monotonic()
    outcome = _deliver_once(settings, clock, url)
    webhook_s = time.monotonic() - started
    assert outcome.startswith("ChannelError") and "time" in outcome.lower(), outcome

    started = time.monotonic()
    [note] = _notify_all(tmp_path, settings, clock, [url])
    notifier_s = time.monotonic() - started
    [attempt] = note["attempt_log"]
    assert note["state"] != "delivered" and "time" in attempt["error"].lower(), attempt

    started = time.monotonic()
    [(gate_outcome, _)] = asyncio.run(_decide_all(_gate(clock, allow), [url]))
    gate_s = time.monotonic() - started
    assert gate_outcome == "timeout"

    print(f"\n{drip}: webhook {webhook_s:.2f} s, notifier {notifier_s:.2f} s, gate {gate_s:.2f} s")
    assert DEADLINE_S * 0.9 <= webhook_s < bound
    assert attempt["duration_ms"] < bound * 1000 and notifier_s < bound + 1.0
    assert DEADLINE_S * 0.9 <= gate_s < bound


class Answers:
    """A resolver for the transport's seam: the next answer per lookup (the last one repeats)."""

    def __init__(self, *answers: list[str], delay: float = 0.0) -> None:
        self.answers = list(answers)
        self.delay = delay
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        time.sleep(self.delay)
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def test_the_policy_routes_a_name_to_one_address_from_one_lookup():
    from clearance.outbound.transport import canonical_url

    target = canonical_url("http://Allowed.Example.:8080/x")
    answers = Answers([PUBLIC_ADDRESS, "127.0.0.1"], ["127.0.0.1"])
    policy = OutboundPolicy("", resolve=answers)
    assert policy.route(target) == PUBLIC_ADDRESS  # the allowed one of the answer
    assert answers.calls == [("allowed.example", 8080)]
    with pytest.raises(InvalidInput, match="CLEARANCE_OUTBOUND_ALLOW"):
        policy.route(target)  # rebound: refused on the next call
    mixed = OutboundPolicy(
        f"{ALLOWED_ADDRESS}/32", resolve=Answers(["::1", "127.0.0.1", ALLOWED_ADDRESS])
    )
    assert mixed.route(target) == ALLOWED_ADDRESS
    listed = OutboundPolicy("allowed.example", resolve=Answers(["::1", "127.0.0.1"]))
    assert listed.route(target) == "127.0.0.1"  # a listed name goes where it resolves, IPv4 first


def test_the_transports_connect_to_the_address_the_policy_chose(fresh):
    from clearance.outbound.async_transport import AsyncTransport
    from clearance.outbound.transport import OutboundRefused, Transport

    url = f"http://rebind.example:{fresh.port}/x"
    answers = Answers(["127.0.0.1", ALLOWED_ADDRESS], ["127.0.0.1"])
    sync = Transport(OutboundPolicy(f"{ALLOWED_ADDRESS}/32", resolve=answers))
    assert sync.post(url, b"{}", {}, DEADLINE_S)[0] == 200
    with pytest.raises(OutboundRefused):
        sync.post(url, b"{}", {}, DEADLINE_S)  # a lookup per call: this one answers 127.0.0.1
    assert len(answers.calls) == 2
    sync.close()

    answers = Answers([ALLOWED_ADDRESS], ["127.0.0.1"])

    async def twice() -> list[int]:
        gate_side = AsyncTransport(OutboundPolicy(f"{ALLOWED_ADDRESS}/32", resolve=answers))
        try:  # pinned: the second call, inside the resolve TTL, does not look the name up again
            return [(await gate_side.post(url, b"{}", {}, 1024, DEADLINE_S))[0] for _ in range(2)]
        finally:
            await gate_side.close()

    assert asyncio.run(twice()) == [200, 200]
    assert len(answers.calls) == 1
    assert fresh.canary.hits == []
    assert len(fresh.allowed.received) == 3


def test_a_resolver_that_hangs_costs_the_call_its_deadline_only(fresh):
    from clearance.outbound.transport import Transport

    hangs = Answers([ALLOWED_ADDRESS], delay=5.0)
    transport = Transport(OutboundPolicy(f"{ALLOWED_ADDRESS}/32", resolve=hangs))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        transport.post(f"http://slow.example:{fresh.port}/", b"{}", {}, DEADLINE_S)
    assert time.monotonic() - started < DEADLINE_S + 1.0
    assert fresh.allowed.received == []


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a certificate it signed for allowed.example only (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=clearance test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    (d / "leaf.ext").write_text(
        "subjectAltName=DNS:allowed.example\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n"
    )
    run("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=allowed.example")
    run(
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    )
    return {"ca": d / "ca.pem", "cert": d / "leaf.pem", "key": d / "leaf.key"}


@pytest.fixture
def tls_server(tls_files: dict[str, Path]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """HTTPS on 127.0.0.3 with the allowed.example certificate; records SNI and Host."""
    seen: list[dict[str, Any]] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append({"host": self.headers.get("host"), "sni": names[-1] if names else None})
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> Any:
            conn, addr = super().get_request()
            return context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), addr

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a refused handshake is what some of the tests expect

    server = Server((ALLOWED_ADDRESS, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_https_to_a_pinned_address_verifies_the_certificate_for_the_name(tls_server, tls_files):
    from clearance.outbound.async_transport import AsyncTransport
    from clearance.outbound.transport import CallFailed, Transport

    port, seen = tls_server
    roots = [tls_files["ca"].read_bytes()]
    policy = OutboundPolicy(
        f"allowed.example, other.example, {ALLOWED_ADDRESS}/32",
        resolve=lambda host, port: [ALLOWED_ADDRESS],
    )
    sync = Transport(policy, roots=roots)
    assert sync.post(f"https://allowed.example:{port}/x", b"{}", {}, 5.0)[0] == 200
    for wrong in (f"https://other.example:{port}/x", f"https://{ALLOWED_ADDRESS}:{port}/x"):
        with pytest.raises(CallFailed):  # the same address, a name the certificate is not for
            sync.post(wrong, b"{}", {}, 5.0)
    sync.close()
    unknown_ca = Transport(policy)
    with pytest.raises(CallFailed):
        unknown_ca.post(f"https://allowed.example:{port}/x", b"{}", {}, 5.0)
    unknown_ca.close()

    async def gate_side() -> tuple[int, str]:
        transport = AsyncTransport(policy, roots=roots)
        try:
            ok = (await transport.post(f"https://allowed.example:{port}/x", b"{}", {}, 64, 5.0))[0]
            try:
                await transport.post(f"https://other.example:{port}/x", b"{}", {}, 64, 5.0)
                return ok, "other.example was accepted"
            except CallFailed as exc:
                return ok, str(exc)
        finally:
            await transport.close()

    status, refused = asyncio.run(gate_side())
    assert status == 200 and "other.example was accepted" not in refused
    assert seen == [{"host": f"allowed.example:{port}", "sni": "allowed.example"}] * 2


def test_an_unknown_gate_client_is_refused_with_a_clear_error(clock):
    with pytest.raises(InvalidInput, match="pyreqwest") as refused:
        Settings.from_env({"CLEARANCE_GATE_CLIENT": "aiohttp"})
    assert refused.value.field == "gate_client"
    with pytest.raises(ValueError, match="pyreqwest"):
        Gate(Metrics(), clock, client="aiohttp")
    assert Settings.from_env({}).gate_client == "pyreqwest"


def test_what_is_saved_is_what_is_called(api):
    """The save-time check returns the URL as the transport reads it, and that is stored."""
    r = api.post(
        "/current/general/RegisterEventListener",
        json={"EventTypeID": 5, "ListenerURL": "HTTP://0x7f.1:9/hook?a=1"},
    )
    assert r.status_code == 200, r.text
    listed = api.get("/current/general/GetRegisteredEventListeners").text
    assert "http://127.0.0.1:9/hook?a=1" in listed and "0x7f" not in listed
    r = api.put(
        "/triggered_conditional_execution_gateway", json={"url": "http://OPS.EXAMPLE.:80/gate"}
    )
    assert r.status_code == 200, r.text
    assert api.get("/triggered_conditional_execution_gateway").json()["url"] == (
        "http://ops.example/gate"
    )
    for url in ("http://127.0.0.1:9\\@ops.example/", "http://ops.example@127.0.0.1:9/"):
        r = api.post(
            "/current/general/RegisterEventListener", json={"EventTypeID": 5, "ListenerURL": url}
        )
        assert r.status_code == 400 and r.json()["field"] == "ListenerURL", r.text
        r = api.put("/api/v1/channels/504", json={"delivery": {"type": "webhook", "url": url}})
        assert r.status_code == 400 and r.json()["field"] == "delivery.url", r.text
