"""Scheduled conditional campaign, end to end, on realistic data, against the strongest baselines.

Customers have random ids of 8-16 characters and are uploaded in random order. For each database
(SQLite, PostgreSQL), on a fresh store, one campaign per `--in-flight` value (default 1 and 4
approval calls in flight), in turn:

1. upload the target group (NDJSON, 100,000 a call), schedule, process it with an in-process
   Worker on a FakeClock (the notification; state awaiting_clearance);
2. right after it, the listener's first pass: every customer through GetProcessedCampaignCustomers
   ($top 10,000);
3. at once, approvals in the order those pages gave the customers, 10,000 a call, three passes:
   approve all, revoke a random half, approve all again;
4. then the baselines: a raw keyset scan of exactly the columns that page returns (SQLite:
   fetchall and one JSON array a page, the engine's route; PostgreSQL: text and binary), and
   the same passes straight into a table shaped like `approvals` with the driver, in the same
   order (SQLite: executemany and the json_each route the engine uses; PostgreSQL: COPY
   write_row and one COPY text buffer); every route each try, the fastest counting;
5. the last campaign is frozen (the worker's clock past ClearanceRequiredBy) and executed to the
   file channel; every customer's send is checked; the API process's peak RSS is read.

`--e2e` (one campaign, one pass, no raw baselines) is the size run:
`--database postgres --customers 10000000 --e2e`.

Usage: .venv/bin/python bench/scheduled.py [--database sqlite|postgres|both] [--customers N]
Figures (with the load average beside each) go to stdout and to bench/out/scheduled-<db>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import platform
import random
import secrets
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psycopg

from clearance.clock import FakeClock
from clearance.config import Settings
from clearance.loopback import free_port
from clearance.scheduled.worker import Worker
from clearance.store import open_store

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "out"
APPROVAL_TARGET = 0.6  # approvals rows/s over raw insert rows/s, each pass
SLOWDOWN_TARGET = 1.3  # the third pass's time per row over the first's
PAGING_TARGET = 0.5  # API paging rows/s (first pass) over a raw keyset scan of the same columns
TIERS = ("gold", "silver", "bronze")
CHANNEL_ID = 501


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("inf")


class Progress:
    """Prints a line roughly every 10% of a long step."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.done = 0
        self.next_mark = total / 10
        self.started = time.perf_counter()

    def add(self, n: int) -> None:
        self.done += n
        if self.done >= self.next_mark or self.done >= self.total:
            elapsed = time.perf_counter() - self.started
            say(
                f"  {self.label}: {self.done:,}/{self.total:,} "
                f"({rate(self.done, elapsed):,.0f} rows/s)"
            )
            while self.next_mark <= self.done:
                self.next_mark += self.total / 10


# --- environment: a fresh database, the API subprocess --------------------------------------------
def pg_base(admin_url: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    if not base.startswith(("postgresql://", "postgres://")):
        raise SystemExit(
            f"--postgres-url must look like postgresql://user@host:port/db: {admin_url}"
        )
    return base


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path, admin_url: str, keep: bool) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite://{workdir / 'bench.db'}"
        return
    name = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    say(f"created PostgreSQL database {name}")
    try:
        yield f"{pg_base(admin_url)}/{name}"
    finally:
        if keep:
            say(f"kept PostgreSQL database {name}")
        else:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            say(f"dropped PostgreSQL database {name}")


@contextlib.contextmanager
def api_server(
    url: str, workdir: Path, key: str, wrapper: list[str], processes: int = 1
) -> Iterator[tuple[str, int]]:
    exe = Path(sys.executable).parent / "clearance"
    if not exe.exists():
        exe = Path(shutil.which("clearance") or "clearance")
    port = free_port()
    env = dict(os.environ)
    env.update(
        CLEARANCE_BOOTSTRAP_API_KEY=key,
        CLEARANCE_OUTBOUND_ALLOW="127.0.0.0/8",
        CLEARANCE_RATE_LIMIT_PER_SECOND="0",
        CLEARANCE_FILE_CHANNEL_DIR=str(workdir / "sends"),
    )
    log_path = workdir / "server.log"
    cmd = [*wrapper, str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"]
    cmd += ["--database-url", url, "--workers", str(processes)]
    with open(log_path, "wb") as log:
        # Its own process group: SIGINT reaches the server (and a profiler wrapping it) alone.
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        say(f"API up at {base} (pid {proc.pid})")
        yield base, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # uvicorn (and py-spy) shut down cleanly on it
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def check(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} -> HTTP {response.status_code}: "
            f"{response.text[:500]}"
        )
    return orjson.loads(response.content) if response.content else None


# --- the data: random ids, uploaded in random order -----------------------------------------------
ALPHABET = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", np.uint8
)


def customer_ids(n: int, seed: int) -> list[str]:
    """n distinct random ids of 8-16 characters, in random order (the order they are uploaded)."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        want = n - len(out)
        lengths = rng.integers(8, 17, want)
        chars = ALPHABET[rng.integers(0, len(ALPHABET), (want, 16))].tobytes()
        for i, length in enumerate(lengths.tolist()):
            out[chars[i * 16 : i * 16 + length].decode()] = None
    ids = list(out)
    random.Random(seed).shuffle(ids)
    return ids


def attributes_json(i: int) -> str:
    return f'{{"tier":"{TIERS[i % 3]}","score":{i % 1000}}}'


def la() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


def create_and_upload(
    http: httpx.Client, ids: list[str], upload_chunk: int, name: str
) -> dict[str, Any]:
    execute_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    campaign = check(
        http.post(
            "/api/v1/campaigns",
            json={
                "name": name,
                "execute_at": execute_at.isoformat(),
                "conditional": True,
                "clearance_lead_seconds": 60,
                "action": {"id": 7, "name": "bench", "promo_codes": ["P-A", "P-B", "P-C"]},
                "channels": [{"id": CHANNEL_ID, "name": "file", "templates": [{"id": 9}]}],
                "draft": True,
            },
        )
    )
    cid = campaign["campaign_id"]
    say(f"campaign {cid} created (draft), execute_at {campaign['execute_at']} UTC")
    n = len(ids)
    progress = Progress("upload", n)
    started = time.perf_counter()
    out: dict[str, Any] = {}
    for lo in range(0, n, upload_chunk):
        body = b"".join(
            b'{"customer_id":"%s","attributes":%s}\n'
            % (ids[i].encode(), attributes_json(i + 1).encode())
            for i in range(lo, min(n, lo + upload_chunk))
        )
        out = check(
            http.post(
                f"/api/v1/campaigns/{cid}/target-group",
                content=body,
                headers={"content-type": "application/x-ndjson"},
            )
        )
        progress.add(out["added"])
    upload_s = time.perf_counter() - started
    if out.get("target_count") != n:
        raise RuntimeError(f"target_count {out.get('target_count')} != {n}")
    return {"campaign_id": cid, "execute_at": execute_at, "upload_s": upload_s}


# --- paging: the listener's first pass, right after the notification ------------------------------
def page_api(
    http: httpx.Client, campaign_id: int, top: int, ids: list[str], attributes: str
) -> tuple[dict[str, Any], list[str]]:
    """Every customer through GetProcessedCampaignCustomers, as a listener pulls them; the ids in
    page order (what the listener then approves in)."""
    n = len(ids)
    progress = Progress(f"paging $top={top}", n)
    got: list[str] = []
    pages = 0
    params: dict[str, Any] = {"CampaignID": campaign_id, "$top": top}
    if attributes:
        params["CustomerAttributes"] = attributes
    latencies: list[float] = []
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        r = http.get(
            "/current/customers/GetProcessedCampaignCustomers",
            params={**params, "$skip": len(got)},
        )
        latencies.append(time.perf_counter() - t0)
        rows = check(r)
        if not rows:
            break
        lo = len(got)
        got.extend(row["CustomerID"] for row in rows)
        if got[lo:] != ids[lo : len(got)]:  # every row, not just the page's ends
            raise RuntimeError(f"page at $skip={lo} does not hold the customers in upload order")
        pages += 1
        progress.add(len(rows))
        if len(rows) < top:
            break
    seconds = time.perf_counter() - started
    if len(got) != n:
        raise RuntimeError(f"paged {len(got)} customers, expected {n}")
    run = {
        "top": top,
        "attributes": attributes,
        "rows": n,
        "pages": pages,
        "seconds": seconds,
        "rows_per_s": rate(n, seconds),
        "page_ms_first": latencies[0] * 1000,
        "page_ms_p50": statistics.median(latencies) * 1000,
        "page_ms": [round(t * 1000, 2) for t in latencies],
        "load": os.getloadavg(),
    }
    return run, got


def scan_sql(attributes: bool) -> str:
    """The raw keyset scan reads what the compared page returns: the key, the id (the PromoCode
    is computed from the key) and, only when the page asks for some, the attributes."""
    return (
        f"SELECT seq, customer_id{', attributes' if attributes else ''} FROM target_customers "
        "WHERE campaign_id = ? AND seq > ? ORDER BY seq LIMIT ?"
    )


# Tried in turn each try; the faster counts. SQLite: fetchall, or the whole page as one JSON
# array decoded with orjson (the engine's route). PostgreSQL: text or binary results.
SCAN_ROUTES = {"sqlite": ("fetchall", "json"), "postgres": ("text", "binary")}


def raw_scan(
    kind: str, url: str, campaign_id: int, limit: int, n: int, attrs: bool, route: str
) -> float:
    """Seconds for a keyset scan of the campaign's target group straight through the driver."""
    got = 0
    last = 0
    sql = scan_sql(attrs)
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            lite = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)
            stack.callback(lite.close)
            if route == "json":
                columns, _, rest = sql.removeprefix("SELECT ").partition(" FROM ")
                sql = (
                    f"SELECT json_group_array(json_array({columns})) FROM "
                    f"(SELECT {columns} FROM {rest})"
                )

                def fetch(after: int) -> list[Any]:
                    row = lite.execute(sql, (campaign_id, after, limit)).fetchone()
                    return orjson.loads(row[0]) if row and row[0] else []
            else:

                def fetch(after: int) -> list[Any]:
                    return lite.execute(sql, (campaign_id, after, limit)).fetchall()
        else:
            pg = stack.enter_context(psycopg.connect(url, autocommit=True))
            pg_sql = sql.replace("?", "%s")
            binary = route == "binary"

            def fetch(after: int) -> list[Any]:
                return pg.execute(pg_sql, (campaign_id, after, limit), binary=binary).fetchall()

        started = time.perf_counter()
        while True:
            rows = fetch(last)
            if not rows:
                break
            got += len(rows)
            last = rows[-1][0]
            if len(rows) < limit:
                break
        seconds = time.perf_counter() - started
    if got != n:
        raise RuntimeError(f"raw scan read {got} rows, expected {n}")
    return seconds


# --- approvals: three passes through the API ------------------------------------------------
PASSES = ("approve all", "revoke a random half", "approve all again")


def pass_entries(order: list[str], which: int, half: set[str]) -> list[tuple[str, bool]]:
    """The entries of pass `which`, in the order the listener got the customers."""
    if which == 1:
        return [(c, False) for c in order if c in half]
    return [(c, True) for c in order]


def approval_bodies(
    campaign_id: int, entries: list[tuple[str, bool]], per_call: int
) -> list[tuple[int, bytes]]:
    return [
        (
            len(entries[lo : lo + per_call]),
            orjson.dumps(
                {
                    "CampaignID": campaign_id,
                    "PromosUpdated": [
                        {"CustomerID": c, "Status": s} for c, s in entries[lo : lo + per_call]
                    ],
                }
            ),
        )
        for lo in range(0, len(entries), per_call)
    ]


def approve_all(
    base: str, key: str, bodies: list[tuple[int, bytes]], in_flight: int, label: str
) -> dict[str, Any]:
    total = sum(count for count, _ in bodies)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    latencies: list[float] = []  # in call order (a call's index in the pass)
    progress = Progress(label, total)
    with httpx.Client(
        base_url=base, headers={"X-API-KEY": key}, timeout=300, limits=limits
    ) as http:
        check(http.get("/healthz"))  # open the connection before the clock starts

        def one(item: tuple[int, tuple[int, bytes]]) -> tuple[int, float]:
            _index, (count, body) = item
            t0 = time.perf_counter()
            out = check(
                http.post(
                    "/current/integrations/UpdateCustomerPromotionStatus",
                    content=body,
                    headers={"content-type": "application/json"},
                )
            )
            seconds = time.perf_counter() - t0
            if out["Applied"] != count or out["NotInTargetGroup"]:
                raise RuntimeError(f"approval call applied {out['Applied']} of {count}: {out}")
            return count, seconds

        started = time.perf_counter()
        if in_flight == 1:
            for item in enumerate(bodies):
                count, seconds = one(item)
                latencies.append(seconds)
                progress.add(count)
        else:
            with ThreadPoolExecutor(in_flight) as pool:
                for count, seconds in pool.map(one, enumerate(bodies)):
                    latencies.append(seconds)
                    progress.add(count)
        seconds = time.perf_counter() - started
    tenth = max(1, len(latencies) // 10)
    return {
        "in_flight": in_flight,
        "rows": total,
        "calls": len(bodies),
        "seconds": seconds,
        "rows_per_s": rate(total, seconds),
        "call_ms_first": latencies[0] * 1000,
        "call_ms_second": latencies[min(1, len(latencies) - 1)] * 1000,
        "call_ms_p50": statistics.median(latencies) * 1000,
        "call_ms_first_tenth_p50": statistics.median(latencies[:tenth]) * 1000,
        "call_ms_last_tenth_p50": statistics.median(latencies[-tenth:]) * 1000,
        "call_ms_max": max(latencies) * 1000,
        "load": os.getloadavg(),
    }


# --- raw approval baselines: the same rows, the same order, the same table shape ----------------
RAW_TABLE = "bench_raw_approvals"
RAW_COLUMNS = ("campaign_id", "seq", "customer_id", "status", "at")
# Tried in turn; per pass, the faster route counts. SQLite: executemany, or one statement over a
# JSON array (json_each, the route the engine's approvals take). PostgreSQL: COPY with psycopg's
# write_row per row, or one pre-built COPY text buffer (the engine's route).
RAW_ROUTES = {"sqlite": ("executemany", "json"), "postgres": ("write_row", "text")}
JSON_BATCH = 20_000  # rows per json_each statement, as the engine's


def make_raw_table(kind: str, url: str) -> None:
    """A fresh table shaped like `approvals` (columns, types and index)."""
    run_sql(kind, url, f"DROP TABLE IF EXISTS {RAW_TABLE}")
    run_sql(
        kind,
        url,
        f"CREATE TABLE {RAW_TABLE} (campaign_id BIGINT NOT NULL, seq BIGINT NOT NULL, "
        "customer_id TEXT NOT NULL, status BOOLEAN NOT NULL, at BIGINT NOT NULL)",
    )
    run_sql(kind, url, f"CREATE INDEX {RAW_TABLE}_latest ON {RAW_TABLE} (campaign_id, seq, at)")


def raw_insert(kind: str, url: str, rows: list[tuple[Any, ...]], route: str) -> float:
    """Seconds to insert `rows` straight through the driver, in one transaction, committed.
    Whatever can be prepared (the JSON arrays, the COPY text) is built before the clock starts."""
    cols = ", ".join(RAW_COLUMNS)
    if kind == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = FULL")  # as the engine's connections
            conn.execute("PRAGMA cache_size = -65536")
            if route == "json":
                # the engine's route: the fields every row shares (campaign, time) bound once,
                # (seq, customer_id, status) from the JSON array
                campaign_id, at = rows[0][0], rows[0][4]
                if any(r[0] != campaign_id or r[4] != at for r in rows):
                    raise RuntimeError("raw rows of one pass share the campaign and the time")
                sql = (
                    f"INSERT INTO {RAW_TABLE} (campaign_id, at, seq, customer_id, status) "
                    "SELECT ?1, ?2, value ->> 0, value ->> 1, value ->> 2 FROM json_each(?3)"
                )
                arrays = [
                    orjson.dumps([r[1:4] for r in rows[i : i + JSON_BATCH]])
                    for i in range(0, len(rows), JSON_BATCH)
                ]
                started = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                for array in arrays:
                    conn.execute(sql, (campaign_id, at, array))
            else:
                marks = ", ".join("?" for _ in RAW_COLUMNS)
                started = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(f"INSERT INTO {RAW_TABLE} ({cols}) VALUES ({marks})", rows)
            conn.execute("COMMIT")
            return time.perf_counter() - started
        finally:
            conn.close()
    text = ""
    if route == "text":  # the ids hold no character COPY's text format would need escaped
        text = "".join(
            f"{c}\t{seq}\t{cid}\t{'t' if s else 'f'}\t{at}\n" for c, seq, cid, s, at in rows
        )
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY {RAW_TABLE} ({cols}) FROM STDIN") as copy,
        ):
            if route == "text":
                copy.write(text)
            else:
                for row in rows:
                    copy.write_row(row)
        conn.commit()
        return time.perf_counter() - started


def raw_passes(
    kind: str,
    url: str,
    campaign_id: int,
    passes: list[list[tuple[str, bool]]],
    tries: int,
    order: list[str],
) -> list[dict[str, Any]]:
    """The engine's passes again, straight into a table shaped like `approvals`: each try a fresh
    table and every pass in order (so a later pass lands on what the earlier ones left, as the
    engine's do). Routes alternate between tries; per pass the fastest try counts."""
    samples: list[list[tuple[float, str, tuple[float, float, float]]]] = [[] for _ in passes]
    seq = {cid: i + 1 for i, cid in enumerate(order)}  # each customer's position, as uploaded
    for t in range(tries):
        for route in RAW_ROUTES[kind]:  # every route each try: the better one always measured
            make_raw_table(kind, url)
            for p, entries in enumerate(passes):
                now_ms = int(time.time() * 1000)
                rows = [(campaign_id, seq[cid], cid, status, now_ms) for cid, status in entries]
                seconds = raw_insert(kind, url, rows, route)
                samples[p].append((seconds, route, os.getloadavg()))
                say(
                    f"  raw try {t + 1}/{tries} ({route}), pass {p + 1}: "
                    f"{rate(len(rows), seconds):,.0f} rows/s ({la()})"
                )
    run_sql(kind, url, f"DROP TABLE IF EXISTS {RAW_TABLE}")
    out = []
    for p, entries in enumerate(passes):
        seconds, route, load = min(samples[p])
        out.append(
            {
                "rows": len(entries),
                "seconds": seconds,
                "rows_per_s": rate(len(entries), seconds),
                "route": route,
                "load": load,
                "tries": [{"route": r, "seconds": s} for s, r, _ in samples[p]],
            }
        )
    return out


def count_sent_lines(directory: Path) -> tuple[int, int, int]:
    """(lines, distinct customers, files) over every NDJSON batch file the file channel wrote."""
    lines = 0
    seen: set[str] = set()
    files = 0
    for path in directory.rglob("*.ndjson"):
        files += 1
        for line in path.read_bytes().splitlines():
            if line:
                lines += 1
                seen.add(orjson.loads(line)["CustomerID"])
    return lines, len(seen), files


def run_sql(kind: str, url: str, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """One statement through the driver, autocommitted (so VACUUM works); its rows, if any."""
    if kind == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None, timeout=60)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as pg:
        cur = pg.execute(statement.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def has_table(kind: str, url: str, table: str) -> bool:
    if kind == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        sql = "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?"
    return bool(run_sql(kind, url, sql, (table,)))


def settle(kind: str, url: str, args: argparse.Namespace, why: str) -> float:
    """PostgreSQL: VACUUM (ANALYZE) the target group, as autovacuum would have long before the
    next step in a real schedule (uploads hours ahead; a freeze 30 minutes before execute_at).
    Without it, autovacuum runs in the middle of a timed step on this small machine."""
    if kind != "postgres" or not args.settle:
        return 0.0
    t0 = time.perf_counter()
    run_sql(kind, url, "VACUUM (ANALYZE) target_customers")
    seconds = time.perf_counter() - t0
    say(f"settle ({why}): VACUUM (ANALYZE) target_customers, {seconds:.1f} s (not timed)")
    return seconds


def pg_table_stats(url: str) -> dict[str, Any]:
    rows = run_sql(
        "postgres",
        url,
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup, "
        "pg_total_relation_size(relid), last_autovacuum IS NOT NULL, "
        "last_autoanalyze IS NOT NULL FROM pg_stat_user_tables "
        "WHERE relname IN ('target_customers', 'approvals', 'sends')",
    )
    keys = ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_dead_tup", "total_bytes")
    keys += ("autovacuumed", "autoanalyzed")
    return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}


def git_state() -> str:
    """The commit the engine under test came from, and whether src/ differs from it."""
    try:
        root = HERE.parent
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    import clearance

    where = Path(clearance.__file__).resolve().parent
    if where != (root / "src" / "clearance").resolve():
        return f"imported from {where} (repository at {head})"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}"


def db_version(kind: str, url: str) -> str:
    if kind == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        auto = conn.execute("SHOW autovacuum").fetchone()
    return f"PostgreSQL {version[0] if version else '?'}, autovacuum {auto[0] if auto else '?'}"


def peak_rss_mib(pid: int) -> float:
    """The peak resident set (VmHWM) of the API process, or the largest of its processes."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(c) for c in children)
    peak = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024


# --- one database, start to finish ----------------------------------------------------------------
def run_campaign(
    kind: str,
    url: str,
    args: argparse.Namespace,
    http: httpx.Client,
    base: str,
    key: str,
    worker: Worker,
    clock: FakeClock,
    ids: list[str],
    in_flight: int,
    attributes: str,
    index: int,
) -> dict[str, Any]:
    """One campaign: upload, notify (process), the listener's first paging pass, the approval
    passes in page order, their raw baselines."""
    n = len(ids)
    out: dict[str, Any] = {"in_flight": in_flight, "load_at_start": os.getloadavg()}
    made = create_and_upload(http, ids, args.upload_chunk, f"bench scheduled {index}")
    campaign_id = made["campaign_id"]
    out.update(campaign_id=campaign_id, execute_at=made["execute_at"])
    out["upload"] = {
        "seconds": made["upload_s"],
        "rows_per_s": rate(n, made["upload_s"]),
        "load": os.getloadavg(),
    }
    say(f"  upload: {out['upload']['rows_per_s']:,.0f} rows/s ({la()})")
    settle(kind, url, args, "after upload")
    check(http.post(f"/api/v1/campaigns/{campaign_id}/schedule"))
    clock.set(datetime.now(UTC))
    t0 = time.perf_counter()
    worker.drain()
    out["process_s"] = time.perf_counter() - t0
    out["process_load"] = os.getloadavg()
    state = check(http.get(f"/api/v1/campaigns/{campaign_id}"))
    if state["state"] != "awaiting_clearance":
        raise RuntimeError(f"after processing the campaign is {state}")
    say(
        f"  notified: campaign {campaign_id} awaiting_clearance ({out['process_s']:.1f} s) ({la()})"
    )

    # the listener's first pass, right after the notification: whatever the engine prepares
    # lazily for this campaign is paid here
    columns = f"CustomerAttributes={attributes}" if attributes else "no attributes"
    run, order = page_api(http, campaign_id, args.page_size, ids, attributes)
    out["paging"] = run
    say(f"  paging (first pass, {columns}): {run['rows_per_s']:,.0f} rows/s ({la()})")
    # the raw keyset scan comes after the approval passes (below): run here, it would give the
    # engine idle time to finish what it prepares lazily before the first approval call

    # the approval passes, in page order
    half = set(random.Random(args.seed + index).sample(order, n // 2))
    passes = [pass_entries(order, p, half) for p in range(args.passes)]
    out["approvals"] = []
    bodies: list[Any] = []
    for p, entries in enumerate(passes):
        bodies = approval_bodies(campaign_id, entries, args.approval_batch)
        label = f"pass {p + 1} ({PASSES[p]}), {in_flight} in flight"
        run = approve_all(base, key, bodies, in_flight, label)
        run["pass"] = PASSES[p]
        out["approvals"].append(run)
        say(
            f"  approvals {label}: {run['rows_per_s']:,.0f} rows/s, calls 1st/2nd/p50/last "
            f"tenth {run['call_ms_first']:.0f}/{run['call_ms_second']:.0f}/"
            f"{run['call_ms_p50']:.0f}/{run['call_ms_last_tenth_p50']:.0f} ms ({la()})"
        )
    del bodies
    expected = (n if args.passes != 2 else n - len(half)) if args.passes else 0
    approved = check(http.get(f"/api/v1/campaigns/{campaign_id}"))["counts"]["approved"]
    if approved != expected:
        raise RuntimeError(f"approved {approved} != {expected}")
    if args.scan_tries:  # the target group is unchanged by approvals: the same rows
        scans = [
            (raw_scan(kind, url, campaign_id, args.page_size, n, bool(attributes), route), route)
            for _ in range(args.scan_tries)
            for route in SCAN_ROUTES[kind]
        ]
        best, best_route = min(scans)
        out["raw_scan"] = {
            "limit": args.page_size,
            "attributes": bool(attributes),
            "route": best_route,
            "seconds": best,
            "rows_per_s": rate(n, best),
            "tries": [{"route": r, "seconds": t} for t, r in scans],
            "load": os.getloadavg(),
        }
        out["paging"]["ratio"] = out["paging"]["rows_per_s"] / out["raw_scan"]["rows_per_s"]
        say(
            f"  raw keyset scan ({scan_sql(bool(attributes)).split(' FROM')[0]}), best of "
            f"{len(scans)} ({best_route}): {out['raw_scan']['rows_per_s']:,.0f} rows/s; paging "
            f"ratio {out['paging']['ratio']:.2f} ({la()})"
        )
    if args.raw_tries:
        say(f"  raw baseline: the same passes, {args.raw_tries} tries of each route")
        raws = raw_passes(kind, url, campaign_id + 10_000_000, passes, args.raw_tries, order)
        for run, raw in zip(out["approvals"], raws, strict=True):
            run["raw"] = raw
            run["ratio"] = run["rows_per_s"] / raw["rows_per_s"]
    if out["approvals"]:
        first, last = out["approvals"][0], out["approvals"][-1]
        out["third_over_first"] = (
            last["seconds"] / last["rows"] / (first["seconds"] / first["rows"])
        )
    out["load_at_end"] = os.getloadavg()
    return out


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    n = args.customers
    key = "clr_bench_" + secrets.token_urlsafe(24)
    workdir = Path(tempfile.mkdtemp(prefix=f"clearance-bench-{kind}-"))
    say(f"=== {kind}: {n:,} customers, working in {workdir} ({la()})")
    result: dict[str, Any] = {
        "database": kind,
        "customers": n,
        "workdir": str(workdir),
        "server_processes": args.server_processes,
        "load_average_at_start": os.getloadavg(),
        "campaigns": [],
    }
    t0 = time.perf_counter()
    ids = customer_ids(n, args.seed)
    say(f"{n:,} random ids of 8-16 characters made in {time.perf_counter() - t0:.1f} s")
    try:
        with (
            fresh_database(kind, workdir, args.postgres_url, args.keep) as url,
            api_server(
                url, workdir, key, shlex.split(args.server_wrapper), args.server_processes
            ) as (base, server_pid),
            httpx.Client(base_url=base, headers={"X-API-KEY": key}, timeout=600) as http,
        ):
            result["db_version"] = db_version(kind, url)
            result["engine_commit"] = git_state()
            store = open_store(url)
            clock = FakeClock(datetime.now(UTC))
            settings = Settings(database_url=url, file_channel_dir=str(workdir / "sends"))
            worker = Worker(store, settings, clock, worker_id="bench-worker")
            try:
                for index, in_flight in enumerate(args.in_flight):
                    if index:  # a fresh order for each campaign, uploaded at random again
                        random.Random(args.seed + 100 + index).shuffle(ids)
                    attributes = args.attributes[index % len(args.attributes)]
                    say(f"--- campaign {index + 1}: {in_flight} approval call(s) in flight")
                    c = run_campaign(
                        kind,
                        url,
                        args,
                        http,
                        base,
                        key,
                        worker,
                        clock,
                        ids,
                        in_flight,
                        attributes,
                        index,
                    )
                    result["campaigns"].append(c)
                    if index < len(args.in_flight) - 1:
                        # only the last campaign runs to execution; this one is canceled and its
                        # approvals go, so the next campaign starts from the same empty log
                        check(http.post(f"/api/v1/campaigns/{c['campaign_id']}/cancel"))
                        run_sql(kind, url, "DELETE FROM approvals")
                        if kind == "postgres" and args.settle:
                            run_sql(kind, url, "VACUUM approvals")
                        worker.drain()
                if args.paging_only:
                    result["load_average_at_end"] = os.getloadavg()
                    return result
                campaign_id = result["campaigns"][-1]["campaign_id"]
                execute_at = result["campaigns"][-1]["execute_at"]
                expected = n if args.passes != 2 else n - n // 2
                if kind == "postgres":
                    result["pg_tables_after_approvals"] = pg_table_stats(url)

                # the worker's clock past the deadline (freeze), then execute_at
                crb = execute_at - timedelta(seconds=60)
                clock.set(crb + timedelta(seconds=1))
                t0 = time.perf_counter()
                worker.drain()
                result["freeze_s"] = time.perf_counter() - t0
                result["freeze_load"] = os.getloadavg()
                say(f"freeze: {rate(n, result['freeze_s']):,.0f} customers/s ({la()})")
                state = check(http.get(f"/api/v1/campaigns/{campaign_id}"))
                if state["state"] != "cleared" or state["counts"]["approved"] != expected:
                    raise RuntimeError(f"after the deadline the campaign is {state}")
                settle(kind, url, args, "after the freeze")
                clock.set(execute_at + timedelta(seconds=1))
                say(f"executing {expected:,} sends to the file channel")
                profiler = cProfile.Profile() if args.profile_execution else None
                t0 = time.perf_counter()
                if profiler:
                    profiler.enable()
                worker.drain()
                if profiler:
                    profiler.disable()
                seconds = time.perf_counter() - t0
                if profiler:
                    prof_path = OUT_DIR / f"scheduled-{kind}-execution.prof"
                    profiler.dump_stats(prof_path)
                    say(f"  execution profile written to {prof_path}")
                state = check(http.get(f"/api/v1/campaigns/{campaign_id}"))
                lines, distinct, files = count_sent_lines(workdir / "sends")
                result["execution"] = {
                    "seconds": seconds,
                    "sends_per_s": rate(expected, seconds),
                    "state": state["state"],
                    "counts": state["counts"],
                    "file_lines": lines,
                    "file_customers": distinct,
                    "files": files,
                    "load": os.getloadavg(),
                }
                say(
                    f"  -> {rate(expected, seconds):,.0f} sends/s ({seconds:.1f} s), state "
                    f"{state['state']}, {lines:,} lines in {files} files ({la()})"
                )
                if state["state"] != "executed" or state["counts"]["sent"] != expected:
                    raise RuntimeError(f"execution did not send to all {expected}: {state}")
                if lines != expected or distinct != expected:
                    raise RuntimeError(f"file channel holds {lines} lines / {distinct} customers")
                if kind == "postgres":
                    result["pg_tables_after_execution"] = pg_table_stats(url)
                result["api_peak_rss_mib"] = peak_rss_mib(server_pid)
                say(f"API process peak RSS: {result['api_peak_rss_mib']:,.0f} MiB")
                if git_state() != result["engine_commit"]:
                    result["engine_commit"] += f" (changed during the run: now {git_state()})"
                    say(f"WARNING: the engine's source changed during the run: {git_state()}")
            finally:
                worker.notifier.close()
                store.close()
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["load_average_at_end"] = os.getloadavg()
    return result


# --- reporting ------------------------------------------------------------------------------------
def verdict(value: float | None, target: float, higher: bool = True) -> str:
    if value is None:
        return ""
    ok = value >= target if higher else value <= target
    return f"{'>=' if higher else '<='} {target} {'ok' if ok else 'MISSED'}"


def table(r: dict[str, Any]) -> str:
    n = r["customers"]
    start, end = r["load_average_at_start"], r["load_average_at_end"]
    lines = [
        f"{r['database']} ({r.get('db_version', '')}), {n:,} random ids, "
        f"{r.get('server_processes', 1)} API process(es), engine {r['engine_commit']}",
        f"load average at start {start[0]:.2f} {start[1]:.2f} {start[2]:.2f}, "
        f"at end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}; load (1/5 min) beside each figure",
        f"{'step':<76}{'seconds':>9}{'rows/s':>12}{'ratio':>7}{'load':>11}  target",
        "-" * 129,
    ]

    def row(
        label: str,
        seconds: float | None,
        per_s: float | None,
        load: Any = None,
        ratio: str = "",
        target: str = "",
    ) -> None:
        secs = f"{seconds:>9.2f}" if seconds is not None else " " * 9
        rate_s = f"{per_s:>12,.0f}" if per_s is not None else " " * 12
        where = f"{load[0]:.2f}/{load[1]:.2f}" if load is not None else ""
        lines.append(f"{label:<76}{secs}{rate_s}{ratio:>7}{where:>11}  {target}")

    for c in r["campaigns"]:
        f = c["in_flight"]
        u = c["upload"]
        row(
            f"[{f} in flight] upload target group (NDJSON, API)",
            u["seconds"],
            u["rows_per_s"],
            u.get("load"),
        )
        row(f"[{f} in flight] process (notify)", c["process_s"], None, c.get("process_load"))
        p = c["paging"]
        cols = "attributes" if p["attributes"] else "no attributes"
        row(
            f"[{f} in flight] paging, first pass, $top={p['top']:,}, {cols}",
            p["seconds"],
            p["rows_per_s"],
            p.get("load"),
            f"{p['ratio']:.2f}" if "ratio" in p else "",
            verdict(p.get("ratio"), PAGING_TARGET),
        )
        if "raw_scan" in c:
            s = c["raw_scan"]
            row(
                f"    raw keyset scan of the same columns ({s['route']}, best of "
                f"{len(s['tries'])})",
                s["seconds"],
                s["rows_per_s"],
                s.get("load"),
            )
        for a in c["approvals"]:
            row(
                f"[{f} in flight] {a['pass']} (call 1st {a['call_ms_first']:.0f}, p50 "
                f"{a['call_ms_p50']:.0f}, last tenth {a['call_ms_last_tenth_p50']:.0f} ms)",
                a["seconds"],
                a["rows_per_s"],
                a.get("load"),
                f"{a['ratio']:.2f}" if "ratio" in a else "",
                verdict(a.get("ratio"), APPROVAL_TARGET),
            )
            if "raw" in a:
                row(
                    f"    raw insert, same rows and order ({a['raw']['route']}, best of "
                    f"{len(a['raw']['tries'])})",
                    a["raw"]["seconds"],
                    a["raw"]["rows_per_s"],
                    a["raw"].get("load"),
                )
        if not c["approvals"]:
            continue
        last = c["approvals"][-1]
        row(
            f"[{f} in flight] last pass per row / first pass per row",
            None,
            None,
            last.get("load"),
            f"{c['third_over_first']:.2f}",
            verdict(c["third_over_first"], SLOWDOWN_TARGET, False),
        )
    if "execution" not in r:  # --paging-only
        return "\n".join(lines)
    expected = r["execution"]["counts"]["sent"]
    row("freeze (worker)", r["freeze_s"], rate(n, r["freeze_s"]), r.get("freeze_load"))
    e = r["execution"]
    row("execution to file channel (sends/s)", e["seconds"], e["sends_per_s"], e.get("load"))
    lines.append(
        f"verified: state {e['state']}, sent {expected:,}, {e['file_lines']:,} "
        f"NDJSON lines / {e['file_customers']:,} customers in {e['files']} files"
    )
    lines.append(f"API process peak RSS: {r['api_peak_rss_mib']:,.0f} MiB")
    return "\n".join(lines)


def parse_ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--customers", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    p.add_argument("--seed", type=int, default=13, help="the random ids and orders")
    p.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an existing database to connect to for CREATE/DROP DATABASE bench_*",
    )
    p.add_argument("--upload-chunk", type=int, default=100_000, help="customers per upload call")
    p.add_argument("--approval-batch", type=int, default=10_000, help="approvals per call")
    p.add_argument(
        "--in-flight",
        type=parse_ints,
        default=[1, 4],
        help="approval calls in flight; one campaign each, in turn (default 1,4)",
    )
    p.add_argument(
        "--passes",
        type=int,
        choices=[1, 2, 3],
        default=3,
        help="approval passes: approve all, revoke a random half, approve all again (default 3)",
    )
    p.add_argument("--page-size", type=int, default=10_000, help="$top of the paging pass")
    p.add_argument(
        "--attributes",
        type=lambda s: s.split(","),
        default=["", "tier;score"],
        help="CustomerAttributes of each campaign's paging pass, comma separated, cycled "
        "(default: none for the first, 'tier;score' for the second)",
    )
    p.add_argument(
        "--scan-tries",
        type=int,
        default=2,
        help="raw keyset scans of each route (SQLite fetchall / JSON array, PostgreSQL text / "
        "binary), after the approval passes; the best counts",
    )
    p.add_argument(
        "--raw-tries",
        type=int,
        default=1,
        help="raw insert baselines of every pass with each route (SQLite executemany / "
        "json_each, PostgreSQL COPY write_row / text); the best counts",
    )
    p.add_argument(
        "--e2e",
        action="store_true",
        help="the end-to-end size run: one campaign, 1 in flight, one approval pass, no raw "
        "baselines (each step's rate and the API's peak RSS)",
    )
    p.add_argument(
        "--server-processes",
        type=int,
        default=1,
        help="API processes (clearance serve --workers N); default 1",
    )
    p.add_argument(
        "--server-wrapper",
        default="",
        help="command prefixed to the server's, e.g. 'py-spy record -o server.svg --'",
    )
    p.add_argument(
        "--no-settle",
        dest="settle",
        action="store_false",
        help="PostgreSQL: skip the untimed VACUUM (ANALYZE) after the upload and after the freeze",
    )
    p.add_argument(
        "--profile-execution",
        action="store_true",
        help="cProfile the in-process worker's execution step (bench/out/*.prof)",
    )
    p.add_argument(
        "--paging-only",
        action="store_true",
        help="each campaign: upload, notify, the first paging pass and its raw scan; no "
        "approvals, no freeze or execution (to iterate on paging)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir and the database")
    args = p.parse_args(argv)
    if args.e2e:
        args.in_flight, args.passes, args.raw_tries, args.scan_tries = [1], 1, 0, 0
    if args.paging_only:
        args.passes, args.raw_tries = 0, 0

    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for kind in kinds:
        r = run_one(kind, args)
        r["environment"] = env
        path = OUT_DIR / f"scheduled-{kind}{'-e2e' if args.e2e else ''}.json"
        path.write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2, default=str))
        print("\n" + table(r) + f"\n(written to {path})\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
