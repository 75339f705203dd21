"""The database and API URLs that `vault-ingest serve` and `vault-ingest doctor` both read and print.

Railway hands out `postgresql://` URLs; Prefect's server takes only `postgresql+asyncpg://`; psycopg and libpq
take the first. And no URL with a password reaches a log line unmasked. Which hosts are this container
(loopback) and which Railway's private network, for the doctor's warnings.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from vault_ingest.errors import ConfigError

DATABASE_URL_VARS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")
_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+asyncpg")


def mask_url(url: str) -> str:
    """`url` with its password replaced by `***`, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def asyncpg_url(name: str, value: str) -> str:
    """A PostgreSQL URL as Prefect's SQLAlchemy/asyncpg engine takes it.

    Railway hands out `postgresql://`, Heroku-style tools `postgres://`; either makes Prefect exit at startup.
    asyncpg spells libpq's `sslmode=` as `ssl=`.
    """
    scheme, sep, _ = value.partition("://")
    if not sep:
        raise ConfigError(f"{name} has no scheme; set it like postgresql://user:password@host:5432/prefect")
    if scheme.startswith("sqlite"):
        return value
    if scheme not in _POSTGRES_SCHEMES:
        raise ConfigError(
            f"{name} uses {scheme}://, which Prefect cannot store its data in; "
            "use a PostgreSQL URL (postgresql://...) or leave it unset for SQLite in PREFECT_HOME"
        )
    parts = urlsplit(value)
    query = [("ssl" if key == "sslmode" else key, val) for key, val in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg", query=urlencode(query)))


def libpq_url(asyncpg_form: str) -> str:
    """An asyncpg-form URL as libpq (psycopg) takes it."""
    parts = urlsplit(asyncpg_form)
    query = [("sslmode" if key == "ssl" else key, val) for key, val in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))


def url_host(url: str) -> str | None:
    """The host of `url`, lower case, without brackets or port; None when it has none."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def is_loopback(host: str | None) -> bool:
    """localhost, 127.0.0.0/8 or ::1: on Railway, the service's own container."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_railway_private(host: str | None) -> bool:
    """A name on Railway's private network, <service>.railway.internal, which carries plain HTTP."""
    return bool(host) and host.endswith(".railway.internal")
