"""The HTTP client behind the gate, chosen by measurement (bench/gate.py, README figures).

Both keep connections alive, cap concurrent calls, never follow redirects or decompress, and
read at most `cap` bytes of an answer. The caller bounds every call with its decision deadline
(`asyncio.timeout_at`); pyreqwest also gets its own timeout, because cancelling the Python side
does not stop its request task.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

import aiohttp


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


class AiohttpPoster:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency, keepalive_timeout=30),
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
            raise CallFailed(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def poster(kind: str, concurrency: int) -> Poster:
    if kind == "aiohttp":
        return AiohttpPoster(concurrency)
    return ReqwestPoster(concurrency)
