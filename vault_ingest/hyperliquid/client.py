"""Async HTTP client for the two Hyperliquid endpoints the flows use: the stats vault list and vaultDetails.

Retries 429, 500, 502, 503, 504 and lost connections. A 429 to a weighted request means the IP's budget is
spent by someone else too, so it pauses every request of the run through the limiter (honouring Retry-After,
capped) and slows the run down; 5xx and lost connections back off per request, exponentially with full
jitter, never less than a `Retry-After` asks. 422 and other 4xx mean our request is wrong: they fail at once.

A circuit breaker stops the run after `breaker_threshold` answers in a row that were 403, 429 or 5xx, or no
answer at all: the API is refusing or down, and retrying every vault six times would take hours.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random as _random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from vault_ingest.config import DEFAULT_BREAKER_THRESHOLD
from vault_ingest.errors import (
    CircuitOpenError,
    HTTPStatusError,
    RequestRejectedError,
    RetriesExhaustedError,
    TransportError,
)
from vault_ingest.hyperliquid.limiter import Limiter
from vault_ingest.hyperliquid.models import VaultDetails, loads, parse_vault_details
from vault_ingest.hyperliquid.vault_list import ListParse

log = logging.getLogger("vault_ingest.hyperliquid")

VAULT_DETAILS_WEIGHT = 20
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# Failures where the server may never have seen the request or may answer next time; anything else
# (an unsupported URL scheme, a malformed request) would fail the same way again.
RETRIED_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
PREVIEW_CHARS = 200
USER_AGENT = "vault-ingest/0.1"

_STATUS_HINTS = {
    403: "Hyperliquid refuses requests from some regions; run from an allowed region",
    404: "check HYPERLIQUID_API_URL and HYPERLIQUID_STATS_URL",
}
_BREAKER_HINTS = {
    403: "Hyperliquid refuses requests from this machine (some regions are blocked); run from an allowed region",
    429: "another client on this IP spends the same weight budget; stop it, or lower HYPERLIQUID_WEIGHT_PER_MINUTE",
}
_BREAKER_DEFAULT_HINT = "Hyperliquid is unavailable or unreachable; try again later"


class HyperliquidClient:
    """Use as `async with HyperliquidClient(...) as client:`; `limiter` holds the IP's budget (see runtime)."""

    def __init__(
        self,
        api_url: str,
        stats_url: str,
        *,
        limiter: Limiter,
        transport: httpx.AsyncBaseTransport | None = None,
        max_attempts: int = 6,
        breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if max_attempts < 1 or breaker_threshold < 1:
            raise ValueError(f"max_attempts and breaker_threshold must be at least 1, got {max_attempts}, "
                             f"{breaker_threshold}")
        self._info_url = api_url.rstrip("/") + "/info"
        self._stats_url = stats_url
        self._limiter = limiter
        self._max_attempts = max_attempts
        self._breaker_threshold = breaker_threshold
        self._failures_in_a_row = 0
        self._open: CircuitOpenError | None = None
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._random = random
        self._http = httpx.AsyncClient(
            transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}, follow_redirects=True
        )

    async def __aenter__(self) -> HyperliquidClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        try:
            await self._http.aclose()
        finally:
            await self._limiter.aclose()

    async def vault_list(self, stored: Mapping[int, str] | None = None) -> tuple[ListParse, datetime]:
        """Every vault in the stats file, parsed as its vaults are taken (a writer COPYs the first while the rest are
        parsed), and the snapshot's time (Last-Modified: the file is regenerated hourly). Not weighted: it is a static
        file on another host, with no known limit. Entries whose bytes are `stored` (digest -> address,
        `db.reads.stored_list_digests`; None: the writer gives them) are not parsed again: they are `unchanged`."""
        what = f"GET {self._stats_url} (vault list)"
        response = await self._send(what, "GET", self._stats_url)
        return ListParse(response.content, stored), _last_modified(response) or datetime.now(timezone.utc).replace(
            microsecond=0)

    async def vault_details(self, address: str) -> VaultDetails | None:
        """One vault's details; None when the API answers `null` (no such vault). Raises VaultRecordError if invalid."""
        what = f"POST {self._info_url} vaultDetails {address}"
        payload = {"type": "vaultDetails", "vaultAddress": address}
        response = await self._send(what, "POST", self._info_url, json=payload, weight=VAULT_DETAILS_WEIGHT)
        return parse_vault_details(loads(response.content, what), address)

    async def _send(self, what: str, method: str, url: str, *, weight: int = 0, **kwargs: Any) -> httpx.Response:
        for attempt in range(1, self._max_attempts + 1):
            if self._open:
                raise self._open
            if weight:
                await self._limiter.acquire(weight)
                if self._open:  # opened while this request waited for its weight
                    raise self._open
            try:
                response = await self._http.request(method, url, **kwargs)
            except RETRIED_TRANSPORT_ERRORS as exc:
                failure, last, retry_after = f"{type(exc).__name__}: {exc}", exc, None
                self._failed(what, failure, None)
            except httpx.TransportError as exc:
                raise TransportError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
            else:
                if response.is_success:
                    self._answered(weight)
                    return response
                failure, last, retry_after = f"HTTP {response.status_code}", response, _retry_after(response)
                if response.status_code == 403 or response.status_code in RETRIED_STATUSES:
                    self._failed(what, f"{failure} {_preview(response)}", response.status_code)
                else:
                    self._failures_in_a_row = 0
                _raise_unless_retried(what, response)
            if attempt == self._max_attempts:
                break
            if weight and isinstance(last, httpx.Response) and last.status_code == 429:
                # The budget is shared with someone we cannot see: every request of the run waits, not just
                # this one, and the limiter slows down. The retry's acquire() waits out the pause.
                pause = self._limiter.throttled(retry_after)
                log.warning("%s: HTTP 429 (attempt %d of %d); pausing every request for %.1f s and slowing down",
                            what, attempt, self._max_attempts, pause)
                continue
            delay = self._backoff(attempt, retry_after)
            log.warning(
                "%s: %s (attempt %d of %d); retrying in %.2f s", what, failure, attempt, self._max_attempts, delay
            )
            await self._sleep(delay)
        if isinstance(last, httpx.Response):
            raise RetriesExhaustedError(
                f"{what} failed after {self._max_attempts} attempts, last with HTTP {last.status_code} "
                f"{_preview(last)}; Hyperliquid is rate limiting or unavailable. Try again later, and lower "
                "HYPERLIQUID_WEIGHT_PER_MINUTE if other clients share this IP",
                status_code=last.status_code,
                request_description=what,
            )
        raise TransportError(
            f"{what} got no HTTP answer in {self._max_attempts} attempts, last {failure}; "
            "check that this machine can reach the host"
        ) from last

    def _answered(self, weight: int) -> None:
        self._failures_in_a_row = 0
        if weight:
            self._limiter.answered()

    def _failed(self, what: str, failure: str, status: int | None) -> None:
        """Count a 403, 429, 5xx or lost answer; at the threshold, open the breaker and raise."""
        self._failures_in_a_row += 1
        if self._failures_in_a_row < self._breaker_threshold or self._open:
            return
        hint = _BREAKER_HINTS.get(status, _BREAKER_DEFAULT_HINT)
        self._open = CircuitOpenError(
            f"stopped sending requests to Hyperliquid after {self._failures_in_a_row} failed answers in a row "
            f"(403, 429, 5xx or none), the last {what}: {failure}; {hint}",
            failures=self._failures_in_a_row,
            last_failure=f"{what}: {failure}",
        )
        log.error("%s", self._open)
        raise self._open

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter spreads retries of many concurrent callers instead of sending them in lockstep.
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return max(self._random() * ceiling, retry_after or 0.0)


def _raise_unless_retried(what: str, response: httpx.Response) -> None:
    status = response.status_code
    if status in RETRIED_STATUSES:
        return
    if status == 422:
        raise RequestRejectedError(
            f"{what} was rejected with HTTP 422 {_preview(response)}: the API could not read the request, "
            "so it is not retried; check the address is a 42-character 0x hex string",
            status_code=status,
            request_description=what,
        )
    hint = _STATUS_HINTS.get(status, "this status is not retried")
    raise HTTPStatusError(
        f"{what} answered HTTP {status} {response.reason_phrase} {_preview(response)}; {hint}",
        status_code=status,
        request_description=what,
    )


def _preview(response: httpx.Response) -> str:
    """The start of a body, for messages: enough to recognise an error text, never a whole 15 MB list."""
    text = response.content[: PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS]
    return repr(text) if text else "(empty body)"


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds, from delta-seconds or an HTTP date; None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _last_modified(response: httpx.Response) -> datetime | None:
    value = response.headers.get("last-modified")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        log.warning("ignoring unreadable Last-Modified header %r; using the fetch time", value[:60])
        return None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
