"""One reading of an outbound URL (clearance.outbound.target) and how the policy judges it."""

from __future__ import annotations

import ipaddress

import pytest

from clearance.errors import InvalidInput
from clearance.outbound.policy import OutboundPolicy, check_outbound_url
from clearance.outbound.target import canonical_url


@pytest.mark.parametrize(
    ("raw", "called"),
    [
        ("http://ops.example/hook", "http://ops.example/hook"),
        ("HTTPS://Ops.Example.:443", "https://ops.example/"),
        ("http://ops.example:080/a?b=c&d=%2F", "http://ops.example/a?b=c&d=%2F"),
        ("http://ops.example?x=1", "http://ops.example/?x=1"),
        ("http://straße.de/ä", "http://xn--strae-oqa.de/%C3%A4"),
        ("http://EX_AMPLE.com:8443/", "http://ex_ample.com:8443/"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0x7f.1/", "http://127.0.0.1/"),
        ("http://0177.0.0.1/", "http://127.0.0.1/"),
        ("http://127.1/", "http://127.0.0.1/"),
        ("http://127.000.000.001/", "http://127.0.0.1/"),
        ("http://0/", "http://0.0.0.0/"),
        ("http://\uff11\uff12\uff17.0.0.1/", "http://127.0.0.1/"),
        ("http://127\u30020\u30020\u30021/", "http://127.0.0.1/"),
        ("http://[::ffff:127.0.0.1]:81/", "http://127.0.0.1:81/"),
        ("http://[::FFFF:7f00:1]/", "http://127.0.0.1/"),
        ("http://[0:0:0:0:0:0:0:1]/", "http://[::1]/"),
        ("http://10.0.0.1.:9/", "http://10.0.0.1:9/"),
    ],
)
def test_urls_are_read_once_into_the_form_that_is_called(raw, called):
    assert canonical_url(raw).url == called


@pytest.mark.parametrize(
    "raw",
    [
        "http://127.0.0.1:1\\@ops.example/",
        "http://ops.example/a\\b",
        "http://ops.example@127.0.0.1/",
        "http://:@ops.example/",
        "http://ops.example/#x",
        "http://ops.example/\t",
        "http://ops.\nexample/",
        " http://ops.example/",
        "http://ops.example/\u200b",
        "http://ops.exa\u00admple/",
        "http://%6fps.example/",
        "http://[::1%25lo]/",
        "http://[::1/",
        "http://[::1]x/",
        "http://[zz::1]/",
        "http://ops.example:/",
        "http://ops.example:0/",
        "http://ops.example:65536/",
        "http://ops.example:+80/",
        "http://ops.example:80:80/",
        "http://ops.example:8 0/",
        "http:/ops.example/",
        "http:ops.example/",
        "http:///ops.example/",
        "ftp://ops.example/",
        "file:///etc/passwd",
        "javascript://ops.example/",
        "http://ops..example/",
        "http://ops.example../",
        "http://*.example/",
        "http://ops!.example/",
        "http://a.b.c.d.1/",
        "http://1.2.3.4.5/",
        "http://256.0.0.1/",
        "http://0x100000000/",
        "http://089.0.0.1/",
        "http://ops.123/",
        "http://xn--zz/",
        "http://" + "a" * 64 + ".example/",
        "http://ops.example/" + "a" * 2048,
        "",
        None,
        42,
    ],
)
def test_what_two_parsers_could_read_differently_is_refused(raw):
    with pytest.raises(InvalidInput):
        canonical_url(raw, "ListenerURL")


def test_a_refusal_names_the_field():
    with pytest.raises(InvalidInput) as refused:
        canonical_url("http://a\\b", "ListenerURL")
    assert refused.value.field == "ListenerURL"
    assert "backslash" in refused.value.message


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "0.0.0.0",
        "10.1.2.3",
        "100.64.0.1",
        "169.254.169.254",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "64:ff9b:1::808:808",
        "2002:a00:1::",
        "2001::1",
        # site-local, IPv4-translated, multicast, and special-purpose blocks older Pythons call
        # global (CVE-2024-4032)
        "fec0:0:0:ffff::1",
        "::ffff:0:7f00:1",
        "224.0.0.1",
        "ff02::1",
        "192.0.0.8",
        "192.88.99.1",
        "192.175.48.1",
        "3fff::1",
    ],
)
def test_the_public_only_rule_refuses_internal_addresses_however_embedded(address):
    assert not OutboundPolicy("").address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::"]
)
def test_the_public_only_rule_allows_public_addresses(address):
    assert OutboundPolicy("").address_allowed(ipaddress.ip_address(address))


def test_a_listed_network_matches_an_ipv4_mapped_address():
    policy = OutboundPolicy("10.20.0.0/16")
    assert policy.address_allowed(ipaddress.ip_address("::ffff:10.20.0.5"))
    assert not policy.address_allowed(ipaddress.ip_address("::ffff:10.21.0.5"))


def test_the_save_time_check_returns_the_url_as_called():
    policy = OutboundPolicy("ops.example, 127.0.0.0/8")
    assert check_outbound_url("HTTP://OPS.EXAMPLE.:80/hook", policy) == "http://ops.example/hook"
    assert check_outbound_url("http%3A%2F%2F0x7f.1%3A9%2Fh", policy) == "http://127.0.0.1:9/h"
    with pytest.raises(InvalidInput):
        check_outbound_url("http%3A%2F%2F127.0.0.1%3A9%5C%40ops.example%2F", policy)
    with pytest.raises(InvalidInput, match="CLEARANCE_OUTBOUND_ALLOW"):
        check_outbound_url("http://10.0.0.1/", policy)
