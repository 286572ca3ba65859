"""Prototype, against the raw database: approvals keyed by customer id vs by target position.

    .venv/bin/python -m bench.approvals_layout [--database sqlite|postgres|both] [--customers N]

Not the engine: a measurement for a schema decision (issue 13). Both layouts take the engine's
route for an approval call (10,000 entries, one committed transaction each; SQLite one json_each
statement with synchronous=FULL in WAL mode and the engine's cache size, PostgreSQL one COPY text
buffer), with random ids of 8-16 characters uploaded in random order and approvals arriving in the
order the listener's pages give them (target position order), three passes: approve all, revoke a
random half, approve all again.

- `by id` is the shape before migration 0010: approvals (campaign_id, customer_id, status,
  at), indexed on (campaign_id, customer_id, at). Page order is random in id order, so every
  call's inserts land all over the index, and each commit writes most of its leaf pages again.
- `by position` keys the row by the customer's position (seq) in the frozen target group:
  approvals (campaign_id, seq, customer_id, status, at), indexed on (campaign_id, seq, at), the
  engine's shape since migration 0010. The call's ids are mapped to positions in memory (a dict
  here; the engine's membership index does it with sorted hashes), inside the timing.
Prints rows/s per pass, the first and last call's time, and the third pass over the first.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.scheduled import customer_ids

CALL = 10_000
LAYOUTS = {
    "by id": ("customer_id TEXT NOT NULL", "customer_id"),
    # the engine's shape since migration 0010: keyed by position, the id kept on the row
    "by position": ("seq BIGINT NOT NULL, customer_id TEXT NOT NULL", "seq"),
}


def la() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


class Sqlite:
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "cache_size = -2000"):
            self.conn.execute(f"PRAGMA {pragma}")

    def run(self, sql: str) -> None:
        self.conn.execute(sql)

    def call(self, table: str, key: str, rows: list[tuple[Any, ...]]) -> None:
        # the engine's route: campaign and time bound once, the rest from the JSON array
        keys = "seq, customer_id" if key == "seq" else "customer_id"
        fields = ", ".join(f"value ->> {i}" for i in range(len(rows[0]) - 2))
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            f"INSERT INTO {table} (campaign_id, at, {keys}, status) "
            f"SELECT ?1, ?2, {fields} FROM json_each(?3)",
            (rows[0][0], rows[0][-1], orjson.dumps([r[1:-1] for r in rows])),
        )
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class Postgres:
    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)

    def run(self, sql: str) -> None:
        self.conn.execute(sql)
        self.conn.commit()

    def call(self, table: str, key: str, rows: list[tuple[Any, ...]]) -> None:
        keys = "seq, customer_id" if key == "seq" else "customer_id"
        text = "".join(
            "\t".join(map(str, r[:-2])) + f"\t{'t' if r[-2] else 'f'}\t{r[-1]}\n" for r in rows
        )
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY {table} (campaign_id, {keys}, status, at) FROM STDIN") as copy,
        ):
            copy.write(text)
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def measure(db: Sqlite | Postgres, layout: str, order: list[str], half: set[str]) -> dict[str, Any]:
    column, key = LAYOUTS[layout]
    table = "proto_" + key
    db.run(f"DROP TABLE IF EXISTS {table}")
    db.run(
        f"CREATE TABLE {table} (campaign_id BIGINT NOT NULL, {column}, status BOOLEAN NOT NULL, "
        "at BIGINT NOT NULL)"
    )
    db.run(f"CREATE INDEX {table}_latest ON {table} (campaign_id, {key}, at)")
    position = {cid: i + 1 for i, cid in enumerate(order)}  # the frozen group, in memory
    passes = [
        [(c, True) for c in order],
        [(c, False) for c in order if c in half],
        [(c, True) for c in order],
    ]
    out: dict[str, Any] = {"layout": layout, "passes": []}
    for p, entries in enumerate(passes):
        calls = []
        started = time.perf_counter()
        for lo in range(0, len(entries), CALL):
            t0 = time.perf_counter()
            now = int(time.time() * 1000)
            chunk = entries[lo : lo + CALL]
            if key == "seq":
                rows = [(1, position[c], c, s, now) for c, s in chunk]
            else:
                rows = [(1, c, s, now) for c, s in chunk]
            db.call(table, key, rows)
            calls.append(time.perf_counter() - t0)
        seconds = time.perf_counter() - started
        out["passes"].append(
            {
                "rows_per_s": len(entries) / seconds,
                "seconds_per_row": seconds / len(entries),
                "call_ms_first": calls[0] * 1000,
                "call_ms_p50": statistics.median(calls) * 1000,
                "call_ms_last": calls[-1] * 1000,
                "load": os.getloadavg(),
            }
        )
        r = out["passes"][-1]
        print(
            f"  {layout:<12} pass {p + 1}: {r['rows_per_s']:>9,.0f} rows/s, calls first/p50/last "
            f"{r['call_ms_first']:.0f}/{r['call_ms_p50']:.0f}/{r['call_ms_last']:.0f} ms ({la()})",
            flush=True,
        )
    out["third_over_first"] = (
        out["passes"][2]["seconds_per_row"] / out["passes"][0]["seconds_per_row"]
    )
    db.run(f"DROP TABLE {table}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--customers", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    p.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = p.parse_args()
    order = customer_ids(args.customers, 13)  # upload order = position order = page order
    half = set(random.Random(14).sample(order, len(order) // 2))
    for kind in ["sqlite", "postgres"] if args.database == "both" else [args.database]:
        print(f"=== {kind}, {args.customers:,} random ids, {CALL:,} a call ({la()})", flush=True)
        name = f"bench_{secrets.token_hex(6)}"
        with tempfile.TemporaryDirectory() as tmp:
            if kind == "sqlite":
                db: Sqlite | Postgres = Sqlite(Path(tmp) / "proto.db")
            else:
                with psycopg.connect(args.postgres_url, autocommit=True) as admin:
                    admin.execute(f"CREATE DATABASE {name}")
                db = Postgres(args.postgres_url.rpartition("/")[0] + "/" + name)
            try:
                results = [measure(db, layout, order, half) for layout in LAYOUTS]
            finally:
                db.close()
                if kind == "postgres":
                    with psycopg.connect(args.postgres_url, autocommit=True) as admin:
                        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        print(f"{'layout':<14}{'pass 1':>10}{'pass 2':>10}{'pass 3':>10}{'3rd/1st':>9}")
        for r in results:
            print(
                f"{r['layout']:<14}"
                + "".join(f"{x['rows_per_s']:>10,.0f}" for x in r["passes"])
                + f"{r['third_over_first']:>9.2f}"
            )
        by_id, by_pos = results
        gains = [
            b["rows_per_s"] / a["rows_per_s"]
            for a, b in zip(by_id["passes"], by_pos["passes"], strict=True)
        ]
        print("by position / by id: " + " ".join(f"{g:.2f}x" for g in gains), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
