"""The one way out: every request the server makes to a URL a key holder chose goes through here
(the gate, asynchronously; listener notifications and channel webhooks, synchronously).

A call
- reads its URL once (`canonical_url`) and builds the request from that reading only;
- resolves a name once, through the outbound policy, to one allowed address, and connects to that
  address only: the client is pinned to it with a static resolve map, so it never resolves the name
  itself (no second answer, no DNS rebinding). SNI and the Host header stay the name, and an HTTPS
  certificate is verified for the name;
- follows no redirects, uses no proxy (proxy variables are ignored), decompresses nothing and reads
  at most `cap` bytes of an answer;
- has one deadline for all of it: resolving, connecting, sending, the status line, headers and the
  body (pyreqwest's total timeout), so an answer dripped a byte a second holds nobody past it.

`Transport` here is the synchronous side; `async_transport.AsyncTransport` (the gate's) is built
by the same `build`. Both are pyreqwest (Rust reqwest, on a tokio runtime of its own). A timeout
raises TimeoutError, a refusal OutboundRefused, any other failure CallFailed.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pyreqwest.client import SyncClientBuilder
from pyreqwest.exceptions import PyreqwestError

from clearance.outbound.policy import OutboundPolicy
from clearance.outbound.target import OutboundRefused, Target, canonical_url

__all__ = [
    "DEFAULT_CAP",
    "CallFailed",
    "OutboundRefused",
    "Target",
    "Transport",
    "canonical_url",
]

DEFAULT_CAP = 64 * 1024
BACKSTOP_SECONDS = 30.0  # each call sets its own deadline; this bounds one that forgets
MAX_SYNC_CLIENTS = 64


class CallFailed(Exception):
    """Connection refused or reset, closed mid-answer, TLS refused, or any other failure."""


def build(
    builder: Any, concurrency: int, roots: Sequence[bytes], pin: tuple[str, str, int] | None
) -> Any:
    """A pyreqwest client (async or sync, after `builder`) configured as every outbound call is:
    pinned to `pin` = (name, address, port) if given."""
    builder = (
        builder.max_connections(concurrency)
        .pool_max_idle_per_host(concurrency)
        .error_for_status(False)
        .follow_redirects(False)
        .no_proxy()
        .referer(False)
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .timeout(timedelta(seconds=BACKSTOP_SECONDS))
    )
    for pem in roots:
        builder = builder.add_root_certificate_pem(pem)
    if pin is not None:
        builder = builder.resolve(*pin)
    return builder.build()


def failure(exc: Exception) -> Exception:
    """What a pyreqwest (or header) error is to the callers: TimeoutError or CallFailed."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError) or "timed out" in text.lower():
        return TimeoutError(text)
    return CallFailed(text)


class Transport:
    """Synchronous calls (the notifier, channel webhooks), from any thread. A name is resolved on
    every call (bounded by the call's deadline) and the call goes to the address chosen; clients
    are kept per pinned (name, address) so connections are reused."""

    def __init__(
        self, policy: OutboundPolicy, concurrency: int = 16, roots: Sequence[bytes] = ()
    ) -> None:
        self.policy = policy
        self.concurrency = concurrency
        self.roots = tuple(roots)
        self._clients: OrderedDict[tuple[str, str] | None, Any] = OrderedDict()
        self._lock = threading.Lock()

    def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout_s: float,
        cap: int = DEFAULT_CAP,
        field: str = "url",
    ) -> tuple[int, bytes]:
        """POST `body`; return the status and at most `cap` bytes of the answer, all within
        `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        target = canonical_url(url, field)
        address = self._route(target, deadline, field)
        client = self._client(target, address)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer within {timeout_s:g} s")
        try:
            request = (
                client.post(target.url)
                .body_bytes(body)
                .headers(headers)
                .timeout(timedelta(seconds=remaining))
                .streamed_read_buffer_limit(cap)
                .build_streamed()
            )
            with request as response:
                return response.status, _read_sync(response, cap)
        except (PyreqwestError, ValueError) as exc:  # ValueError: a header it will not send
            raise failure(exc) from exc

    def _route(self, target: Target, deadline: float, field: str) -> str:
        if target.address is not None:
            return self.policy.route(target, field)
        return _within(lambda: self.policy.route(target, field), deadline, target.host)

    def _client(self, target: Target, address: str) -> Any:
        key = None if target.address is not None else (target.host, address)
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
        pin = None if key is None else (target.host, address, target.port)
        client = build(SyncClientBuilder(), self.concurrency, self.roots, pin)
        with self._lock:
            self._clients[key] = client
            while len(self._clients) > MAX_SYNC_CLIENTS:  # dropped, not closed: a call may be
                self._clients.popitem(last=False)  # using it; its pool closes when it is freed
        return client

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()


def _read_sync(response: Any, cap: int) -> bytes:
    length = response.get_header("content-length")
    expected = int(length) if length is not None and length.isdigit() else None
    if expected is not None and expected > cap:
        return b"x" * cap  # judged too large without reading it
    buf = bytearray()
    while len(buf) < cap:
        chunk = response.body_reader.read(cap - len(buf))
        if chunk is None:
            break
        buf += bytes(chunk)
        if expected is not None and len(buf) >= expected:
            break
    return bytes(buf)


def _within(work: Any, deadline: float, host: str) -> str:
    """Run a blocking resolution in a thread of its own and wait for it until `deadline`: a
    resolver that hangs costs the call its deadline, not the caller's thread."""
    box: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append((True, work()))
        except BaseException as exc:  # handed to the caller below
            box.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="clearance-resolve", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"resolving {host} took longer than the deadline")
    ok, value = box[0]
    if not ok:
        raise value
    return str(value)
