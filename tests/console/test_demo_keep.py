"""`clearance demo --keep`: the story runs, then the engine stays up with a console sign-in."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx


def test_demo_keep_prints_a_console_url_and_a_sign_in_that_works(tmp_path) -> None:
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clearance.cli", "demo", "--keep"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        found = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = re.search(
                r"console: (http://127\.0\.0\.1:\d+)/\s+sign in with User demo and Password (\S+)",
                log.read_text(errors="replace"),
            )
            if found:
                break
            time.sleep(0.2)
        assert found, log.read_text(errors="replace")
        assert "demo finished." in log.read_text()
        base, password = found[1], found[2]
        with httpx.Client(base_url=base, timeout=10) as http:
            form = http.get("/console/sign-in")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token
            signed = http.post(
                "/console/sign-in",
                data={"user": "demo", "password": password, "csrf": token[1]},
            )
            assert signed.status_code == 303 and signed.headers["location"] == "/console/campaigns"
            listing = http.get("/console/campaigns")
            assert listing.status_code == 200 and "Weekend 10% reload bonus" in listing.text
        assert proc.poll() is None  # still serving
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
