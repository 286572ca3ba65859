"""The composition root: a Runtime starts once, and its worker thread stops with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clearance.clock import FakeClock
from clearance.config import Settings
from clearance.runtime import Runtime


def test_a_runtime_starts_once(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", worker_poll_seconds=0.01)
    runtime = Runtime.open(settings, FakeClock(), worker=True)

    async def run() -> None:
        await runtime.start()
        thread = runtime._thread
        assert thread is not None and thread.is_alive()
        await runtime.stop()
        assert not thread.is_alive()
        # its decision log does not reopen: a second start must not acknowledge unloggable work
        with pytest.raises(RuntimeError, match="already been started"):
            await runtime.start()

    try:
        asyncio.run(run())
    finally:
        runtime.store.close()
