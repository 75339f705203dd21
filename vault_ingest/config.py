"""Settings from the environment: every variable the package reads, its default, and its checks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from vault_ingest.errors import ConfigError

DEFAULT_API_URL = "https://api.hyperliquid.xyz"
DEFAULT_STATS_URL = "https://stats-data.hyperliquid.xyz/Mainnet/vaults"

# The weight budget (hyperliquid.md §4: "an aggregated weight limit of 1200 per minute" per IP). The default
# leaves 10 % headroom for the limiter's burst, network jitter and anything else on the IP.
HYPERLIQUID_WEIGHT_LIMIT = 1200
DEFAULT_WEIGHT_PER_MINUTE = 1080
# The "minute" of the budget. Hyperliquid's is 60 s; tests and benchmarks shorten it to scale time, spending the
# same weights per window (a shorter one sends faster than Hyperliquid allows, so it is never worth setting live).
WEIGHT_WINDOW_SECONDS = 60.0
RATE_LIMIT_SCOPES = ("auto", "prefect", "local")
DEFAULT_RATE_LIMIT_NAME = "hyperliquid-weight"
DEFAULT_BREAKER_THRESHOLD = 10
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


def _whole_number(env, name: str, default: int, low: int, high: int, why: str) -> int:
    raw = env.get(name) or str(default)
    try:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be a whole number from {low} to {high} ({why})") from None
    return value


def _weight_window(env) -> float:
    raw = env.get("HYPERLIQUID_WEIGHT_WINDOW_SECONDS")
    try:
        window = float(raw or WEIGHT_WINDOW_SECONDS)
        if not 1 <= window <= WEIGHT_WINDOW_SECONDS:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"HYPERLIQUID_WEIGHT_WINDOW_SECONDS={raw!r} must be seconds from 1 to 60; leave it unset for "
            "Hyperliquid's minute (only tests shorten it, to scale time)"
        ) from None
    return window


def _rate_limit_scope(env) -> str:
    """Where the weight budget is kept: on the Prefect server (shared by every process) or in this process."""
    raw = env.get("HYPERLIQUID_RATE_LIMIT")
    scope = (raw or "auto").strip().lower()
    if scope not in RATE_LIMIT_SCOPES:
        raise ConfigError(
            f"HYPERLIQUID_RATE_LIMIT={raw!r} is not one of {', '.join(RATE_LIMIT_SCOPES)}; "
            "use prefect to share the budget through the Prefect server, local to keep it in this process"
        )
    if scope == "auto":  # under a worker, or beside a server, PREFECT_API_URL names the server that shares it
        return "prefect" if env.get("PREFECT_API_URL") else "local"
    if scope == "prefect" and not env.get("PREFECT_API_URL"):
        raise ConfigError("HYPERLIQUID_RATE_LIMIT=prefect needs PREFECT_API_URL, the server that keeps the shared "
                          "budget; set it, or set HYPERLIQUID_RATE_LIMIT=local")
    return scope


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    api_url: str
    stats_url: str
    weight_per_minute: int
    weight_window: float = WEIGHT_WINDOW_SECONDS  # the seconds weight_per_minute is counted over
    # The Hyperliquid budget and breaker, kept together: see hyperliquid/limiter.py and prefect_budget.py.
    rate_limit: str = "local"
    rate_limit_name: str = DEFAULT_RATE_LIMIT_NAME
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        weight = _whole_number(
            env, "HYPERLIQUID_WEIGHT_PER_MINUTE", DEFAULT_WEIGHT_PER_MINUTE, 20, HYPERLIQUID_WEIGHT_LIMIT,
            f"one vaultDetails request weighs 20; Hyperliquid allows {HYPERLIQUID_WEIGHT_LIMIT} per IP and the "
            f"default, {DEFAULT_WEIGHT_PER_MINUTE}, leaves headroom",
        )
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
            weight_window=_weight_window(env),
            rate_limit=_rate_limit_scope(env),
            rate_limit_name=(env.get("HYPERLIQUID_RATE_LIMIT_NAME") or DEFAULT_RATE_LIMIT_NAME).strip(),
            breaker_threshold=_whole_number(
                env, "HYPERLIQUID_BREAKER_THRESHOLD", DEFAULT_BREAKER_THRESHOLD, 1, 1000,
                "how many 403, 429 or 5xx answers in a row stop a run",
            ),
            max_bad_fraction=bad,
        )

    @property
    def sqlalchemy_url(self) -> str:
        return app_database_url(self.database_url)
