"""Failures a use case reports to its caller; the web layer maps each kind to one status."""

from __future__ import annotations


class DomainError(Exception):
    """A refusal whose message is safe to show to the user as it is."""

    default_message = "The request could not be completed."
    # A page that helps with this refusal, as (path, label); shown on the error page.
    link: tuple[str, str] | None = None

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self)


class Invalid(DomainError, ValueError):
    """The input is malformed or breaks a limit (HTTP 400)."""

    default_message = "The request could not be understood."


class Denied(DomainError):
    """The user may not do this (HTTP 403)."""

    default_message = "You are not allowed to do that."


class NotFound(DomainError, LookupError):
    """No such thing, or not visible to the user: the two are never told apart (HTTP 404)."""

    default_message = "There is nothing at this address, or you cannot see it."


class Conflict(DomainError):
    """The thing is in a state that does not allow the action (HTTP 409)."""

    default_message = "That cannot be done in the current state."


class Gone(DomainError):
    """The thing existed but its retention is over (HTTP 410)."""

    default_message = "This is no longer available."


class TooMany(DomainError):
    """A per-user limit is reached (HTTP 429)."""

    default_message = "Too many requests; please wait and try again."


class TooSlow(DomainError):
    """The work ran past its time limit and was stopped (HTTP 503)."""

    default_message = "This took too long to answer; please try again later."


class Unavailable(DomainError):
    """Something the request needs (the file store) does not answer right now (HTTP 503)."""

    default_message = "This cannot be done right now; please try again in a few minutes."
