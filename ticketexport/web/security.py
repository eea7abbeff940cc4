"""Request facts that depend on trust: client address, HTTPS, safe redirects, cookies."""

from __future__ import annotations

import ipaddress
import urllib.parse

from aiohttp import web

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


def _from_trusted_proxy(request: web.Request) -> bool:
    proxy = settings_of(request).trusted_proxy
    remote = request.remote
    if not proxy or not remote:
        return False
    try:
        address = ipaddress.ip_address(remote)
        # A single address or a network; a bare address is a /32 (or /128) network.
        return address in ipaddress.ip_network(proxy.strip(), strict=False)
    except ValueError:
        return False


def client_ip(request: web.Request) -> str | None:
    """The client's address; X-Forwarded-For counts only when the trusted proxy sent it."""
    remote = request.remote
    if _from_trusted_proxy(request):
        forwarded = request.headers.get("X-Forwarded-For", "")
        # The proxy appends the address it saw last; earlier entries are client-supplied.
        candidate = forwarded.split(",")[-1].strip() if forwarded else ""
        if candidate:
            remote = candidate
    if not remote:
        return None
    try:
        return str(ipaddress.ip_address(remote))
    except ValueError:
        return None


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


def storable(text: str) -> str:
    """`text` without what PostgreSQL text cannot hold (NUL, lone surrogates)."""
    cleaned = text.replace("\x00", "")
    return cleaned.encode("utf-8", "replace").decode("utf-8")
