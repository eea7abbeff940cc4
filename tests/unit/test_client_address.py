"""The client address behind trusted proxies: every X-Forwarded-For line as one list,
walked from the right; never empty, whatever the header holds."""

from __future__ import annotations

import ipaddress

import pytest

from ticketexport.config import ConfigError, networks
from ticketexport.web.security import UNKNOWN_CLIENT, client_address, parse_address

PROXIES = networks({"P": "127.0.0.1, 10.0.0.0/8, 2001:db8:ffff::/48"}, "P")


def client(peer: str | None, *lines: str) -> str:
    return str(client_address(peer, list(lines), PROXIES))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.7", "198.51.100.7"),
        (" 198.51.100.7 ", "198.51.100.7"),
        ("198.51.100.7:4711", "198.51.100.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("[::ffff:198.51.100.7]:80", "198.51.100.7"),
    ],
)
def test_addresses_parse_with_ports_and_brackets(text: str, expected: str) -> None:
    assert str(parse_address(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unknown",
        "_hidden",
        "example.com",
        "198.51.100.7:",
        "198.51.100.7:http",
        "198.51.100.7:99999999",
        "198.51.100.256",
        "[198.51.100.7",
        "[2001:db8::1]x",
        "[2001:db8::1]:",
        "2001:db8::1:80:x",
        "\udcff\udcfe",
        "1" * 200,
    ],
)
def test_anything_else_does_not_parse(text: str) -> None:
    assert parse_address(text) is None


def test_untrusted_peers_are_the_client_whatever_they_send() -> None:
    assert client("203.0.113.9", "198.51.100.7") == "203.0.113.9"
    assert client("203.0.113.9") == "203.0.113.9"


def test_every_line_is_one_list_walked_from_the_right() -> None:
    # One line, and the same entries over three lines: the same client.
    assert client("127.0.0.1", "203.0.113.66, 198.51.100.7, 10.1.1.1") == "198.51.100.7"
    assert client("127.0.0.1", "203.0.113.66", "198.51.100.7", "10.1.1.1") == "198.51.100.7"
    # Chained proxies, with ports and brackets; entries left of the client never count.
    assert (
        client("127.0.0.1", "1.2.3.4, [2001:db8:1::5]:51234", "10.0.0.2:80, [2001:db8:ffff::1]")
        == "2001:db8:1::5"
    )
    assert client("127.0.0.1", "198.51.100.7:4711") == "198.51.100.7"


def test_the_nearest_known_address_when_an_entry_does_not_parse() -> None:
    # What a trusted hop wrote does not parse: the client is that hop.
    assert client("127.0.0.1", "198.51.100.7, garbage, 10.0.0.2") == "10.0.0.2"
    assert client("127.0.0.1", "198.51.100.7, 10.0.0.2, ") == "127.0.0.1"
    assert client("127.0.0.1", "\udcff") == "127.0.0.1"
    # Nothing but trusted proxies: the last of them.
    assert client("127.0.0.1", "10.0.0.3, 10.0.0.2") == "10.0.0.3"
    assert client("127.0.0.1") == "127.0.0.1"
    # A peer that is no IP address at all (never over TCP): one shared address, not none.
    assert client_address(None, ["198.51.100.7"], PROXIES) == UNKNOWN_CLIENT
    assert client_address("unix-socket", [], PROXIES) == UNKNOWN_CLIENT


def test_trusted_proxy_lists() -> None:
    assert networks({}, "P") == ()
    assert networks({"P": " "}, "P") == ()
    assert networks({"P": "10.1.2.3/16, ::1, ::ffff:10.0.0.0/104"}, "P") == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    for bad in (
        "10.0.0.1:80",
        "proxy.internal",
        "10.0.0.1,,10.0.0.2",
        "10.0.0.1;10.0.0.2",
        "10/33",
    ):
        with pytest.raises(ConfigError, match=r"^P must be a comma-separated list .* is neither$"):
            networks({"P": bad}, "P")
