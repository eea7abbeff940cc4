"""Settings.from_env: defaults, accepted spellings and clear errors for malformed values."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from ticketexport.config import ConfigError, Settings


def settings(**env: str) -> Settings:
    return Settings.from_env({"TICKETEXPORT_HOME": "/srv/te", **env})


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.home == (Path.cwd() / ".ticketexport").resolve()
    assert s.storage_url == (s.home / "exports").as_uri()
    assert s.retention_hours == 72.0
    assert s.timezone == "UTC"
    assert s.secret_key is None
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.cookie_secure is False
    assert s.trusted_proxies == ()
    assert s.export_max_rows_per_s == 0
    assert s.heartbeat_seconds == 10.0
    assert s.stall_seconds == 300.0
    assert s.worker_seen_seconds == 60.0
    assert s.export_database_url is None
    assert s.standby_max_lag_seconds == 30.0
    assert s.max_active_exports_per_user == 3
    assert s.max_streams_per_session == 20
    assert s.api_requests_per_minute == 120
    assert s.login_window_seconds == 900.0
    assert s.web_statement_timeout_ms == 5000
    assert s.metrics_token is None
    # Not an environment setting; tests shorten it by replacing the field.
    assert s.keepalive_seconds == 15.0


def test_every_setting_is_read() -> None:
    s = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@db/te",
            "TICKETEXPORT_HOME": "/srv/te",
            "TICKETEXPORT_STORAGE_URL": "s3://bucket/exports?endpoint_url=http://127.0.0.1:8333",
            "TICKETEXPORT_RETENTION_HOURS": "1.5",
            "TICKETEXPORT_TIMEZONE": "Europe/Berlin",
            "TICKETEXPORT_SECRET_KEY": "k" * 32,
            "TICKETEXPORT_HOST": "0.0.0.0",  # noqa: S104 - a value, nothing binds
            "TICKETEXPORT_PORT": "9000",
            "TICKETEXPORT_COOKIE_SECURE": "yes",
            "TICKETEXPORT_TRUSTED_PROXY": "10.0.0.1, 2001:db8::/64",
            "TICKETEXPORT_EXPORT_MAX_ROWS_PER_S": "500",
            "TICKETEXPORT_HEARTBEAT_SECONDS": "0.5",
            "TICKETEXPORT_STALL_SECONDS": "3",
            "TICKETEXPORT_WORKER_SEEN_SECONDS": "2",
            "TICKETEXPORT_EXPORT_DATABASE_URL": "postgresql://u@standby/te",
            "TICKETEXPORT_STANDBY_MAX_LAG_SECONDS": "12.5",
            "TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER": "0",
            "TICKETEXPORT_MAX_STREAMS_PER_SESSION": "5",
            "TICKETEXPORT_API_REQUESTS_PER_MINUTE": "7",
            "TICKETEXPORT_LOGIN_WINDOW_SECONDS": "60",
            "TICKETEXPORT_WEB_STATEMENT_TIMEOUT_MS": "250",
            "TICKETEXPORT_METRICS_TOKEN": " s3cret-token-for-prometheus ",
        }
    )
    assert s == Settings(
        database_url="postgresql://u@db/te",
        home=Path("/srv/te"),
        storage_url="s3://bucket/exports?endpoint_url=http://127.0.0.1:8333",
        retention_hours=1.5,
        timezone="Europe/Berlin",
        secret_key="k" * 32,
        host="0.0.0.0",  # noqa: S104 - the operator's choice, read back verbatim
        port=9000,
        cookie_secure=True,
        trusted_proxies=(
            ipaddress.ip_network("10.0.0.1/32"),
            ipaddress.ip_network("2001:db8::/64"),
        ),
        export_max_rows_per_s=500,
        heartbeat_seconds=0.5,
        stall_seconds=3.0,
        worker_seen_seconds=2.0,
        export_database_url="postgresql://u@standby/te",
        standby_max_lag_seconds=12.5,
        max_active_exports_per_user=0,
        max_streams_per_session=5,
        api_requests_per_minute=7,
        login_window_seconds=60.0,
        web_statement_timeout_ms=250,
        metrics_token="s3cret-token-for-prometheus",
    )


def test_settings_are_frozen() -> None:
    s = settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


def test_empty_values_mean_the_default() -> None:
    s = settings(
        DATABASE_URL="",
        TICKETEXPORT_TIMEZONE="",
        TICKETEXPORT_PORT="",
        TICKETEXPORT_COOKIE_SECURE=" ",
        TICKETEXPORT_RETENTION_HOURS="",
        TICKETEXPORT_SECRET_KEY="",
    )
    assert s.database_url is None
    assert s.timezone == "UTC"
    assert s.port == 8080
    assert s.cookie_secure is False
    assert s.retention_hours == 72.0
    assert s.secret_key is None


def test_storage_defaults_under_the_home() -> None:
    assert settings().storage_url == "file:///srv/te/exports"


@pytest.mark.parametrize("url", ["file:///var/exports", "s3://b/p", "azure://container/prefix"])
def test_storage_schemes_accepted(url: str) -> None:
    assert settings(TICKETEXPORT_STORAGE_URL=url).storage_url == url


@pytest.mark.parametrize("url", ["ftp://x/y", "/var/exports", "S3:/b", "http://bucket"])
def test_unknown_storage_schemes_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="TICKETEXPORT_STORAGE_URL"):
        settings(TICKETEXPORT_STORAGE_URL=url)


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kolkata", "UTC", "Etc/GMT+5"])
def test_iana_time_zones_accepted(tz: str) -> None:
    assert settings(TICKETEXPORT_TIMEZONE=tz).timezone == tz


@pytest.mark.parametrize(
    "tz", ["Mars/Olympus", "CEST+2", "America", "../../etc/passwd", "/etc/localtime", "UTC\x00"]
)
def test_bad_time_zones_are_refused(tz: str) -> None:
    with pytest.raises(ConfigError, match="TICKETEXPORT_TIMEZONE"):
        settings(TICKETEXPORT_TIMEZONE=tz)


@pytest.mark.parametrize("port", ["0", "1", "65535"])
def test_ports_in_range_accepted(port: str) -> None:
    assert settings(TICKETEXPORT_PORT=port).port == int(port)


@pytest.mark.parametrize("port", ["-1", "65536", "http", "80.5", "1e3"])
def test_bad_ports_are_refused(port: str) -> None:
    with pytest.raises(ConfigError, match="TICKETEXPORT_PORT"):
        settings(TICKETEXPORT_PORT=port)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        (" On ", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_spellings(raw: str, value: bool) -> None:
    assert settings(TICKETEXPORT_COOKIE_SECURE=raw).cookie_secure is value


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled", "tru"])
def test_bad_booleans_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="TICKETEXPORT_COOKIE_SECURE"):
        settings(TICKETEXPORT_COOKIE_SECURE=raw)


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "nan", "inf", "-inf"])
def test_bad_retention_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="TICKETEXPORT_RETENTION_HOURS"):
        settings(TICKETEXPORT_RETENTION_HOURS=raw)


@pytest.mark.parametrize("raw", ["-1", "1.5", "lots"])
def test_bad_throttle_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="TICKETEXPORT_EXPORT_MAX_ROWS_PER_S"):
        settings(TICKETEXPORT_EXPORT_MAX_ROWS_PER_S=raw)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("TICKETEXPORT_HEARTBEAT_SECONDS", "0"),
        ("TICKETEXPORT_HEARTBEAT_SECONDS", "0.01"),
        ("TICKETEXPORT_STALL_SECONDS", "0.1"),
        ("TICKETEXPORT_STALL_SECONDS", "soon"),
        ("TICKETEXPORT_WORKER_SEEN_SECONDS", "-5"),
        ("TICKETEXPORT_WORKER_SEEN_SECONDS", "nan"),
        ("TICKETEXPORT_STALL_SECONDS", "inf"),
        ("TICKETEXPORT_STANDBY_MAX_LAG_SECONDS", "-1"),
        ("TICKETEXPORT_STANDBY_MAX_LAG_SECONDS", "later"),
    ],
)
def test_bad_timings_are_refused(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        settings(**{name: raw})


def test_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"TICKETEXPORT_HOME": "data"}).home == tmp_path.resolve() / "data"


def test_home_expands_the_user_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings.from_env({"TICKETEXPORT_HOME": "~/te"}).home == tmp_path.resolve() / "te"


def test_config_error_is_a_value_error() -> None:
    # The CLI reports ValueErrors as one-line errors; a ConfigError must be one.
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER", "-1"),
        ("TICKETEXPORT_MAX_ACTIVE_EXPORTS_PER_USER", "three"),
        ("TICKETEXPORT_MAX_STREAMS_PER_SESSION", "2.5"),
        ("TICKETEXPORT_LOGIN_WINDOW_SECONDS", "0"),
        ("TICKETEXPORT_LOGIN_WINDOW_SECONDS", "nan"),
        ("TICKETEXPORT_WEB_STATEMENT_TIMEOUT_MS", "0"),
        ("TICKETEXPORT_WEB_STATEMENT_TIMEOUT_MS", "2147483648"),
        ("TICKETEXPORT_WEB_STATEMENT_TIMEOUT_MS", "5s"),
        ("TICKETEXPORT_METRICS_TOKEN", "short"),
        ("TICKETEXPORT_METRICS_TOKEN", "a token with spaces in it"),
        ("TICKETEXPORT_METRICS_TOKEN", "ünïcödé-token-ünïcödé"),
    ],
)
def test_bad_limits_are_refused_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name) as refused:
        settings(**{name: raw})
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("raw", ["10.0.0.1:80", "proxy", "10.0.0.1,", "10.0.0.0/33"])
def test_bad_trusted_proxies_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^TICKETEXPORT_TRUSTED_PROXY must be"):
        settings(TICKETEXPORT_TRUSTED_PROXY=raw)


def test_schedule_settings() -> None:
    s = Settings.from_env({})
    assert (s.schedule_min_minutes, s.max_schedules_per_user) == (5, 10)
    assert s.destinations == ()
    assert not s.mail_enabled
    s = Settings.from_env(
        {
            "TICKETEXPORT_SCHEDULE_MIN_MINUTES": "1",
            "TICKETEXPORT_MAX_SCHEDULES_PER_USER": "0",
            "TICKETEXPORT_DESTINATIONS": (
                " lake = s3://b/p?endpoint_url=http://x ;partner=sftp://u@h:2222/in;"
            ),
            "TICKETEXPORT_SFTP_KEY_FILE": "/k",
            "TICKETEXPORT_SFTP_KNOWN_HOSTS": "/kh",
            "TICKETEXPORT_SMTP_URL": "smtps://mail:pw@smtp.example.com",
            "TICKETEXPORT_MAIL_FROM": "exports@example.com",
            "TICKETEXPORT_BASE_URL": "https://tickets.example.com/",
        }
    )
    assert (s.schedule_min_minutes, s.max_schedules_per_user) == (1, 0)
    assert s.destination_url("lake") == "s3://b/p?endpoint_url=http://x"
    assert s.destination_url("partner") == "sftp://u@h:2222/in"
    assert s.destination_url("other") is None
    assert (s.sftp_key_file, s.sftp_known_hosts) == ("/k", "/kh")
    assert s.base_url == "https://tickets.example.com"
    assert s.mail_enabled


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TICKETEXPORT_DESTINATIONS", "lake"),
        ("TICKETEXPORT_DESTINATIONS", "la ke=file:///srv/drop"),
        ("TICKETEXPORT_DESTINATIONS", "lake=http://example.com/drop"),
        ("TICKETEXPORT_DESTINATIONS", "lake=file:///a;lake=file:///b"),
        ("TICKETEXPORT_SMTP_URL", "mail.example.com:25"),
        ("TICKETEXPORT_SCHEDULE_MIN_MINUTES", "0"),
    ],
)
def test_bad_schedule_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
