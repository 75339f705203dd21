"""Settings from the environment: every variable the package reads, its default, and its checks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from vault_ingest.errors import ConfigError

DEFAULT_API_URL = "https://api.hyperliquid.xyz"
DEFAULT_STATS_URL = "https://stats-data.hyperliquid.xyz/Mainnet/vaults"
DEFAULT_WEIGHT_PER_MINUTE = 1200
# A run fails when more than this share of its vaults was skipped, failed or not found: a few bad records are
# normal, a tenth means the API or its schema changed under us.
DEFAULT_MAX_BAD_FRACTION = 0.1


def _http_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={value!r} is not an http(s) URL; set it like https://host[/path]")
    return value.rstrip("/")


def app_database_url(value: str | None) -> str:
    """The app database URL as SQLAlchemy wants it for psycopg 3.

    Railway hands out `postgresql://...`; `postgres://` (Heroku style) is accepted too.
    """
    if not value:
        raise ConfigError("DATABASE_URL is not set; set it to the app database, e.g. postgresql://user:pw@host:5432/db")
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ConfigError("DATABASE_URL has no scheme; it should start with postgresql://")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        return f"postgresql+psycopg://{rest}"
    raise ConfigError(f"DATABASE_URL uses {scheme}://; use postgresql:// (the app talks to PostgreSQL with psycopg 3)")


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    api_url: str
    stats_url: str
    weight_per_minute: int
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        raw_weight = env.get("HYPERLIQUID_WEIGHT_PER_MINUTE", str(DEFAULT_WEIGHT_PER_MINUTE))
        try:
            weight = int(raw_weight)
            if weight < 20:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"HYPERLIQUID_WEIGHT_PER_MINUTE={raw_weight!r} must be a whole number >= 20 "
                f"(one vaultDetails request weighs 20; Hyperliquid allows {DEFAULT_WEIGHT_PER_MINUTE})"
            ) from None
        raw_bad = env.get("INGEST_MAX_BAD_FRACTION") or str(DEFAULT_MAX_BAD_FRACTION)
        try:
            bad = float(raw_bad)
            if not 0 <= bad <= 1:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"INGEST_MAX_BAD_FRACTION={raw_bad!r} must be a fraction from 0 to 1 (default "
                f"{DEFAULT_MAX_BAD_FRACTION}: a run fails when more than a tenth of its vaults are bad)"
            ) from None
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            api_url=_http_url("HYPERLIQUID_API_URL", env.get("HYPERLIQUID_API_URL") or DEFAULT_API_URL),
            stats_url=_http_url("HYPERLIQUID_STATS_URL", env.get("HYPERLIQUID_STATS_URL") or DEFAULT_STATS_URL),
            weight_per_minute=weight,
            max_bad_fraction=bad,
        )

    @property
    def sqlalchemy_url(self) -> str:
        return app_database_url(self.database_url)
