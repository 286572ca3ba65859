"""Triggered decisions through the engine, beside a raw baseline, in one run (loopback only).

    .venv/bin/python bench/gate.py [--decisions 20000] [--memory-decisions 1000000]

Everything here runs on uvloop, the event loop the engine serves on (uvicorn picks it).

1. A minimal gateway (bench/gateway_server.py) runs in its own process.
   Throughput figures are the best of --tries interleaved passes each (raw pyreqwest, raw aiohttp,
   engine; default 3), as the machine is shared; ratios are to the fastest raw figure.
2. Raw baseline: the same number of POSTs with the same payload shape, straight to the gateway with
   pyreqwest (the fastest client measured here; aiohttp too, for comparison), at the same
   concurrency towards the gateway, with the CPU the client's process spent per call (all its
   threads). The gateway is then given a second process (SO_REUSEPORT) and the raw pyreqwest pass
   repeated: if the raw rate rises, the gateway was the bottleneck (the faster figure counts).
3. The engine (`clearance serve --no-worker`, SQLite) with CLEARANCE_GATE_CONCURRENCY = 16 or 64
   and CLEARANCE_GATE_CLIENT = --engine-client (default: the engine's default, pyreqwest): events
   in batches of 100, and single events. Ratio = engine decisions/s ÷ raw calls/s. CPU per
   decision = the engine processes' CPU time (all threads, /proc/<pid>/stat) ÷ allowed decisions.
4. Overhead: one at a time, single events: engine p50 event-to-reply minus raw p50 round trip.
5. Timeout precision: the gateway never answers; probes measure how long after the budget the
   engine gives up (its own decision latency, measured from decision start), while the engine also
   serves 500 other decisions/s.
6. Memory: RSS of the engine process after warm-up and after 1,000,000 decisions.
Figures go to stdout and bench/out/gate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from clearance.loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "clr_bench_" + secrets.token_hex(8)
PAYLOAD_CAMPAIGN = {
    "id": "bench",
    "series_id": 1,
    "notes": "",
    "tags": [],
    "action": {
        "id": 1,
        "name": "b",
        "promo_codes": None,
        "channels": [{"id": 506, "name": "Push", "brand_id": None, "templates": None}],
    },
}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def wait_http(url: str, seconds: float = 20) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def free_port_pair() -> int:
    """A port P with P+1 free too (the bench gateway listens on both)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of ports")


def wait_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def la() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (the API processes of `serve --workers N`)."""
    out = [pid]
    for p in out:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of pid and its descendants, all threads."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Engine:
    server = "uvicorn"  # or "granian" (--server): the HTTP server the engine's app runs under

    def __init__(
        self,
        workdir: Path,
        concurrency: int,
        client: str = "pyreqwest",
        processes: int = 1,
        breaker: bool = True,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "CLEARANCE_BOOTSTRAP_API_KEY": KEY,
            "CLEARANCE_OUTBOUND_ALLOW": "127.0.0.0/8",
            "CLEARANCE_RATE_LIMIT_PER_SECOND": "0",  # measure the engine, not the limiter
            "CLEARANCE_GATE_CONCURRENCY": str(concurrency),
            "CLEARANCE_GATE_CLIENT": client,
            # the timeout probes fail on purpose: keep the breaker from (rightly) opening
            "CLEARANCE_BREAKER_MIN_CALLS": "50" if breaker else str(10**9),
            "CLEARANCE_FILE_CHANNEL_DIR": str(workdir / "sends"),
            "CLEARANCE_DATABASE_URL": f"sqlite:///{workdir / f'gate-{concurrency}.db'}",
        }
        command = [
            sys.executable,
            "-m",
            "clearance.cli",
            "serve",
            "--no-worker",
            "--workers",
            str(processes),
            "--port",
            str(self.port),
        ]
        if self.server == "granian":  # the same app (bench/granian_app.py) under granian
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
            command = [
                sys.executable,
                "-m",
                "granian",
                "--interface",
                "asgi",
                "--factory",
                "--loop",
                "uvloop",
                "--no-ws",
                "--workers",
                str(processes),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "bench.granian_app:app",
            ]
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(self.url + "/healthz")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


async def setup(
    session: aiohttp.ClientSession, engine: Engine, gateway_url: str, timeout_ms: int = 2000
) -> None:
    h = {"X-API-KEY": KEY}
    async with session.put(
        f"{engine.url}/triggered_conditional_execution_gateway",
        json={"url": gateway_url, "timeout_ms": timeout_ms},
        headers=h,
    ) as r:
        assert r.status == 200, await r.text()
    for body in [
        {**PAYLOAD_CAMPAIGN, "conditional": True, "trigger": {"event": "deposit"}},
        {**PAYLOAD_CAMPAIGN, "id": "plain", "conditional": False, "trigger": {"event": "login"}},
    ]:
        async with session.put(
            f"{engine.url}/api/v1/triggered-campaigns/{body['id']}", json=body, headers=h
        ) as r:
            assert r.status in (200, 201), await r.text()


async def raw(
    gateway_url: str,
    concurrency: int,
    n: int,
    client: str = "pyreqwest",
    gateway_pids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """What the engine's gateway calls cost with nothing else: same body, same concurrency,
    straight from the client (pyreqwest: the fastest measured here; aiohttp for comparison)."""
    latencies: list[float] = []
    counter = iter(range(n))
    campaign = orjson.dumps(PAYLOAD_CAMPAIGN)
    headers = {"content-type": "application/json"}
    if client == "pyreqwest":
        from pyreqwest.client import ClientBuilder

        rq = (
            ClientBuilder()
            .max_connections(concurrency)
            .pool_max_idle_per_host(concurrency)
            .error_for_status(False)
            .build()
        )

        async def call(body: bytes) -> tuple[int, bytes]:
            request = (
                rq.post(gateway_url).header("content-type", "application/json").body_bytes(body)
            )
            async with request.build_streamed() as r:
                return r.status, bytes(await r.bytes())
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

        async def call(body: bytes) -> tuple[int, bytes]:
            async with session.post(gateway_url, data=body, headers=headers) as r:
                return r.status, await r.read()

    failed: dict[str, int] = {}

    async def worker() -> None:
        for i in counter:
            body = (
                b'{"user":{"user_id":"u' + str(i).encode() + b'","is_visitor":false},'
                b'"campaign":' + campaign + b"}"
            )
            t = time.perf_counter()
            status, content = await call(body)
            # only a 200 that allows counts as a call (an error must not count as throughput)
            if status != 200 or orjson.loads(content).get("allowed") is not True:
                failed[str(status)] = failed.get(str(status), 0) + 1
                continue
            latencies.append(time.perf_counter() - t)

    gw0 = sum(cpu_seconds(pid) for pid in gateway_pids)
    cpu0 = own_cpu_seconds()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    cpu = own_cpu_seconds() - cpu0
    gw_cpu = sum(cpu_seconds(pid) for pid in gateway_pids) - gw0
    ok = len(latencies)
    if failed:
        say(f"  raw {client}: {sum(failed.values())} of {n} calls failed (by status: {failed})")
    if client == "pyreqwest":
        await rq.close()
    else:
        await session.close()
    return {
        "client": client,
        "calls": ok,
        "failed": failed,
        "seconds": seconds,
        "per_s": ok / seconds,
        "cpu_us_per_call": cpu / ok * 1e6 if ok else float("inf"),
        # the gateway processes' CPU over the pass's wall time, in cores: near 1.0 for one
        # single-threaded gateway process means it was saturated (the bottleneck)
        "gateway_cores": gw_cpu / seconds,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "load": os.getloadavg(),
    }


async def engine_load(
    engine: Engine,
    n: int,
    batch: int,
    in_flight: int,
    event: str = "deposit",
    event_ids: bool = False,
) -> dict[str, Any]:
    """n decisions through POST /api/v1/events, `batch` events a request, `in_flight` requests.

    Throughput counts only `allowed` decisions whose send was committed (a reply comes once its
    decisions and sends are committed, so the clock stops after the last commit); every other
    outcome is reported beside it. `event_ids`: each event carries a fresh event_id (the
    reservation is a database write before deciding)."""
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    allowed = 0
    run_id = uuid.uuid4().hex[:8]
    requests = iter(range(n // batch))
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector, headers={"X-API-KEY": KEY}) as session:

        async def worker() -> None:
            nonlocal allowed
            for r in requests:
                events: list[dict[str, Any]] = [
                    {"customer_id": f"u{r}-{j}", "event": event} for j in range(batch)
                ]
                if event_ids:
                    for j, e in enumerate(events):
                        e["event_id"] = f"{run_id}-{r}-{j}"
                body = orjson.dumps(events[0] if batch == 1 else events)
                t = time.perf_counter()
                async with session.post(
                    f"{engine.url}/api/v1/events",
                    data=body,
                    headers={"content-type": "application/json"},
                ) as resp:
                    status, content = resp.status, await resp.read()
                latencies.append(time.perf_counter() - t)
                if status != 200:  # a 4xx/5xx decides nothing: reported, never counted
                    outcomes[f"HTTP {status}"] = outcomes.get(f"HTTP {status}", 0) + batch
                    continue
                reply = orjson.loads(content)
                for result in [reply] if batch == 1 else reply["results"]:
                    for m in result["matched"]:
                        outcomes[m["outcome"]] = outcomes.get(m["outcome"], 0) + 1
                        allowed += m["outcome"] == "allowed" and m["sent"] is True

        cpu0 = cpu_seconds(engine.proc.pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        seconds = time.perf_counter() - t0
        cpu = cpu_seconds(engine.proc.pid) - cpu0
    return {
        "decisions": allowed,
        "seconds": seconds,
        "per_s": allowed / seconds,
        "cpu_us_per_decision": cpu / allowed * 1e6 if allowed else float("inf"),
        "load": os.getloadavg(),
        "outcomes": outcomes,
        "request_p50_ms": pct(latencies, 50) * 1000,
        "request_p99_ms": pct(latencies, 99) * 1000,
    }


async def timeout_precision(
    engine: Engine, budget_ms: int, probes: int, background_per_s: int
) -> dict[str, Any]:
    """Probes against a gateway that never answers, while other decisions flow at a steady rate."""
    late: list[float] = []
    background_done = 0
    stop = asyncio.Event()
    async with aiohttp.ClientSession(
        headers={"X-API-KEY": KEY}, connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def one(event: str, user: str) -> dict[str, Any]:
            async with session.post(
                f"{engine.url}/api/v1/events", json={"customer_id": user, "event": event}
            ) as r:
                return orjson.loads(await r.read())

        async def background() -> None:
            nonlocal background_done
            interval = 1 / background_per_s
            next_at = time.perf_counter()
            tasks = set()
            i = 0
            while not stop.is_set():
                next_at += interval
                i += 1
                t = asyncio.create_task(one("login", f"bg{i}"))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                background_done += 1
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await asyncio.gather(*tasks)

        async def probe(i: int) -> None:
            reply = await one("deposit", f"hang{i}")
            [m] = reply["matched"]
            assert m["outcome"] == "timeout", m
            late.append(m["latency_ms"] - budget_ms)

        bg = asyncio.create_task(background())
        await asyncio.sleep(1.0)
        t0 = time.perf_counter()
        probe_tasks = []
        for i in range(probes):
            probe_tasks.append(asyncio.create_task(probe(i)))
            await asyncio.sleep(0.05)
        await asyncio.gather(*probe_tasks)
        seconds = time.perf_counter() - t0
        stop.set()
        await bg
    return {
        "budget_ms": budget_ms,
        "probes": probes,
        "background_per_s_target": background_per_s,
        "background_per_s": background_done / (seconds + 1.0),
        "late_ms_min": min(late),
        "late_ms_p50": pct(late, 50),
        "late_ms_p99": pct(late, 99),
        "late_ms_max": max(late),
        "early": sum(1 for x in late if x < 0),
        "load": os.getloadavg(),
    }


def start_gateway(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "gateway_server.py"), str(port)],
        stdout=subprocess.DEVNULL,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="clearance-gate-bench-"))
    gport = free_port_pair()
    gateways = [start_gateway(gport)]
    fast, hang = f"http://127.0.0.1:{gport}/gate", f"http://127.0.0.1:{gport + 1}/gate"
    wait_port(gport)
    wait_port(gport + 1)
    for _ in range(args.gateway_processes - 1):
        gateways.append(start_gateway(gport))
    out: dict[str, Any] = {
        "decisions_per_run": args.decisions,
        "throughput": {},
        "engine_processes": args.engine_processes,
        "engine_client": args.engine_client,
        "server": args.server,
        "gateway_processes": args.gateway_processes,
        "event_loop": "uvloop",
        "load_average_at_start": os.getloadavg(),
    }
    try:
        for c in args.concurrency:
            say(f"concurrency {c}: {args.tries} interleaved tries of raw, raw aiohttp, engine")
            pids = tuple(g.pid for g in gateways)
            await raw(fast, c, 2000)  # warm-up
            engine = Engine(workdir, c, args.engine_client, processes=args.engine_processes)
            tries: dict[str, list[dict[str, Any]]] = {"raw": [], "raw_aiohttp": [], "batches": []}
            try:
                async with aiohttp.ClientSession() as s:
                    await setup(s, engine, fast)
                await engine_load(engine, 2000, 100, max(2, c // 50))  # warm-up
                for _ in range(args.tries):
                    tries["raw"].append(await raw(fast, c, args.decisions, gateway_pids=pids))
                    tries["raw_aiohttp"].append(
                        await raw(fast, c, args.decisions, "aiohttp", gateway_pids=pids)
                    )
                    tries["batches"].append(
                        await engine_load(engine, args.decisions, 100, max(2, c // 50))
                    )
                    r, a, b = tries["raw"][-1], tries["raw_aiohttp"][-1], tries["batches"][-1]
                    say(
                        f"  raw pyreqwest {r['per_s']:,.0f} calls/s ({r['cpu_us_per_call']:.0f} "
                        f"us CPU a call, gateway {r['gateway_cores']:.2f} cores), aiohttp "
                        f"{a['per_s']:,.0f} ({a['cpu_us_per_call']:.0f} "
                        f"us); engine, batches of 100: {b['per_s']:,.0f} decisions/s "
                        f"({b['cpu_us_per_decision']:.0f} us CPU a decision) {b['outcomes']} "
                        f"({la()})"
                    )
                singles = []
                for _ in range(args.single_tries):
                    singles.append(await engine_load(engine, args.decisions // 2, 1, c))
                    say(
                        f"  engine, single events x{c}: {singles[-1]['per_s']:,.0f} decisions/s "
                        f"({singles[-1]['cpu_us_per_decision']:.0f} us CPU a decision) ({la()})"
                    )
            finally:
                engine.stop()
            # the gateway gets a second process: a raw rate that rises shows it was the bottleneck.
            # Compared with raw passes against one process made just before, in the same minutes;
            # the second process must be up and take its share of the calls (its own CPU), or the
            # check says nothing.
            adjacent = [
                await raw(fast, c, args.decisions, gateway_pids=pids) for _ in range(args.tries)
            ]
            extra = start_gateway(gport)
            try:
                await asyncio.sleep(0.5)
                if extra.poll() is not None:
                    raise RuntimeError(f"the second gateway process exited ({extra.returncode})")
                await raw(fast, c, 2000)  # warm-up: new connections spread over both
                extra_cpu0 = cpu_seconds(extra.pid)
                two = [
                    await raw(fast, c, args.decisions, gateway_pids=(*pids, extra.pid))
                    for _ in range(args.tries)
                ]
                extra_share = (cpu_seconds(extra.pid) - extra_cpu0) / max(
                    1e-9, sum(r["gateway_cores"] * r["seconds"] for r in two)
                )
            finally:
                extra.terminate()
                extra.wait()
            base, base_aiohttp, batches = (
                max(tries[k], key=lambda r: r["per_s"]) for k in ("raw", "raw_aiohttp", "batches")
            )
            base_two = max(two, key=lambda r: r["per_s"])
            base_adjacent = max(adjacent, key=lambda r: r["per_s"])
            single = max(singles, key=lambda r: r["per_s"])
            say(
                f"  raw pyreqwest with {args.gateway_processes + 1} gateway processes: "
                + " ".join(f"{r['per_s']:,.0f}" for r in two)
                + f" calls/s, the new one taking {extra_share:.0%} of the gateways' CPU; with "
                f"{args.gateway_processes} just before: "
                + " ".join(f"{r['per_s']:,.0f}" for r in adjacent)
                + f" (gateway {base_adjacent['gateway_cores']:.2f} cores) ({la()})"
            )
            fastest = max(
                base["per_s"], base_aiohttp["per_s"], base_two["per_s"], base_adjacent["per_s"]
            )
            cpu_raw = min(r["cpu_us_per_call"] for r in tries["raw"] + tries["raw_aiohttp"])
            out["throughput"][c] = {
                "raw": base,
                "raw_aiohttp": base_aiohttp,
                "raw_second_gateway_process": base_two,
                "raw_one_gateway_adjacent": base_adjacent,
                "second_gateway_cpu_share": extra_share,
                "raw_rise_with_second_gateway": base_two["per_s"] / base_adjacent["per_s"] - 1,
                "raw_fastest_per_s": fastest,
                "ratio_batches_vs_aiohttp": batches["per_s"] / base_aiohttp["per_s"],
                "batches_of_100": batches,
                "single": single,
                "ratio_batches": batches["per_s"] / fastest,
                "ratio_single": single["per_s"] / fastest,
                "raw_cpu_us_per_call": cpu_raw,
                "engine_cpu_us_per_decision": min(
                    r["cpu_us_per_decision"] for r in tries["batches"]
                ),
                "tries": {
                    **{k: [r["per_s"] for r in v] for k, v in tries.items()},
                    "raw_second_gateway_process": [r["per_s"] for r in two],
                    "raw_one_gateway_adjacent": [r["per_s"] for r in adjacent],
                    "single": [r["per_s"] for r in singles],
                },
            }
            t = out["throughput"][c]
            t["cpu_ratio"] = t["engine_cpu_us_per_decision"] / cpu_raw

        say("overhead at concurrency 1, single events")
        base1 = await raw(fast, 1, 3000)
        engine = Engine(workdir, 64, args.engine_client, breaker=False)  # overhead, timeouts
        try:
            async with aiohttp.ClientSession() as s:
                await setup(s, engine, fast)
            await engine_load(engine, 500, 1, 1)
            one = await engine_load(engine, 3000, 1, 1)
            with_ids = await engine_load(engine, 3000, 1, 1, event_ids=True)
            out["overhead"] = {
                "load": os.getloadavg(),
                "raw_p50_ms": base1["p50_ms"],
                "engine_p50_ms": one["request_p50_ms"],
                "overhead_p50_ms": one["request_p50_ms"] - base1["p50_ms"],
                "engine_event_id_p50_ms": with_ids["request_p50_ms"],
                "engine_event_id_p99_ms": with_ids["request_p99_ms"],
            }
            say(
                f"  raw p50 {base1['p50_ms']:.3f} ms, engine p50 {one['request_p50_ms']:.3f} ms, "
                f"with event ids p50 {with_ids['request_p50_ms']:.3f} ms ({la()})"
            )

            say("timeout precision: a gateway that never answers, 500 other decisions/s")
            out["timeout"] = []
            for budget in (200, 2000):
                async with aiohttp.ClientSession() as s:
                    await setup(s, engine, hang, budget)
                t = await timeout_precision(engine, budget, args.probes, 500)
                out["timeout"].append(t)
                say(
                    f"  budget {budget} ms: late p50 {t['late_ms_p50']:.2f} p99 "
                    f"{t['late_ms_p99']:.2f} max {t['late_ms_max']:.2f} ms, early {t['early']} "
                    f"({la()})"
                )
        finally:
            engine.stop()

        if args.memory_decisions:
            say(f"memory: {args.memory_decisions:,} decisions")
            engine = Engine(workdir, 64, args.engine_client)
            try:
                async with aiohttp.ClientSession() as s:
                    await setup(s, engine, fast)
                await engine_load(engine, 50_000, 100, 2)
                before = rss_kb(engine.proc.pid)
                done = 0
                t0 = time.perf_counter()
                while done < args.memory_decisions:
                    step = min(100_000, args.memory_decisions - done)
                    await engine_load(engine, step, 100, 2)
                    done += step
                    say(
                        f"  {done:,} decisions, RSS {rss_kb(engine.proc.pid) / 1024:.1f} MB "
                        f"({la()})"
                    )
                after = rss_kb(engine.proc.pid)
                out["memory"] = {
                    "decisions": done,
                    "rss_after_warmup_mb": before / 1024,
                    "rss_after_mb": after / 1024,
                    "growth_mb": (after - before) / 1024,
                    "seconds": time.perf_counter() - t0,
                    "load": os.getloadavg(),
                }
            finally:
                engine.stop()
    finally:
        for gw in gateways:
            gw.terminate()
            gw.wait()
    out["load_average_at_end"] = os.getloadavg()
    return out


def verdict(value: float, target: float, higher: bool = True) -> str:
    ok = value >= target if higher else value <= target
    return f"{'>=' if higher else '<='} {target}: {'met' if ok else 'MISSED'}"


def load(figure: dict[str, Any]) -> str:
    one, five, _ = figure["load"]
    return f"load {one:.2f}/{five:.2f}"


def report(out: dict[str, Any]) -> None:
    start, end = out["load_average_at_start"], out["load_average_at_end"]
    print(
        f"\nengine: {out['engine_processes']} API process(es) under {out['server']}, gate client "
        f"{out['engine_client']}, "
        f"everything on {out['event_loop']}, {out['gateway_processes']} gateway process(es); "
        f"load average at start {start[0]:.2f} {start[1]:.2f} {start[2]:.2f}, at end "
        f"{end[0]:.2f} {end[1]:.2f} {end[2]:.2f}"
    )
    print("throughput: best of each figure's interleaved tries; ratios to the fastest raw figure")
    for c, t in out["throughput"].items():
        print(
            f"raw gateway calls, concurrency {c:<3}           {t['raw']['per_s']:>9,.0f}/s"
            f"   (pyreqwest, {load(t['raw'])}, gateway {t['raw']['gateway_cores']:.2f} cores; "
            f"aiohttp {t['raw_aiohttp']['per_s']:,.0f}/s, {load(t['raw_aiohttp'])})"
        )
        two, adj = t["raw_second_gateway_process"], t["raw_one_gateway_adjacent"]
        print(
            f"  second gateway process: {two['per_s']:,.0f}/s ({load(two)}) vs one just before "
            f"{adj['per_s']:,.0f}/s ({load(adj)}): {t['raw_rise_with_second_gateway']:+.0%}, "
            f"the new process took {t['second_gateway_cpu_share']:.0%} of the gateways' CPU"
        )
        b, sg = t["batches_of_100"], t["single"]
        print(
            f"engine, batches of 100, concurrency {c:<3}      {b['per_s']:>9,.0f}/s"
            f"   ratio {t['ratio_batches']:.2f} ({verdict(t['ratio_batches'], 0.5)}), {load(b)}, "
            f"outcomes {b['outcomes']}"
        )
        print(
            f"engine, single events, concurrency {c:<3}       {sg['per_s']:>9,.0f}/s"
            f"   ratio {t['ratio_single']:.2f} ({verdict(t['ratio_single'], 0.25)}), "
            f"{load(sg)}, outcomes {sg['outcomes']}"
        )
        print(
            f"CPU, concurrency {c:<3}: engine {t['engine_cpu_us_per_decision']:.0f} us a decision "
            f"(batches; single events {sg['cpu_us_per_decision']:.0f}), raw client "
            f"{t['raw_cpu_us_per_call']:.0f} us a call: ratio {t['cpu_ratio']:.2f} "
            f"({verdict(t['cpu_ratio'], 2, higher=False)}), {load(b)}"
        )
        tried = t["tries"]
        print(
            "  tries: raw "
            + " ".join(f"{x:,.0f}" for x in tried["raw"])
            + " | aiohttp "
            + " ".join(f"{x:,.0f}" for x in tried["raw_aiohttp"])
            + " | 1 gateway just before "
            + " ".join(f"{x:,.0f}" for x in tried["raw_one_gateway_adjacent"])
            + " | 2 gateways "
            + " ".join(f"{x:,.0f}" for x in tried["raw_second_gateway_process"])
            + " | engine "
            + " ".join(f"{x:,.0f}" for x in tried["batches"])
            + " | single "
            + " ".join(f"{x:,.0f}" for x in tried["single"])
        )
    if "overhead" in out:
        o = out["overhead"]
        print(
            f"overhead at c1: engine p50 {o['engine_p50_ms']:.3f} ms - raw p50 "
            f"{o['raw_p50_ms']:.3f} ms = {o['overhead_p50_ms']:.3f} ms (<= 1 ms), {load(o)}"
        )
    for t in out.get("timeout", []):
        print(
            f"timeout, budget {t['budget_ms']} ms: gives up +{t['late_ms_p50']:.2f} ms p50, "
            f"+{t['late_ms_p99']:.2f} ms p99, +{t['late_ms_max']:.2f} max, {t['early']} early "
            f"({verdict(t['late_ms_p99'], 5, higher=False)}; none early: "
            f"{'met' if not t['early'] else 'MISSED'}), background {t['background_per_s']:.0f}/s, "
            f"load {t['load'][0]:.2f}"
        )
    if "memory" in out:
        m = out["memory"]
        print(
            f"memory: {m['decisions']:,} decisions, RSS {m['rss_after_warmup_mb']:.1f} -> "
            f"{m['rss_after_mb']:.1f} MB ({m['growth_mb']:+.1f} MB, <= 50 MB), {load(m)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument(
        "--tries",
        type=int,
        default=3,
        help="interleaved passes of each throughput figure; the best of each counts",
    )
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[16, 64],
        help="CLEARANCE_GATE_CONCURRENCY and raw concurrency, comma separated (default 16,64)",
    )
    parser.add_argument("--single-tries", type=int, default=2, help="single-event passes")
    parser.add_argument(
        "--gateway-processes",
        type=int,
        default=1,
        help="bench gateway processes (SO_REUSEPORT); a check with one more runs anyway",
    )
    parser.add_argument("--memory-decisions", type=int, default=1_000_000)
    parser.add_argument(
        "--engine-processes",
        type=int,
        default=1,
        help="API processes for the throughput runs (clearance serve --workers)",
    )
    parser.add_argument(
        "--engine-client",
        default="pyreqwest",
        choices=["pyreqwest"],
        help="the engine's gate client (CLEARANCE_GATE_CLIENT)",
    )
    parser.add_argument(
        "--server",
        default="uvicorn",
        choices=["uvicorn", "granian"],
        help="the engine's HTTP server (granian: install it; the app is bench/granian_app.py)",
    )
    args = parser.parse_args()
    Engine.server = args.server
    out = uvloop.run(run(args))
    report(out)
    target = ROOT / "bench" / "out" / "gate.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2, default=str))
    print(f"(written to {target})")


if __name__ == "__main__":
    main()
