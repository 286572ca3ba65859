"""A loopback TCP proxy that can play a database restart: every proxied connection is cut and new
ones are refused (the listening socket is closed, so clients get ECONNREFUSED) until `restore`.

Used by the database-outage drill (tests/drills/test_db_outage.py) between a real `clearance serve`
and the real PostgreSQL, so the machine's PostgreSQL itself is never restarted.

    python -m bench.pgproxy --port 6543 --target 127.0.0.1:5432 --up 20 --down 5
    (alternates: up 20 s, down 5 s, until interrupted)
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self.accepted = 0
        self.cut_connections = 0

    # --- control ---------------------------------------------------------------------------------
    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(256)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = threading.Thread(
            target=self._accept_loop, args=(listener,), name="pgproxy-accept", daemon=True
        )
        self._accepting.start()
        return self

    def cut(self) -> int:
        """Refuse new connections and reset every open one; return how many were cut."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._accepting is not None:
            self._accepting.join(timeout=5)
            self._accepting = None
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            _close(s)
        cut = len(socks) // 2
        self.cut_connections += cut
        return cut

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        if self._listener is None:
            self.start()

    def stop(self) -> None:
        self.cut()

    def url_for(self, database_url: str) -> str:
        """The same database URL, pointed at this proxy (host:port replaced)."""
        scheme, rest = database_url.split("://", 1)
        creds, _, hostpart = rest.rpartition("@")
        _, _, path = hostpart.partition("/")
        return f"{scheme}://{creds + '@' if creds else ''}127.0.0.1:{self.port}/{path}"

    # --- plumbing --------------------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _close(client)
                    _close(upstream)
                    return
                self._socks.update((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._socks.discard(src)
                self._socks.discard(dst)
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, default=6543)
    p.add_argument("--target", default="127.0.0.1:5432")
    p.add_argument("--up", type=float, default=20.0, help="seconds between outages")
    p.add_argument("--down", type=float, default=5.0, help="seconds each outage lasts")
    args = p.parse_args()
    host, _, port = args.target.rpartition(":")
    proxy = TcpProxy(host, int(port), args.port).start()
    print(f"proxy 127.0.0.1:{proxy.port} -> {args.target}", flush=True)
    try:
        while True:
            time.sleep(args.up)
            print(f"down: cut {proxy.cut()} connections", flush=True)
            time.sleep(args.down)
            proxy.restore()
            print("up", flush=True)
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    main()
