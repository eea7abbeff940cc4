"""Delivery of completed runs to their schedule's destination, and the owner's messages."""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import logging
import smtplib
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg

from ticketexport import audit
from ticketexport.exports import store
from ticketexport.storage import Storage
from ticketexport.storage.backends import from_url

if TYPE_CHECKING:
    from ticketexport.config import Settings
    from ticketexport.services import Services

log = logging.getLogger(__name__)

_Claimed = TypeVar("_Claimed")

ATTEMPTS = 3
# Seconds before the second and the third attempt.
BACKOFF = (2.0, 8.0)
SMTP_TIMEOUT = 30


class DeliveryError(Exception):
    """A copy to a destination did not complete."""


class Destination(Protocol):
    """Somewhere a run's file is copied to, whole or not at all."""

    async def put(
        self, key: str, source: Callable[[], AsyncIterator[bytes]], content_type: str
    ) -> None: ...

    async def close(self) -> None: ...


class StoreDestination:
    """A storage URL the product takes for its own files (file://, s3://, azure://): the
    backends already write whole objects only (a rename, one PUT or a committed upload)."""

    def __init__(self, url: str) -> None:
        self.store: Storage = from_url(url)

    async def put(
        self, key: str, source: Callable[[], AsyncIterator[bytes]], content_type: str
    ) -> None:
        await self.store.put_stream(key, source(), content_type=content_type)

    async def close(self) -> None:
        await self.store.close()


class SftpDestination:
    """sftp://user@host:port/path: written as `<name>.part`, then renamed over the name, so
    a reader sees the old file or the new one, never a part."""

    def __init__(self, url: str, settings: Settings) -> None:
        parts = urlsplit(url)
        if not parts.hostname or not parts.username:
            raise DeliveryError("an sftp:// destination needs user@host")
        self.host = parts.hostname
        self.port = parts.port or 22
        self.user = unquote(parts.username)
        self.root = unquote(parts.path).rstrip("/") or "."
        self.key_file = settings.sftp_key_file
        self.known_hosts = settings.sftp_known_hosts

    async def put(
        self, key: str, source: Callable[[], AsyncIterator[bytes]], content_type: str
    ) -> None:
        try:
            import asyncssh
        except ImportError as exc:
            raise DeliveryError("sftp:// needs the sftp extra (asyncssh)") from exc
        if not self.known_hosts:
            # The host key is pinned or nothing is sent: no trust on first use.
            raise DeliveryError("TICKETEXPORT_SFTP_KNOWN_HOSTS is not set")
        async with (
            asyncssh.connect(
                self.host,
                port=self.port,
                username=self.user,
                client_keys=[self.key_file] if self.key_file else None,
                known_hosts=self.known_hosts,
                agent_path=None,
                password=None,
            ) as connection,
            connection.start_sftp_client() as sftp,
        ):
            final = f"{self.root}/{key}"
            folder = final.rsplit("/", 1)[0]
            await sftp.makedirs(folder, exist_ok=True)
            part = f"{final}.{uuid.uuid4().hex}.part"
            try:
                async with sftp.open(part, "wb") as handle:
                    async for chunk in source():
                        await handle.write(chunk)
                # posix-rename@openssh.com replaces the old file in one step.
                await sftp.posix_rename(part, final)
            except BaseException:
                with contextlib.suppress(Exception):
                    await sftp.remove(part)
                raise

    async def close(self) -> None:
        return None


def destination_for(url: str, settings: Settings) -> Destination:
    if url.startswith("sftp://"):
        return SftpDestination(url, settings)
    return StoreDestination(url)


def latest_name(file_name: str) -> str:
    """latest.<extension>: the file name's extension, `csv.gz` included."""
    _, _, extension = file_name.partition(".")
    return f"latest.{extension or 'csv'}"


async def waiting(services: Services) -> bool:
    """Whether a run waits for its delivery or its message."""
    async with services.pool.connection() as conn:
        return await store.delivery_waiting(conn)


async def deliver_pending(services: Services) -> int:
    """Deliver every completed run waiting for it; the number delivered or given up on.
    Each run's row stays locked while its copy is made: a worker lost mid-way leaves it
    pending for the next one."""

    async def deliver(conn: psycopg.AsyncConnection[Any], run: store.Delivery) -> None:
        await _deliver_one(services, conn, run)

    return await _each_claimed(services, store.claim_delivery, deliver)


async def _each_claimed(
    services: Services,
    claim: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_Claimed | None]],
    handle: Callable[[psycopg.AsyncConnection[Any], _Claimed], Awaitable[None]],
) -> int:
    """Claim runs one at a time, each handled in the transaction that holds its lock, until
    none is left (runs with nothing to deliver or nobody to tell dropped first); how many."""
    done = 0
    async with services.pool.connection() as conn:
        await store.drop_undeliverable(conn)
        while True:
            async with conn.transaction():
                claimed = await claim(conn)
                if claimed is None:
                    break
                await handle(conn, claimed)
                done += 1
    return done


async def _deliver_one(
    services: Services, conn: psycopg.AsyncConnection[Any], run: store.Delivery
) -> None:
    log_extra = {"export_id": run.id, "event": "delivery"}
    url = services.settings.destination_url(run.destination) if run.destination else None
    attempts = 0
    error: str | None = "destination_not_configured"
    if url is not None:
        while attempts < ATTEMPTS:
            if attempts:
                await asyncio.sleep(BACKOFF[attempts - 1])
            attempts += 1
            try:
                await _copy(services, url, run)
            except Exception as exc:
                # Whatever the destination's library raises, the run ends in a clear state;
                # the details go to the log only.
                error = type(exc).__name__
                log.warning("delivery attempt %d failed: %s", attempts, exc, extra=log_extra)
            else:
                error = None
                break
    status = "delivered" if error is None else "delivery_failed"
    await store.record_delivery(conn, run.id, status, attempts)
    await audit.record_for_requester(
        conn,
        "export.delivered" if error is None else "export.delivery_failed",
        export_id=run.id,
        details={
            "destination": run.destination,
            "attempts": attempts,
            **({"error": error} if error is not None else {}),
        },
    )
    if error is not None:
        log.warning("delivery failed", extra={**log_extra, "error": error})


async def _copy(services: Services, url: str, run: store.Delivery) -> None:
    """The run's file, read from the product's store, written twice: under its own name
    and as latest.<extension>."""
    destination = destination_for(url, services.settings)
    files = services.storage
    try:
        for name in (run.file_name, latest_name(run.file_name)):
            await destination.put(
                f"{run.slug}/{name}", lambda: files.read(run.object_key), run.content_type
            )
    finally:
        await destination.close()


# --- mail ------------------------------------------------------------------------------


async def notify_pending(services: Services) -> int:
    """Send the owner's message for every ended run that asked for one."""
    settings = services.settings

    async def notify(conn: psycopg.AsyncConnection[Any], run: store.RunEnded) -> None:
        status = "failed"
        if settings.mail_enabled:
            try:
                await asyncio.to_thread(send_mail, settings, run)
                status = "sent"
            except (OSError, smtplib.SMTPException) as exc:
                log.warning(
                    "could not send a schedule message: %s",
                    exc,
                    extra={"export_id": run.id, "event": "mail_failed"},
                )
        await store.record_notice(conn, run.id, status)

    return await _each_claimed(services, store.claim_notice, notify)


def message_for(settings: Settings, run: store.RunEnded) -> email.message.EmailMessage:
    """The message about one run: what happened and a link to its status page. Never the
    file: downloading it needs the rights checked at download time."""
    assert settings.mail_from is not None
    assert settings.base_url is not None
    message = email.message.EmailMessage()
    outcome = {"completed": "completed", "failed": "failed", "cancelled": "was cancelled"}[
        run.status.value
    ]
    message["Subject"] = f"Scheduled export “{run.schedule_name}” {outcome}"
    message["From"] = settings.mail_from
    message["To"] = run.owner_email
    link = f"{settings.base_url}/staff/exports/{run.id}"
    lines = [
        f"The scheduled export “{run.schedule_name}” of the view “{run.view_name}” {outcome}.",
        "",
    ]
    if run.status == "failed" and run.error_message:
        lines += [run.error_message, ""]
    lines += [f"Its status page: {link}", ""]
    message.set_content("\n".join(lines))
    return message


def send_mail(settings: Settings, run: store.RunEnded) -> None:
    """One message through TICKETEXPORT_SMTP_URL (STARTTLS on smtp:// when offered)."""
    assert settings.smtp_url is not None
    parts = urlsplit(settings.smtp_url)
    host = parts.hostname or "localhost"
    message = message_for(settings, run)
    context = ssl.create_default_context()
    if parts.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            host, parts.port or 465, timeout=SMTP_TIMEOUT, context=context
        )
    else:
        client = smtplib.SMTP(host, parts.port or 25, timeout=SMTP_TIMEOUT)
    with client:
        client.ehlo()
        if parts.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)
