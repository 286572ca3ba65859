"""Where the server may send requests: listeners, the gateway and channel webhooks.

A key holder chooses those URLs, so without a rule they could make the server call its own internal
network (the database, a cloud metadata address). The rule, from `CLEARANCE_OUTBOUND_ALLOW`:

- empty (the default): public addresses only (loopback, private, link-local, reserved, and IPv6
  addresses that embed one of those, such as NAT64 and 6to4: refused);
- a comma-separated list of host names and networks (`hooks.example.com, 10.20.0.0/16`): only those
  (a listed name may resolve anywhere: its DNS is the operator's);
- `*`: anything (for a closed network that wants no rule).

URLs are read once (`target.canonical_url`), checked when they are saved (a 400: every address a
name resolves to must be allowed) and again when they are called: a name is then resolved once,
here, and the call goes to the one allowed address chosen (`route`), never to a second answer.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote

from clearance.errors import InvalidInput
from clearance.outbound.target import (
    MAX_URL_LENGTH,
    Address,
    OutboundRefused,
    Target,
    canonical_url,
)

__all__ = ["MAX_URL_LENGTH", "OutboundPolicy", "OutboundRefused", "Resolver", "check_outbound_url"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to, as text; raises OSError when it does not resolve
Resolver = Callable[[str, int], Sequence[str]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def system_resolve(host: str, port: int) -> list[str]:
    """The system resolver (getaddrinfo), looked up when called."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class OutboundPolicy:
    def __init__(self, allow: str, resolve: Resolver | None = None) -> None:
        self.allow_all = allow.strip() == "*"
        self.hosts: set[str] = set()
        self.networks: list[Network] = []
        self.resolve: Resolver = resolve or system_resolve
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
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self.hosts or self.networks:
            return any(address in network for network in self.networks)
        return _public(address)

    def listed(self, target: Target) -> bool:
        """Whether the host is one the operator named (or the rule is `*`)."""
        return self.allow_all or (target.address is None and target.host in self.hosts)

    def check(self, target: Target, field: str = "url", resolve: bool = True) -> None:
        """Raise OutboundRefused (a 400 naming `field`) unless `target` may be called: an address
        must be allowed; a name must be listed or (with `resolve`) resolve only to allowed ones."""
        if self.listed(target):
            return
        if target.address is not None:
            self._judge(target, [target.address], field)
        elif resolve:
            self._judge(target, self._addresses(target, field), field)

    def route(self, target: Target, field: str = "url") -> str:
        """The one address to connect to for `target`, resolving a name once (blocking)."""
        if target.address is not None:
            self.check(target, field)
            return target.host
        return self.choose(target, self._lookup(target, field), field)

    def choose(self, target: Target, found: Iterable[str], field: str = "url") -> str:
        """Of the addresses a name resolved to, the one to call: allowed, the first IPv4 one if
        there is one. Raise OutboundRefused if none is allowed."""
        addresses = [a for a in (_parse(text) for text in found) if a is not None]
        if not self.listed(target):
            addresses = [a for a in addresses if self.address_allowed(a)]
        if not addresses:
            raise OutboundRefused(
                f"{target.host} resolves only to addresses CLEARANCE_OUTBOUND_ALLOW refuses",
                field=field,
            )
        return str(min(addresses, key=lambda a: a.version))

    def check_url(self, url: str, field: str = "url", resolve: bool = True) -> str:
        """The URL as it will be called, if it may be; raise OutboundRefused naming why not."""
        target = canonical_url(url, field)
        self.check(target, field, resolve)
        return target.url

    def _lookup(self, target: Target, field: str) -> Sequence[str]:
        try:
            return self.resolve(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise OutboundRefused(f"{target.host} does not resolve: {exc}", field=field) from exc

    def _addresses(self, target: Target, field: str) -> list[Address]:
        return [a for a in (_parse(text) for text in self._lookup(target, field)) if a is not None]

    def _judge(self, target: Target, addresses: list[Address], field: str) -> None:
        if not addresses:
            raise OutboundRefused(f"{target.host} resolves to no address", field=field)
        for address in addresses:
            if not self.address_allowed(address):
                raise OutboundRefused(
                    f"{target.host} ({address}) is not an allowed destination; "
                    "list it in CLEARANCE_OUTBOUND_ALLOW",
                    field=field,
                )


# Not public, though `is_global` says so on some Pythons (3.11.7 predates the CVE-2024-4032 fix to
# the ipaddress tables) or ever did: site-local IPv6, the IPv4-translated range, and IANA
# special-purpose blocks that are not globally reachable.
_NOT_PUBLIC: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "192.0.0.0/24",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.175.48.0/24",
        "fec0::/10",
        "::ffff:0:0:0/96",
        "5f00::/16",
        "3fff::/20",
        "2001::/23",
    )
)


def _parse(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:  # a scoped IPv6 address, or nonsense: never called
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _public(address: Address) -> bool:
    """Globally reachable, and, for IPv6 that carries an IPv4 address, that one is too."""
    if not address.is_global or address.is_multicast:
        return False
    if any(address in network for network in _NOT_PUBLIC):
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:
            return False
        embedded = address.sixtofour
        if address in _NAT64 or address in _V4_COMPATIBLE:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not embedded.is_global:
            return False
    return True


def check_outbound_url(raw: Any, policy: OutboundPolicy, field: str = "url") -> str:
    """A URL a key holder saves for the server to call (a listener, the gateway, a channel
    webhook): http(s), URL-encoded accepted, and allowed by the outbound policy. Returns the URL as
    it will be called (its canonical form), which is what is saved."""
    if not isinstance(raw, str) or not raw:
        raise InvalidInput(f"{field} is required", field=field)
    url = unquote(raw) if raw.lower().startswith(("http%3a", "https%3a")) else raw
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"{field} is too long", field=field)
    return policy.check_url(url, field=field)
