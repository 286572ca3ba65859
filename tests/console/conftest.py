"""Browser tests: real Chromium (Debian's `chromium`, launched by Playwright through
`executable_path`; Playwright's own browser download is never used) against the real CLI's
`serve` in a subprocess, with the integrator kit's listener and gateway on loopback.

Without the browser these tests fail under CI (`CI` set) and are skipped elsewhere, loudly: the
terminal summary counts them."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CLEARANCE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
MISSING = "chromium missing"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_present() -> bool:
    return Path(CHROMIUM).exists()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if MISSING in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep(
            "!",
            f"{len(skipped)} browser tests SKIPPED: {MISSING} (apt-get install chromium)",
            red=True,
            bold=True,
        )


# Per module, not per session: the sync API keeps an event loop running in the main thread until
# Playwright stops, and every later test that calls asyncio.run() would fail under it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not chromium_present():
        if os.environ.get("CI"):
            pytest.fail(f"{MISSING} at {CHROMIUM}: CI needs it (.ci/run installs it)")
        pytest.skip(f"{MISSING} at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class UvicornThread:
    """An ASGI app on a loopback port in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from tests.conftest import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the kit did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
