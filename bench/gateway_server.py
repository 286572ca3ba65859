"""A minimal, fast gateway for benchmarks (loopback only): uvloop + httptools, keep-alive.

Port P answers every POST at once with {"user_id": <asked>, "allowed": true}.
Port P+1 accepts connections and never answers (a hanging gateway).

    python bench/gateway_server.py 18080

Both ports are bound with SO_REUSEPORT, so several of these processes can serve the same ports:
bench/gate.py starts a second one to show that the gateway is not the raw baseline's bottleneck.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from typing import Any

import httptools
import uvloop

USER = re.compile(rb'"user_id":("(?:[^"\\]|\\.)*")')
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


class Fast(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        m = USER.search(b"".join(self.body))
        payload = b'{"user_id":' + (m.group(1) if m else b'""') + b',"allowed":true}'
        self.transport.write(HEAD % len(payload) + payload)


class Hang(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    opts: dict[str, Any] = {"backlog": 4096, "reuse_address": True, "reuse_port": True}
    fast = await loop.create_server(Fast, "127.0.0.1", port, **opts)
    hang = await loop.create_server(Hang, "127.0.0.1", port + 1, **opts)
    print(f"gateway fast=127.0.0.1:{port} hang=127.0.0.1:{port + 1} pid {os.getpid()}", flush=True)
    async with fast, hang:
        await asyncio.gather(fast.serve_forever(), hang.serve_forever())


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 18080))
