"""The HTTP client behind the gate, chosen by measurement (bench/gate.py, README figures).

Both keep connections alive, cap concurrent calls, never follow redirects or decompress, and
read at most `cap` bytes of an answer. The caller bounds every call with its decision deadline
(`asyncio.timeout_at`); pyreqwest also gets its own timeout, because cancelling the Python side
does not stop its request task.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from clearance.outbound import OutboundPolicy


class CallFailed(Exception):
    """Connection refused or reset, closed mid-answer, or any other transport failure."""


class Poster(Protocol):
    async def post(
        self, url: str, body: bytes, headers: dict[str, str], cap: int, timeout_s: float
    ) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class ReqwestPoster:
    """pyreqwest (Rust, tokio): the fastest client on its own (~30-45 µs CPU a call), but inside
    the engine on two cores its threads compete with the event loop and it measured slower than
    aiohttp (bench/gate.py). Optional: `pip install pyreqwest`, CLEARANCE_GATE_CLIENT=pyreqwest."""

    def __init__(self, concurrency: int) -> None:
        from pyreqwest.client import ClientBuilder

        self.client = (
            ClientBuilder()
            .max_connections(concurrency)
            .pool_max_idle_per_host(concurrency)
            .error_for_status(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .timeout(timedelta(seconds=5))  # a backstop; each call sets its own below
            .build()
        )

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], cap: int, timeout_s: float
    ) -> tuple[int, bytes]:
        from pyreqwest.exceptions import PyreqwestError

        builder = self.client.post(url).body_bytes(body)
        for name, value in headers.items():
            builder = builder.header(name, value)
        request = (
            builder.timeout(timedelta(seconds=timeout_s))
            .streamed_read_buffer_limit(cap)
            .build_streamed()
        )
        try:
            async with request as response:
                length = response.get_header("content-length")
                if length is not None and length.isdigit() and int(length) > cap:
                    return response.status, b"x" * cap  # judged too large without reading it
                buf = bytearray()
                while len(buf) < cap:
                    chunk = await response.body_reader.read(cap - len(buf))
                    if chunk is None:
                        break
                    buf += bytes(chunk)
                return response.status, bytes(buf)
        except PyreqwestError as exc:
            if "timed out" in str(exc).lower() or type(exc).__name__.endswith("TimeoutError"):
                raise TimeoutError(str(exc)) from exc
            raise CallFailed(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self.client.close()


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
        try:
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
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
        except (aiohttp.ClientError, OSError) as exc:
            cause = getattr(exc, "os_error", None) or exc  # aiohttp hides a resolver's reason
            raise CallFailed(f"{type(exc).__name__}: {cause}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def poster(kind: str, concurrency: int, policy: OutboundPolicy | None = None) -> Poster:
    """pyreqwest resolves names itself: with it, names are checked when the gateway is saved and
    addresses when called, but a name is not re-checked as it resolves."""
    if kind == "aiohttp":
        return AiohttpPoster(concurrency, policy)
    return ReqwestPoster(concurrency)
