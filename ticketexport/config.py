"""Settings read once from the environment into a frozen object."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be 1/0, true/false, yes/no or on/off, not {raw!r}")


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    # NaN and infinity pass a plain comparison yet make no sense as hours or seconds.
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, not {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {raw!r}")
    return value


# PostgreSQL's statement_timeout is an int of milliseconds.
_MAX_TIMEOUT_MS = 2**31 - 1


def _token(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    token = raw.strip()
    # It travels in an Authorization header: visible ASCII only, and long enough to guess.
    if len(token) < 16 or not all(0x21 <= ord(ch) <= 0x7E for ch in token):
        raise ConfigError(f"{name} must be at least 16 visible ASCII characters")
    return token


def plain_network(network: Network) -> Network:
    """An IPv4-mapped IPv6 network (::ffff:10.0.0.0/104) as the IPv4 network it maps, since
    client addresses are compared in their IPv4 form."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


def networks(env: Mapping[str, str], name: str) -> tuple[Network, ...]:
    """A comma-separated list of addresses (a /32 or /128) and networks; a bare address
    with host bits past its mask (10.1.2.3/16) means its network."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return ()
    found = []
    for item in raw.split(","):
        text = item.strip()
        try:
            found.append(plain_network(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{name} must be a comma-separated list of IP addresses or networks; "
                f"{text!r} is neither"
            ) from None
    return tuple(found)


_DESTINATION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
DESTINATION_SCHEMES = ("file://", "s3://", "azure://", "sftp://")


def destinations(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """TICKETEXPORT_DESTINATIONS: `name=url;name=url`, each URL a storage URL or sftp://."""
    raw = env.get("TICKETEXPORT_DESTINATIONS") or ""
    found: dict[str, str] = {}
    for item in raw.split(";"):
        if not item.strip():
            continue
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or not _DESTINATION_NAME.match(name):
            raise ConfigError(
                "TICKETEXPORT_DESTINATIONS must be name=url pairs separated by ';', "
                "each name letters, digits, '-' or '_'"
            )
        if not url.startswith(DESTINATION_SCHEMES):
            raise ConfigError(
                f"TICKETEXPORT_DESTINATIONS: {name}'s URL must start with "
                + ", ".join(DESTINATION_SCHEMES)
            )
        if name in found:
            raise ConfigError(f"TICKETEXPORT_DESTINATIONS names {name} twice")
        found[name] = url
    return tuple(found.items())


def _smtp_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("TICKETEXPORT_SMTP_URL") or None
    if raw is not None and not raw.startswith(("smtp://", "smtps://")):
        raise ConfigError("TICKETEXPORT_SMTP_URL must start with smtp:// or smtps://")
    return raw


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the processes need to know about their deployment."""

    database_url: str | None
    home: Path
    storage_url: str
    retention_hours: float
    timezone: str
    secret_key: str | None
    host: str
    port: int
    cookie_secure: bool
    # The reverse proxies whose X-Forwarded-For is believed (TICKETEXPORT_TRUSTED_PROXY).
    trusted_proxies: tuple[Network, ...]
    export_max_rows_per_s: int
    heartbeat_seconds: float
    stall_seconds: float
    worker_seen_seconds: float
    # A hot standby of the primary that exports read from (None: they read the primary).
    export_database_url: str | None = None
    standby_max_lag_seconds: float = 30.0
    # Limits that keep one client or user from degrading the service for everyone.
    max_active_exports_per_user: int = 3
    max_streams_per_session: int = 20
    # Requests one API token may make in a minute, counted in the database so that every web
    # process shares the count (0 = unlimited).
    api_requests_per_minute: int = 120
    login_window_seconds: float = 900.0
    web_statement_timeout_ms: int = 5000
    metrics_token: str | None = None
    # Schedules: the shortest `every` cadence, and how many schedules one user may own.
    schedule_min_minutes: int = 5
    max_schedules_per_user: int = 10
    # Where schedules may deliver, by name (TICKETEXPORT_DESTINATIONS): name → URL.
    destinations: tuple[tuple[str, str], ...] = ()
    sftp_key_file: str | None = None
    sftp_known_hosts: str | None = None
    # Mail about schedule runs: all three set, or none used.
    smtp_url: str | None = None
    mail_from: str | None = None
    base_url: str | None = None
    # Not read from the environment: the event streams' keep-alive interval, which is also
    # how often a web process rechecks every open stream (tests shorten it).
    keepalive_seconds: float = 15.0
    # Not read from the environment: how long /healthz keeps the storage's and the
    # standby's states before probing them again (tests set 0 to see every change).
    health_cache_seconds: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("TICKETEXPORT_HOME") or "./.ticketexport").expanduser().resolve()
        tz = (env.get("TICKETEXPORT_TIMEZONE") or "UTC").strip()
        try:
            zoneinfo.ZoneInfo(tz)
        # A directory name such as "America" surfaces as an OSError, not as not-found.
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ConfigError(
                f"TICKETEXPORT_TIMEZONE {tz!r} is not a known IANA time zone"
            ) from None
        storage_url = env.get("TICKETEXPORT_STORAGE_URL") or (home / "exports").as_uri()
        if not storage_url.startswith(("file://", "s3://", "azure://")):
            raise ConfigError("TICKETEXPORT_STORAGE_URL must start with file://, s3:// or azure://")
        retention = _number(env, "TICKETEXPORT_RETENTION_HOURS", 72.0, minimum=0)
        if retention <= 0:
            raise ConfigError("TICKETEXPORT_RETENTION_HOURS must be greater than 0")
        port = _int(env, "TICKETEXPORT_PORT", 8080, minimum=0)
        if port > 65535:
            raise ConfigError("TICKETEXPORT_PORT must be at most 65535")
        timeout_ms = _int(env, "TICKETEXPORT_WEB_STATEMENT_TIMEOUT_MS", 5000, minimum=1)
        if timeout_ms > _MAX_TIMEOUT_MS:
            raise ConfigError(
                f"TICKETEXPORT_WEB_STATEMENT_TIMEOUT_MS must be at most {_MAX_TIMEOUT_MS}"
            )
        return cls(
            database_url=(env.get("DATABASE_URL") or None),
            home=home,
            storage_url=storage_url,
            retention_hours=retention,
            timezone=tz,
            secret_key=(env.get("TICKETEXPORT_SECRET_KEY") or None),
            host=env.get("TICKETEXPORT_HOST") or "127.0.0.1",
            port=port,
            cookie_secure=_bool(env, "TICKETEXPORT_COOKIE_SECURE", False),
            trusted_proxies=networks(env, "TICKETEXPORT_TRUSTED_PROXY"),
            export_max_rows_per_s=_int(env, "TICKETEXPORT_EXPORT_MAX_ROWS_PER_S", 0),
            heartbeat_seconds=_number(env, "TICKETEXPORT_HEARTBEAT_SECONDS", 10.0, minimum=0.1),
            stall_seconds=_number(env, "TICKETEXPORT_STALL_SECONDS", 300.0, minimum=0.5),
            worker_seen_seconds=_number(env, "TICKETEXPORT_WORKER_SEEN_SECONDS", 60.0, minimum=0.5),
            export_database_url=(env.get("TICKETEXPORT_EXPORT_DATABASE_URL") or None),
            standby_max_lag_seconds=_number(
                env, "TICKETEXPORT_STANDBY_MAX_LAG_SECONDS", 30.0, minimum=0
            ),
            max_active_exports_per_user=_int(env, "TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER", 3),
            max_streams_per_session=_int(env, "TICKETEXPORT_MAX_STREAMS_PER_SESSION", 20),
            api_requests_per_minute=_int(env, "TICKETEXPORT_API_REQUESTS_PER_MINUTE", 120),
            login_window_seconds=_number(
                env, "TICKETEXPORT_LOGIN_WINDOW_SECONDS", 900.0, minimum=1
            ),
            web_statement_timeout_ms=timeout_ms,
            metrics_token=_token(env, "TICKETEXPORT_METRICS_TOKEN"),
            schedule_min_minutes=_int(env, "TICKETEXPORT_SCHEDULE_MIN_MINUTES", 5, minimum=1),
            max_schedules_per_user=_int(env, "TICKETEXPORT_MAX_SCHEDULES_PER_USER", 10),
            destinations=destinations(env),
            sftp_key_file=(env.get("TICKETEXPORT_SFTP_KEY_FILE") or None),
            sftp_known_hosts=(env.get("TICKETEXPORT_SFTP_KNOWN_HOSTS") or None),
            smtp_url=_smtp_url(env),
            mail_from=(env.get("TICKETEXPORT_MAIL_FROM") or None),
            base_url=(env.get("TICKETEXPORT_BASE_URL") or "").rstrip("/") or None,
        )

    def destination_url(self, name: str) -> str | None:
        return dict(self.destinations).get(name)

    @property
    def mail_enabled(self) -> bool:
        return bool(self.smtp_url and self.mail_from and self.base_url)
