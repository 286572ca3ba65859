"""The real `clearance serve` in a subprocess, for drills and benches: start, wait, RSS, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from clearance.loopback import free_port

CLI = [sys.executable, "-m", "clearance.cli"]


class ServeProcess:
    """`python -m clearance.cli serve` on a free loopback port, with a bootstrap admin key."""

    def __init__(
        self,
        database_url: str,
        workdir: Path,
        key: str = "clr_drill_admin_key_0123456789",
        extra_args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.key = key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        self.sends_dir = workdir / "sends"
        self.env = {
            **os.environ,
            "CLEARANCE_BOOTSTRAP_API_KEY": key,
            "CLEARANCE_WORKER_POLL_SECONDS": "0.1",
            "CLEARANCE_FILE_CHANNEL_DIR": str(self.sends_dir),
            "CLEARANCE_OUTBOUND_ALLOW": "127.0.0.0/8",
            "CLEARANCE_RATE_LIMIT_PER_SECOND": "0",
            **env,
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (kept open for the process's life)
        self.proc = subprocess.Popen(
            [
                *CLI,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database-url",
                database_url,
                *extra_args,
            ],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=5) as c:
            while True:
                try:
                    if c.get(f"{self.url}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"serve did not start:\n{self.log()}")
                time.sleep(0.1)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-KEY": self.key}

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def rss_bytes(self) -> int:
        """Resident set size of the server process, from /proc (Linux)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a clean shutdown drains the decision log); SIGKILL if it does not exit.
        Returns the exit code: uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is
        a clean exit too."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
