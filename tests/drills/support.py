"""Shared pieces of the reliability drills: the real worker CLI in a subprocess, file reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from clearance.store import Store

CLI = [sys.executable, "-m", "clearance.cli"]


def worker_env(database_url: str, out_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CLEARANCE_DATABASE_URL": database_url,
        "CLEARANCE_FILE_CHANNEL_DIR": str(out_dir),
        "CLEARANCE_WORKER_POLL_SECONDS": "0.05",
        "CLEARANCE_OUTBOUND_ALLOW": "127.0.0.0/8",
        "CLEARANCE_RATE_LIMIT_PER_SECOND": "0",
        **extra,
    }


class WorkerProcess:
    """`clearance worker` as a separate process (the system clock, the real CLI)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as fh:  # a file, not a pipe: a chatty worker never blocks on it
            self.proc = subprocess.Popen(
                [*CLI, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=fh
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, the lease stays held until it expires."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown) and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None


def campaign_row(store: Store, campaign_id: int) -> dict[str, Any]:
    with store.db.reader() as tx:
        rows = tx.fetchdicts(
            "SELECT state, sends_count, exec_cursor FROM campaigns WHERE campaign_id = ?",
            (campaign_id,),
        )
    return rows[0]


def file_channel_send_ids(out_dir: Path) -> list[str]:
    """Every SendID in every delivered NDJSON batch file (temp files of a killed write excluded)."""
    return [
        orjson.loads(line)["SendID"]
        for f in out_dir.rglob("*.ndjson")
        for line in f.read_bytes().splitlines()
    ]
