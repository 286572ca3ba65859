"""One reading of an outbound URL, shared by the check and the call.

`canonical_url` turns what a key holder typed into a `Target`: scheme, host, port, path. Everything
the server calls is rebuilt from a `Target`, so the allowlist and the HTTP client cannot read a URL
differently (`http://127.0.0.1:1\\@allowed.example/` is `allowed.example` to Python's `urlsplit`
and `127.0.0.1` to a WHATWG parser such as reqwest's). What two parsers could disagree on is
refused: backslashes, userinfo (`@` in the authority), control characters and whitespace anywhere,
fragments, percent-encoded or otherwise odd hosts and ports. Host spellings that mean an address
(`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`, `[::ffff:127.0.0.1]`, fullwidth digits) are
normalised to the address they mean, which the policy then judges; IDNA names become their ASCII
form, lower case, without a trailing dot. The result is then parsed again by the client's own URL
parser, and refused unless it reads the same host and port.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote

import idna
from pyreqwest.http import Url

from clearance.errors import InvalidInput

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PORT = re.compile(r"[0-9]{1,5}")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
# printable ASCII is kept as typed in a path or query; anything else is percent-encoded
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


class OutboundRefused(InvalidInput):
    """A URL the server is not allowed to call."""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL as the server calls it: every request is built from these fields and nothing else."""

    scheme: str  # "http" or "https"
    host: str  # a lower-case ASCII name, or an address in its standard text form
    port: int
    path: str  # path and query, starting with "/"
    address: Address | None  # the address, when the host is one
    url: str = field(init=False)  # the URL the request is made to, built from the fields above

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"
        object.__setattr__(self, "url", f"{self.scheme}://{netloc}{self.path}")


def canonical_url(raw: object, field: str = "url") -> Target:
    """Read `raw` once, strictly; raise OutboundRefused (a 400 naming `field`) if it is refused."""
    if not isinstance(raw, str) or not raw:
        raise OutboundRefused(f"{field} is required", field=field)
    try:
        return _canonical(raw)
    except _Refused as exc:
        raise OutboundRefused(f"{field} {exc}", field=field) from None


class _Refused(Exception):
    pass


@lru_cache(maxsize=1024)
def _canonical(raw: str) -> Target:
    if len(raw) > MAX_URL_LENGTH:
        raise _Refused("is too long")
    for ch in raw:
        if ch == "\\":
            raise _Refused("must not contain a backslash")
        if ch.isspace() or unicodedata.category(ch)[0] in "CZ":  # control, format, unassigned
            raise _Refused(f"must not contain whitespace or control characters ({ch!r})")
    if "#" in raw:
        raise _Refused("must not have a fragment (#)")
    m = _SCHEME.match(raw)
    if m is None or m.group(1).lower() not in DEFAULT_PORTS:
        raise _Refused("must be an http(s) URL with a host (http://host/...)")
    scheme, rest = m.group(1).lower(), raw[m.end() :]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise _Refused("must not carry a user name or password (@ before the host)")
    if "%" in authority:
        raise _Refused("must not percent-encode its host")
    typed_host, port = _split_authority(authority, DEFAULT_PORTS[scheme])
    host, address = _host(typed_host)
    if not path.startswith("/"):
        path = "/" + path
    target = Target(scheme, host, port, quote(path, safe=_PATH_SAFE), address)
    _same_for_the_client(target)
    return target


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _Refused("has an unclosed [ in its host")
        host, after = authority[: end + 1], authority[end + 1 :]
        if after and not after.startswith(":"):
            raise _Refused("has characters after its [address]")
        port_text = after[1:] if after else None
    else:
        host, sep, port_text_or_none = authority.partition(":")
        port_text = port_text_or_none if sep else None
    if not host:
        raise _Refused("must have a host")
    if port_text is None:
        return host, default_port
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise _Refused(f"has an invalid port {port_text[:10]!r}")
    return host, int(port_text)


def _host(host: str) -> tuple[str, Address | None]:
    """The host as it is called, and the address it means if it is one."""
    address: Address
    if host.startswith("["):
        try:
            v6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _Refused("has an invalid [IPv6 address]") from None
        address = v6.ipv4_mapped or v6  # ::ffff:a.b.c.d is a.b.c.d: judged, and called, as that
        return str(address), address
    name = _ascii_name(host)
    labels = name.split(".")
    if _is_number(labels[-1]):  # as a WHATWG parser does: then it is an IPv4 address, or nothing
        address = _ipv4(labels)
        return str(address), address
    return name, None


def _ascii_name(host: str) -> str:
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        labels = mapped.split(".")
        if labels[-1] == "" and len(labels) > 1:
            labels.pop()  # one trailing dot: the same name
        out = []
        for label in labels:
            if not label.isascii():
                label = idna.alabel(label).decode("ascii")
            if not _LABEL.fullmatch(label):
                raise _Refused(f"has an invalid host name {host[:80]!r}")
            out.append(label)
    except idna.IDNAError:
        raise _Refused(f"has an invalid host name {host[:80]!r}") from None
    name = ".".join(out)
    if len(name) > 253:
        raise _Refused("has a host name over 253 characters")
    return name


def _is_number(label: str) -> bool:
    if label.isdigit():
        return True
    return label[:2] in ("0x", "0X") and all(c in "0123456789abcdefABCDEF" for c in label[2:])


def _ipv4(labels: list[str]) -> ipaddress.IPv4Address:
    """The WHATWG IPv4 parser: up to four parts, each decimal, 0-prefixed octal or 0x hex; the last
    fills the remaining bytes (`127.1` is 127.0.0.1, `2130706433` is too)."""
    if len(labels) > 4:
        raise _Refused("has a host that is neither a name nor an IPv4 address")
    numbers = []
    for label in labels:
        if label[:2] in ("0x", "0X"):
            digits, base = label[2:], 16
        elif len(label) > 1 and label.startswith("0"):
            digits, base = label[1:], 8
        else:
            digits, base = label, 10
        try:
            numbers.append(int(digits, base) if digits else 0)
        except ValueError:
            raise _Refused("has a host that is neither a name nor an IPv4 address") from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise _Refused("has an IPv4 address out of range")
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(head))
    return ipaddress.IPv4Address(value)


def _same_for_the_client(target: Target) -> None:
    """The client parses the canonical URL itself: it must find the same host and port."""
    try:
        parsed = Url(target.url)
    except Exception as exc:  # pyreqwest raises its own error types
        raise _Refused(f"is not a URL the client accepts: {exc}") from None
    host = f"[{target.host}]" if ":" in target.host else target.host
    if (
        parsed.host_str != host
        or parsed.port_or_known_default != target.port
        or parsed.username
        or parsed.password is not None
    ):
        raise _Refused("reads differently to the HTTP client")
