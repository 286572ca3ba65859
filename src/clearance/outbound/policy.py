"""Where the server may send requests: listeners, the gateway and channel webhooks.

A key holder chooses those URLs, so without a rule they could make the server call its own internal
network (the database, a cloud metadata address). The rule, from `CLEARANCE_OUTBOUND_ALLOW`:

- empty (the default): public addresses only (loopback, private, link-local, reserved: refused);
- a comma-separated list of host names and networks (`hooks.example.com, 10.20.0.0/16`): only those;
- `*`: anything (for a closed network that wants no rule).

URLs are checked when they are saved (a 400) and again when they are called, against the addresses
the name resolves to at that moment, so a name that later resolves inward is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

from clearance.errors import InvalidInput

MAX_URL_LENGTH = 2048

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(InvalidInput):
    """A URL the server is not allowed to call."""


class OutboundPolicy:
    def __init__(self, allow: str) -> None:
        self.allow_all = allow.strip() == "*"
        self.hosts: set[str] = set()
        self.networks: list[Network] = []
        for item in (part.strip() for part in allow.split(",")):
            if not item or item == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.hosts.add(item.lower().rstrip("."))

    def address_allowed(self, address: Address) -> bool:
        if self.allow_all:
            return True
        if self.hosts or self.networks:
            return any(address in network for network in self.networks)
        return address.is_global

    def check_url(self, url: str, field: str = "url", resolve: bool = True) -> str:
        """Return the URL if it may be called; raise OutboundRefused (a 400) naming why not."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OutboundRefused(f"{field} must be an http(s) URL with a host", field=field)
        if self.allow_all:
            return url
        host = parts.hostname.lower().rstrip(".")
        if host in self.hosts:
            return url
        for address in self.addresses(host) if resolve else _literal(host):
            if not self.address_allowed(address):
                raise OutboundRefused(
                    f"{host} ({address}) is not an allowed destination; "
                    "list it in CLEARANCE_OUTBOUND_ALLOW",
                    field=field,
                )
        return url

    def addresses(self, host: str) -> list[Address]:
        literal = _literal(host)
        if literal:
            return literal
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            raise OutboundRefused(f"{host} does not resolve: {exc}", field="url") from exc
        return [ipaddress.ip_address(info[4][0]) for info in infos]

    def filter_resolved(self, host: str, addresses: Iterable[str]) -> list[str]:
        """For a client's resolver: keep only the addresses this policy allows."""
        if self.allow_all or host.lower().rstrip(".") in self.hosts:
            return list(addresses)
        return [a for a in addresses if self.address_allowed(ipaddress.ip_address(a))]


@lru_cache(maxsize=4096)
def _literal_cached(host: str) -> tuple[Address, ...]:
    try:
        return (ipaddress.ip_address(host.strip("[]")),)
    except ValueError:
        return ()


def _literal(host: str) -> list[Address]:
    return list(_literal_cached(host))


def check_outbound_url(raw: Any, policy: OutboundPolicy, field: str = "url") -> str:
    """A URL a key holder saves for the server to call (a listener, the gateway, a channel
    webhook): http(s), URL-encoded accepted, and allowed by the outbound policy."""
    if not isinstance(raw, str) or not raw:
        raise InvalidInput(f"{field} is required", field=field)
    url = unquote(raw) if raw.lower().startswith(("http%3a", "https%3a")) else raw
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"{field} is too long", field=field)
    return policy.check_url(url, field=field)
