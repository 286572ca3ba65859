"""Shared pieces of the reliability drills: the real worker CLI in a subprocess, file reads, and
the hostile outbound URLs with the loopback canary they aim at."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from clearance.store import Store

CLI = [sys.executable, "-m", "clearance.cli"]


def worker_env(database_url: str, out_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CLEARANCE_DATABASE_URL": database_url,
        "CLEARANCE_FILE_CHANNEL_DIR": str(out_dir),
        "CLEARANCE_WORKER_POLL_SECONDS": "0.05",
        "CLEARANCE_OUTBOUND_ALLOW": "127.0.0.0/8",
        "CLEARANCE_RATE_LIMIT_PER_SECOND": "0",
        **extra,
    }


class WorkerProcess:
    """`clearance worker` as a separate process (the system clock, the real CLI)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as fh:  # a file, not a pipe: a chatty worker never blocks on it
            self.proc = subprocess.Popen(
                [*CLI, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=fh
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, the lease stays held until it expires."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown) and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None


def campaign_row(store: Store, campaign_id: int) -> dict[str, Any]:
    with store.db.reader() as tx:
        rows = tx.fetchdicts(
            "SELECT state, sends_count, exec_cursor FROM campaigns WHERE campaign_id = ?",
            (campaign_id,),
        )
    return rows[0]


def file_channel_send_ids(out_dir: Path) -> list[str]:
    """Every SendID in every delivered NDJSON batch file (temp files of a killed write excluded)."""
    return [
        orjson.loads(line)["SendID"]
        for f in out_dir.rglob("*.ndjson")
        for line in f.read_bytes().splitlines()
    ]


# --- outbound URLs ---------------------------------------------------------------------------
# The outbound rule of the hostile-URL drills: a name and a documentation network (RFC 5737), and
# nothing on loopback, so a call that reaches the loopback canary went around the rule.
DRILL_OUTBOUND_ALLOW = "allowed.example, 192.0.2.0/24"
ALLOWED_HOSTS = ("allowed.example", "192.0.2.1")
CANARY_PORT_ENV = "CLEARANCE_DRILL_CANARY_PORT"


class Canary:
    """A real HTTP server on 127.0.0.1 (and on ::1, same port, where the machine has IPv6) that
    records every request it gets and answers an allowing 200: nothing may ever reach it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_request(self) -> None:
                canary.hits.append(f"{self.command} {self.path} (Host: {self.headers['Host']})")
                body = b'{"allowed": true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = do_request

            def log_message(self, *args: Any) -> None:
                pass

        class V6(ThreadingHTTPServer):
            address_family = socket.AF_INET6

        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler)]
        self.port = self.servers[0].server_address[1]
        with contextlib.suppress(OSError):  # no IPv6 loopback, or the port is taken there
            self.servers.append(V6(("::1", self.port), Handler))
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def hostile_urls(port: int) -> list[str]:
    """Outbound URLs that must be refused, or if accepted never reach loopback `port`: loopback in
    its many spellings, userinfo and separator tricks that parsers read differently, control
    characters and whitespace, odd schemes and ports, huge values. Plus allowed ones (the drill
    checks those are accepted and still reach nothing on loopback)."""
    loop = f"127.0.0.1:{port}"
    urls = [
        # loopback spelt every way
        *(
            f"http://{host}:{port}/"
            for host in (
                "127.0.0.1", "127.1", "127.000.000.001", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001",
                "2130706433", "017700000001", "0", "0.0.0.0", "localhost", "LOCALHOST",
                "localhost.", "[::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
                "[0:0:0:0:0:ffff:7f00:1]", "[::1%25lo]", "[fe80::1%25lo]", "127.0.0.1.", "[v1.x]",
                "127\u30020\u30020\u30021",  # ideographic full stops
                "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # fullwidth digits
                "\u2460\u2461\u2466.\u24ea.\u24ea.\u2460",  # circled digits
            )
        ),
        f"https://{loop}/", f"HTTP://{loop}/", f"hTtP://{loop}/",
        # userinfo: the real host is after the last @
        f"http://allowed.example@{loop}/", f"http://allowed.example:80@{loop}/",
        f"http://192.0.2.1@{loop}/", f"http://a:b@{loop}/", f"http://@{loop}/",
        f"http://allowed.example%40{loop}/",
        # scheme and slashes
        f"http:\\\\{loop}\\", f"http:/{loop}/", f"http:{loop}/", f"//{loop}/", f"http:///{loop}/",
        f"http:\\\\allowed.example\\@{loop}/",
        # whitespace and control characters around and inside
        f" http://{loop}/", f"\thttp://{loop}/", f"\x00http://{loop}/", f"http://{loop}/ ",
        f"http:// {loop}/", f"http://127.0.0.1 :{port}/", f"http://127.0.0.1\t:{port}/",
        f"http://{loop}\x00.allowed.example/", "http://allowed.example/\x00", "http://\x00/",
        "http://allowed.example\r\nHost: 127.0.0.1/", "http://allowed.example/\r\nX: y",
        # non-http schemes
        "ftp://allowed.example/", "file:///etc/passwd", f"gopher://{loop}/_x",
        "javascript:alert(1)", "data:text/plain,x", "ws://allowed.example/", "unix:/run/x.sock",
        "http+unix://%2Frun%2Fx.sock/", f"dict://{loop}/", "mailto:a@allowed.example",
        # ports
        "http://allowed.example:0/", "http://allowed.example:99999/", "http://allowed.example:-1/",
        "http://allowed.example:80:80/", "http://allowed.example:ab/", "http://192.0.2.1:65536/",
        "http://allowed.example:/", f"http://allowed.example:{port}@127.0.0.1/",
        # URL-encoded (the server decodes an encoded http(s) URL once)
        f"http%3A%2F%2F{loop.replace(':', '%3A')}%2F", "http%3A%2F%2F%31%32%37.0.0.1%2F",
        f"http://%31%32%37.0.0.1:{port}/", f"http://127.0.0.1%3A{port}/",
        # huge
        "http://" + "a" * 3000 + ".example/", "http://allowed.example/" + "x" * 5000,
        "http://" + "a." * 200 + "example/", "http://" + "a" * 64 + ".example/",
        "http://allowed.example/?" + "q=1&" * 600,
        # allowed ones: accepted, and still nothing on loopback
        "http://allowed.example/hook", "https://allowed.example:8443/x?y=1#z",
        "HTTP://ALLOWED.EXAMPLE./", "http://192.0.2.1/", "http://a:b@allowed.example/",
        "http://[::ffff:192.0.2.1]/",
    ]  # fmt: skip
    # a loopback authority before the allowed host, cut off by something one parser takes as the
    # end of the userinfo and another as the end of the host (or the reverse)
    for sep in ("\\", "\\\\", "\\x", "/", "#", "?", ";", "%5C", "%2F", "%23", "%40", "\t", "\n",
                "\r", " ", "\x00", "%00", "\u3002", "\uff0f", "\uff3c", "&", ","):  # fmt: skip
        for host in ALLOWED_HOSTS:
            urls.append(f"http://{loop}{sep}@{host}/")
            urls.append(f"http://{host}{sep}@{loop}/")
    return urls


TARGETS = ("listener", "channel", "gateway")  # ListenerURL, delivery.url, the gateway's url


def known_defects(port: int) -> dict[str, tuple[tuple[str, ...], list[str]]]:
    """Hostile URLs the code once mishandled, by defect: the targets it showed on, and the URLs.
    Each has a regression test in test_hostile_input.py (all fixed by the outbound transport)."""
    loop = f"127.0.0.1:{port}"
    return {
        # pyreqwest reads a backslash in the authority as the end of the host (WHATWG), urlsplit
        # as part of the userinfo: the policy checks 192.0.2.1, the gate calls 127.0.0.1
        "the gate calls loopback through a backslash before the @": (
            ("gateway",),
            [f"http://{loop}\\@192.0.2.1/", f"http://{loop}\\\\@192.0.2.1/",
             f"http://{loop}\\x@192.0.2.1/"],
        ),
        # urlsplit raises ValueError (not InvalidInput) for a netloc that NFKC normalisation
        # changes into one with / ? # @ or :, so saving such a URL answers 500
        "a 500 for a fullwidth solidus in the authority": (
            TARGETS,
            [*(f"http://{loop}\uff0f@{host}/" for host in ALLOWED_HOSTS),
             *(f"http://{host}\uff0f@{loop}/" for host in ALLOWED_HOSTS)],
        ),
        # the policy does not look at the port; the gate's client reads it (urlsplit().port) and
        # raises ValueError, so every event a conditional campaign matches answers 500
        "an invalid gateway port is accepted, then every event answers 500": (
            ("gateway",),
            ["http://allowed.example:99999/", "http://allowed.example:-1/",
             "http://allowed.example:80:80/", "http://allowed.example:ab/",
             "http://192.0.2.1:65536/"],
        ),
        # accepted, but httpx refuses them (httpx.InvalidURL, not an httpx.HTTPError): the
        # notifier's step fails each time, so no notification is delivered any more, and a
        # webhook campaign fails with an error on every retry
        "a URL httpx cannot parse is accepted and stops the notifier": (
            ("listener", "channel"),
            ["http://allowed.example/\r\nX: y", "http://allowed.example:80:80/",
             "http://allowed.example:ab/",
             *(f"http://{loop}{sep}@{host}/" for sep in "\t\n\r" for host in ALLOWED_HOSTS)],
        ),
    }  # fmt: skip
