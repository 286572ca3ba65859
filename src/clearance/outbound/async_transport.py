"""The gate's side of the one way out (see `transport`): asynchronous, latency-critical.

URLs are read once each (`canonical_url`, kept per URL string). A gateway name is resolved here,
through the outbound policy, to one allowed address, and the client for it is pinned to that address
(pyreqwest's static resolve map), so reqwest never resolves a gateway name itself; the name is
resolved again every RESOLVE_TTL_SECONDS, and a new answer gets a new client. Addresses need no
pinning: one shared client serves them. The caller bounds every call with its decision deadline
(`asyncio.timeout_at`); the request also gets pyreqwest's total timeout, because cancelling the
Python side does not stop its request task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pyreqwest.client import ClientBuilder
from pyreqwest.exceptions import PyreqwestError

from clearance.outbound.policy import OutboundPolicy
from clearance.outbound.target import OutboundRefused, Target, canonical_url
from clearance.outbound.transport import CallFailed, build, failure

RESOLVE_TTL_SECONDS = 10.0
RETIRE_AFTER_SECONDS = 10.0  # a replaced client is closed once its calls (<= 2.5 s) are over


@dataclass
class _Pinned:
    """The client for one host, pinned to the address its name resolved to through the policy."""

    expires: float
    address: str | None = None
    client: Any = None
    refused: str | None = None
    pending: asyncio.Task[None] | None = None


class AsyncTransport:
    def __init__(
        self, policy: OutboundPolicy, concurrency: int = 64, roots: Sequence[bytes] = ()
    ) -> None:
        self.policy = policy
        self.concurrency = concurrency
        self.roots = tuple(roots)
        self._targets: dict[str, Target] = {}
        self._hosts: dict[str, _Pinned] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired_clients: list[Any] = []
        self._shared: Any = None

    def target(self, url: str) -> Target:
        """`url` as it is called (read once per URL string); OutboundRefused if it is refused."""
        target = self._targets.get(url)
        if target is None:
            target = canonical_url(url)
            if len(self._targets) > 100:
                self._targets.clear()
            self._targets[url] = target
        return target

    async def prepare(self, url: str) -> None:
        """Resolve and build the client for `url` now, ahead of the first call."""
        with contextlib.suppress(CallFailed, OutboundRefused):
            await self._client(self.target(url))

    async def _client(self, target: Target) -> Any:
        pinned = self._hosts.get(target.host)
        if pinned is None:
            if len(self._hosts) > 100:
                self._hosts.clear()
            pinned = self._hosts[target.host] = _Pinned(expires=0.0)
        if pinned.expires <= time.monotonic() and pinned.pending is None:
            # one resolution at a time per host, in a task of its own: a caller that runs out
            # of time does not cut it short for the others
            pinned.pending = asyncio.get_running_loop().create_task(self._settle(target, pinned))
            pinned.pending.add_done_callback(lambda _: setattr(pinned, "pending", None))
        if pinned.pending is not None:
            await asyncio.shield(pinned.pending)
        if pinned.refused is not None:
            raise OutboundRefused(pinned.refused, field="url")
        if pinned.client is None:
            raise CallFailed(f"no client for {target.host}")
        return pinned.client

    async def _settle(self, target: Target, pinned: _Pinned) -> None:
        try:
            await self._resolve(target, pinned)
        except OutboundRefused as exc:
            pinned.refused = exc.message
        except Exception as exc:  # whatever it is, the calls fail closed (and are logged)
            pinned.expires = time.monotonic() + 1.0
            pinned.refused = f"no client for {target.host}: {type(exc).__name__}: {exc}"

    async def _resolve(self, target: Target, pinned: _Pinned) -> None:
        pinned.expires = time.monotonic() + RESOLVE_TTL_SECONDS
        if target.address is not None:
            self.policy.check(target)
            address = None
        else:
            try:
                address = await asyncio.get_running_loop().run_in_executor(
                    None, self.policy.route, target
                )
            except OutboundRefused:
                pinned.expires = time.monotonic() + 1.0  # maybe a passing DNS failure
                raise
        pinned.refused = None
        if pinned.client is not None and address == pinned.address:
            return
        old = pinned.client
        if address is None:  # addresses need no pinning: one client serves them all
            if self._shared is None:
                built = await asyncio.to_thread(
                    build, ClientBuilder(), self.concurrency, self.roots, None
                )
                if self._shared is None:
                    self._shared = built
                else:  # another host built one meanwhile
                    self._retire(built)
            client = self._shared
        else:  # building one loads the TLS roots: not on the event loop
            pin = (target.host, address, target.port)
            client = await asyncio.to_thread(
                build, ClientBuilder(), self.concurrency, self.roots, pin
            )
        pinned.client, pinned.address = client, address
        if old is not None and old is not self._shared:
            self._retire(old)

    def _retire(self, client: Any) -> None:
        self._retired_clients.append(client)

        async def later() -> None:
            await asyncio.sleep(RETIRE_AFTER_SECONDS)
            self._retired_clients.remove(client)
            await client.close()

        task = asyncio.get_running_loop().create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], cap: int, timeout_s: float
    ) -> tuple[int, bytes]:
        """POST `body` to `url`; the status and at most `cap` bytes of the answer."""
        target = self.target(url)
        client = await self._client(target)
        try:
            request = (
                client.post(target.url)
                .body_bytes(body)
                .headers(headers)
                .timeout(timedelta(seconds=timeout_s))
                .streamed_read_buffer_limit(cap)
                .build_streamed()
            )
            async with request as response:
                length = response.get_header("content-length")
                expected = int(length) if length is not None and length.isdigit() else None
                if expected is not None and expected > cap:
                    return response.status, b"x" * cap  # judged too large without reading it
                buf = bytearray()
                while len(buf) < cap:
                    chunk = await response.body_reader.read(cap - len(buf))
                    if chunk is None:
                        break
                    buf += bytes(chunk)
                    if expected is not None and len(buf) >= expected:
                        break  # all of it: no need to wait for the end of the stream
                return response.status, bytes(buf)
        except (PyreqwestError, ValueError) as exc:  # ValueError: a header it will not send
            raise failure(exc) from exc

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        for old in self._retired_clients:
            await old.close()
        for pinned in self._hosts.values():
            if pinned.client is not None and pinned.client is not self._shared:
                await pinned.client.close()
        if self._shared is not None:
            await self._shared.close()
        self._hosts.clear()
