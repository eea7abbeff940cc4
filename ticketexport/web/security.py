"""Request facts that depend on trust: client address, HTTPS, safe redirects, cookies."""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Sequence

from aiohttp import web

from ticketexport.config import Network
from ticketexport.web.keys import COOKIES, settings_of

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# The client of a connection whose peer is not an IP address (never over TCP): all such
# clients share one address, so they share one throttle rather than escape it.
UNKNOWN_CLIENT = ipaddress.IPv4Address("0.0.0.0")  # noqa: S104 - an address, nothing binds
# The longest X-Forwarded-For entry worth parsing: "[" + a scoped IPv6 address + "]:65535".
_MAX_ENTRY = 80


def parse_address(text: str) -> Address | None:
    """An address as it appears in X-Forwarded-For or as a peer: `a.b.c.d`, `a.b.c.d:port`,
    a bare IPv6 address, `[v6]` or `[v6]:port`; IPv4-mapped IPv6 as IPv4. None when it is
    anything else (a name, "unknown", an obfuscated identifier, garbage)."""
    text = text.strip()
    if not text or len(text) > _MAX_ENTRY:
        return None
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not _is_port(rest)):
            return None
        text = inside
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port(text: str) -> bool:
    return len(text) <= 6 and text[:1] == ":" and text[1:].isdigit() and text[1:].isascii()


def _trusted(address: Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def client_address(
    peer: str | None, forwarded: Sequence[str], proxies: Sequence[Network]
) -> Address:
    """The client of a request from `peer` carrying these X-Forwarded-For field lines.

    Every line is read as one list (RFC 9110 combines repeated fields so) and walked from
    the right, past the trusted proxies; the first other entry is the client. Entries left
    of it were written by the client and are never believed. When the peer is not a trusted
    proxy, or an entry does not parse, the client is the nearest address known: the peer or
    the last trusted hop. Never empty: an unreadable header cannot switch the per-client
    throttle off.
    """
    nearest = parse_address(peer or "")
    if nearest is None:
        return UNKNOWN_CLIENT
    if not _trusted(nearest, proxies):
        return nearest
    entries = [entry for line in forwarded for entry in line.split(",")]
    for entry in reversed(entries):
        hop = parse_address(entry)
        if hop is None:
            return nearest
        if not _trusted(hop, proxies):
            return hop
        nearest = hop
    return nearest


def client_of(request: web.Request) -> Address:
    """The request's client address (see client_address)."""
    return client_address(
        request.remote,
        request.headers.getall("X-Forwarded-For", []),
        settings_of(request).trusted_proxies,
    )


def client_ip(request: web.Request) -> str:
    """The request's client address as text, as audit rows and sessions record it."""
    return str(client_of(request))


def _from_trusted_proxy(request: web.Request) -> bool:
    peer = parse_address(request.remote or "")
    return peer is not None and _trusted(peer, settings_of(request).trusted_proxies)


def is_https(request: web.Request) -> bool:
    if request.secure:
        return True
    if _from_trusted_proxy(request):
        return request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https"
    return False


def cookie_secure(request: web.Request) -> bool:
    return settings_of(request).cookie_secure or is_https(request)


def queue_cookie(
    request: web.Request, name: str, value: str | None, *, max_age: int | None = None
) -> None:
    """Set (or, with value None, clear) a cookie on the response this request ends with."""
    request.setdefault(COOKIES, []).append((name, value, max_age))


def apply_cookies(request: web.Request, response: web.StreamResponse) -> None:
    secure = cookie_secure(request)
    for name, value, max_age in request.get(COOKIES, []):
        if value is None:
            response.del_cookie(name, path="/", secure=secure, httponly=True, samesite="Lax")
        else:
            response.set_cookie(
                name,
                value,
                path="/",
                max_age=max_age,
                secure=secure,
                httponly=True,
                samesite="Lax",
            )


def safe_next(target: str | None) -> str | None:
    """`target` if it is a path on this site, else None (no open redirects)."""
    if not target or len(target) > 2000 or not target.startswith("/"):
        return None
    if target.startswith("//") or "\\" in target:
        return None
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in target):
        return None
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    # Browsers strip tabs/newlines and decode before resolving; reject encoded slashes
    # at the start too so "/%2F%2Fevil" cannot become "//evil" somewhere downstream.
    decoded = urllib.parse.unquote(parts.path)
    if decoded.startswith("//") or "\\" in decoded:
        return None
    return target


def login_redirect_target(request: web.Request) -> str:
    """The local path to come back to after logging in."""
    return request.rel_url.path_qs if safe_next(request.rel_url.path_qs) else "/staff/tickets"
