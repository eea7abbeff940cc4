"""A cookie-keeping HTTP client for a running `ticketexport` web process, as a script uses it."""

from __future__ import annotations

import html
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_EXPORT_PATH = re.compile(r"/staff/exports/([0-9a-f-]{36})$")


class Client:
    """Signs in, clicks Export and downloads over plain HTTP; never follows redirects."""

    def __init__(self, base: str) -> None:
        self.base = base

        class _NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=30) as response:
                return int(response.status), response.headers.get("Location", ""), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.headers.get("Location", ""), exc.read()

    def answers(self) -> bool:
        """The sign-in page is served (the process is up and listening)."""
        try:
            return self.request("/login")[0] == 200
        except OSError:
            return False

    def csrf(self, path: str) -> str:
        status, _, page = self.request(path)
        assert status == 200, (path, status)
        match = _CSRF.search(page.decode())
        assert match is not None
        return html.unescape(match[1])

    def login(self, email: str, password: str) -> None:
        token = self.csrf("/login")
        status, location, _ = self.request(
            "/login", {"email": email, "password": password, "csrf_token": token}
        )
        assert (status, "/login" in location) == (303, False), (status, location)

    def export(self, view: str = "all") -> str:
        """Click Export on a view; the new export's id."""
        token = self.csrf("/staff/tickets")
        status, location, _ = self.request(
            "/staff/tickets/export", {"view": view, "csrf_token": token}
        )
        match = _EXPORT_PATH.search(location)
        assert status == 303, (status, location)
        assert match, location
        return match[1]

    def download(self, export_id: str) -> bytes | None:
        """The export's file once it is ready, else None."""
        status, _, body = self.request(f"/staff/exports/{export_id}/download")
        return body if status == 200 else None
