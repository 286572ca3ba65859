"""The HTTP client behind the gate, chosen by measurement (bench/gate.py, README figures).

Both keep connections alive, cap concurrent calls, never follow redirects, use proxies or
decompress, check a gateway name against the outbound policy as it resolves, and read at most
`cap` bytes of an answer. The caller bounds every call with its decision deadline
(`asyncio.timeout_at`); pyreqwest also gets its own timeout, because cancelling the Python side
does not stop its request task.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import ip_address
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from clearance.outbound.policy import OutboundPolicy


class CallFailed(Exception):
    """Connection refused or reset, closed mid-answer, or any other transport failure."""


class Poster(Protocol):
    async def post(
        self, url: str, body: bytes, headers: dict[str, str], cap: int, timeout_s: float
    ) -> tuple[int, bytes]: ...

    async def prepare(self, url: str) -> None:
        """Get ready to call `url` (before the first decision needs it)."""

    async def close(self) -> None: ...


RESOLVE_TTL_SECONDS = 10.0  # as aiohttp's DNS cache
RETIRE_AFTER_SECONDS = 10.0  # a replaced client is closed once its calls (<= 2.5 s) are over


@dataclass
class _Pinned:
    """A client for one origin, pinned to the address its name resolved to through the policy."""

    expires: float
    address: str | None = None
    client: Any = None
    refused: str | None = None
    pending: asyncio.Task[None] | None = None


class ReqwestPoster:
    """pyreqwest (Rust, tokio on one thread of its own): the default, the fastest client measured
    inside the engine (bench/gate.py). Gateway names are resolved here, through the outbound
    policy, and each client is pinned to the allowed address (pyreqwest's static resolve map), so
    reqwest never resolves a gateway name itself; a name is resolved again every
    RESOLVE_TTL_SECONDS, and a new answer gets a new client. No proxies, no redirects."""

    def __init__(self, concurrency: int, policy: OutboundPolicy | None = None) -> None:
        self.concurrency = concurrency
        self.policy = policy or OutboundPolicy("*")
        self._origins: dict[tuple[str, str, int], _Pinned] = {}
        self._urls: dict[str, tuple[str, str, int]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired_clients: list[Any] = []
        self._shared: Any = None

    def _build(self, host: str, address: str | None, port: int) -> Any:
        from pyreqwest.client import ClientBuilder

        builder = (
            ClientBuilder()
            .max_connections(self.concurrency)
            .pool_max_idle_per_host(self.concurrency)
            .error_for_status(False)
            .follow_redirects(False)
            .no_proxy()
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .timeout(timedelta(seconds=5))  # a backstop; each call sets its own below
        )
        if address is not None:
            builder = builder.resolve(host, address, port)
        return builder.build()

    def _origin(self, url: str) -> tuple[str, str, int]:
        origin = self._urls.get(url)
        if origin is None:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if len(self._urls) > 100:
                self._urls.clear()
            origin = self._urls[url] = (parts.scheme, host, port)
        return origin

    async def prepare(self, url: str) -> None:
        """Resolve and build the client for `url` now, ahead of the first call."""
        with contextlib.suppress(CallFailed):
            await self._client(url)

    async def _client(self, url: str) -> Any:
        origin = self._origin(url)
        pinned = self._origins.get(origin)
        if pinned is None:
            pinned = self._origins[origin] = _Pinned(expires=0.0)
        if pinned.expires <= time.monotonic() and pinned.pending is None:
            # one resolution at a time per origin, in a task of its own: a caller that runs out
            # of time does not cut it short for the others
            pinned.pending = asyncio.get_running_loop().create_task(self._settle(origin, pinned))
            pinned.pending.add_done_callback(lambda _: setattr(pinned, "pending", None))
        if pinned.pending is not None:
            await asyncio.shield(pinned.pending)
        if pinned.refused is not None:
            raise CallFailed(pinned.refused)
        if pinned.client is None:
            raise CallFailed(f"no client for {origin[1]}")
        return pinned.client

    async def _settle(self, origin: tuple[str, str, int], pinned: _Pinned) -> None:
        try:
            await self._resolve(origin, pinned)
        except Exception as exc:  # whatever it is, the calls fail closed (and are logged)
            pinned.expires = time.monotonic() + 1.0
            pinned.refused = f"no client for {origin[1]}: {type(exc).__name__}: {exc}"

    async def _resolve(self, origin: tuple[str, str, int], pinned: _Pinned) -> None:
        _, host, port = origin
        pinned.expires = time.monotonic() + RESOLVE_TTL_SECONDS
        try:
            literal = ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            found = [str(literal)]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
            except (OSError, UnicodeError) as exc:
                pinned.expires = time.monotonic() + 1.0
                pinned.refused = f"cannot resolve {host}: {exc}"
                return
            found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = self.policy.filter_resolved(host, found)
        if not allowed:
            pinned.refused = f"{host} resolves only to addresses CLEARANCE_OUTBOUND_ALLOW refuses"
            return
        pinned.refused = None
        # pyreqwest pins one address per name: the first allowed IPv4 one, else the first allowed
        address = None if literal is not None else min(allowed, key=lambda a: ":" in a)
        if pinned.client is not None and address == pinned.address:
            return
        old = pinned.client
        if address is None:  # addresses need no pinning: one client serves them all
            if self._shared is None:
                built = await asyncio.to_thread(self._build, host, None, port)
                if self._shared is None:
                    self._shared = built
                else:  # another origin built one meanwhile
                    self._retire(built)
            client = self._shared
        else:  # building one loads the TLS roots: not on the event loop
            client = await asyncio.to_thread(self._build, host, address, port)
        pinned.client, pinned.address = client, address
        if old is not None:
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
        from pyreqwest.exceptions import PyreqwestError

        client = await self._client(url)
        try:
            request = (
                client.post(url)
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
        except PyreqwestError as exc:
            if "timed out" in str(exc).lower() or type(exc).__name__.endswith("TimeoutError"):
                raise TimeoutError(str(exc)) from exc
            raise CallFailed(f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # a header the client will not send
            raise CallFailed(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        for old in self._retired_clients:
            await old.close()
        for pinned in self._origins.values():
            if pinned.client is not None and pinned.client is not self._shared:
                await pinned.client.close()
        if self._shared is not None:
            await self._shared.close()
        self._origins.clear()


class PolicyResolver(AbstractResolver):
    """Resolves names as aiohttp does, then keeps only the addresses the outbound policy allows,
    so a gateway name that starts resolving to an internal address is refused at connect time."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        allowed = set(self.policy.filter_resolved(host, [r["host"] for r in found]))
        kept = [r for r in found if r["host"] in allowed]
        if not kept:
            raise OSError(f"{host} resolves only to addresses CLEARANCE_OUTBOUND_ALLOW refuses")
        return kept

    async def close(self) -> None:
        await self.inner.close()


class AiohttpPoster:
    def __init__(self, concurrency: int, policy: OutboundPolicy | None = None) -> None:
        self.concurrency = concurrency
        self.policy = policy or OutboundPolicy("*")
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}  # parsed once: the gateway URL rarely changes

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.concurrency,
                    keepalive_timeout=30,
                    resolver=PolicyResolver(self.policy),
                ),
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                auto_decompress=False,
            )
        return self._session

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], cap: int, timeout_s: float
    ) -> tuple[int, bytes]:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) > 100:
                self._urls.clear()
            parsed = self._urls[url] = URL(url)
        try:
            async with self._client().post(
                parsed, data=body, headers=headers, allow_redirects=False
            ) as response:
                chunks: list[bytes] = []
                size = 0
                while size < cap:
                    chunk = await response.content.read(cap - size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                return response.status, b"".join(chunks)
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: a bad header
            cause = getattr(exc, "os_error", None) or exc  # aiohttp hides a resolver's reason
            raise CallFailed(f"{type(exc).__name__}: {cause}") from exc

    async def prepare(self, url: str) -> None:
        """Nothing to build ahead: aiohttp's session is made on first use, cheaply."""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def poster(kind: str, concurrency: int, policy: OutboundPolicy | None = None) -> Poster:
    """Both check a gateway name against the outbound policy as it resolves."""
    if kind == "aiohttp":
        return AiohttpPoster(concurrency, policy)
    return ReqwestPoster(concurrency, policy)
