"""Drill: the soak (bench/soak.py), shortened to 30 s for CI.

Steady mixed load (events through the gate, approvals, paging) against the real CLI on SQLite;
it must end with no error replies, no RSS growth trend, and every acknowledged approval and
decision in the store. The full run is `python -m bench.soak` (10 minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_soak_30_seconds_on_sqlite() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    r = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", "30", "--interval", "5", "--rate", "80"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    summary = [line for line in r.stdout.splitlines() if line.startswith("SOAK")]
    print(f"\nDRILL soak: {summary[-1] if summary else '(no summary)'}")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert summary and summary[-1].startswith("SOAK OK")
