"""The composition root: the one place that builds the store, the scheduled service, the worker
and the real-time side, and starts and stops them.

`api`, `cli` and `demo` build a Runtime and hand it on (`api.create_app(runtime)`); nothing
below imports this module back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from clearance.clock import Clock, to_ms
from clearance.config import Settings
from clearance.metrics import Metrics
from clearance.scheduled.service import ScheduledService
from clearance.scheduled.worker import Worker
from clearance.store import Store, open_store
from clearance.triggered.runtime import RealTime

audit_log = logging.getLogger("clearance.audit")

WORKER_STOP_SECONDS = 30


@dataclass
class Runtime:
    store: Store
    settings: Settings
    clock: Clock
    metrics: Metrics
    scheduled: ScheduledService
    realtime: RealTime
    worker: Worker | None = None
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)

    @classmethod
    def build(
        cls,
        store: Store,
        settings: Settings,
        clock: Clock,
        *,
        worker: bool = False,
        metrics: Metrics | None = None,
    ) -> Runtime:
        """Everything over an open store. `worker=True` also runs the scheduled worker in a
        thread beside the API (between `start` and `stop`)."""
        return cls.around(ScheduledService(store, settings, clock, metrics or Metrics()), worker)

    @classmethod
    def around(cls, scheduled: ScheduledService, worker: bool = False) -> Runtime:
        """The rest of the runtime around an existing scheduled service (its store, settings,
        clock and metrics)."""
        store, settings, clock, metrics = (
            scheduled.store,
            scheduled.settings,
            scheduled.clock,
            scheduled.metrics,
        )
        return cls(
            store,
            settings,
            clock,
            metrics,
            scheduled,
            RealTime(store, settings, clock, metrics),
            Worker(store, settings, clock, metrics=metrics) if worker else None,
        )

    @classmethod
    def open(cls, settings: Settings, clock: Clock, *, worker: bool = False) -> Runtime:
        """Open (and migrate) the database named by `settings.database_url`, then `build`."""
        return cls.build(open_store(settings.database_url), settings, clock, worker=worker)

    def now_ms(self) -> int:
        return to_ms(self.clock.now())

    def audit(self, actor: str, action: str, target: str, **detail: Any) -> None:
        """Record who changed what (campaigns, listeners, channels, the gateway, keys).
        Never pass a secret or a key in `detail`."""
        self.store.record_audit(self.now_ms(), actor, action, target, detail)
        audit_log.info("%s %s %s", actor, action, target, extra={"actor": actor, "action": action})

    async def start(self) -> None:
        """Load the triggered campaigns, start the decision log and (if any) the worker. A
        runtime starts once: its decision log does not reopen after `stop`, so an app (or a
        second app) that started it again would acknowledge decisions it could not log."""
        if self._started:
            raise RuntimeError("this Runtime has already been started; build a new one")
        self._started = True
        await asyncio.to_thread(self.store.warm_login)
        await self.realtime.start()
        self.start_worker()

    async def stop(self) -> None:
        """Drain the decision log, then stop the worker (it finishes its current step)."""
        await self.realtime.close()
        self.stop_worker()

    def start_worker(self) -> None:
        """Run the worker (if the runtime has one) in a thread until `stop_worker`."""
        if self.worker is None or self._thread is not None:
            return
        self._stop = threading.Event()  # one per run: a thread that outlives a stop stays stopped
        self._thread = threading.Thread(
            target=self.worker.run, args=(self._stop,), name="clearance-worker", daemon=True
        )
        self._thread.start()

    def stop_worker(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=WORKER_STOP_SECONDS)
            self._thread = None
