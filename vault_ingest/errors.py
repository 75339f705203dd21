"""Every error vault_ingest raises on purpose, as one hierarchy (in the manner of httpx).

Catch `VaultIngestError` for all of them; each message names what is wrong and how to fix it.
"""

from __future__ import annotations


class VaultIngestError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(VaultIngestError):
    """An environment variable or option has a value we cannot use."""


class HyperliquidError(VaultIngestError):
    """Talking to the Hyperliquid API failed."""


class TransportError(HyperliquidError):
    """The request never got an HTTP answer (connection refused, timeout), even after retries."""


class HTTPStatusError(HyperliquidError):
    """The API answered with a status we do not accept."""

    def __init__(self, message: str, *, status_code: int, request_description: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_description = request_description


class RequestRejectedError(HTTPStatusError):
    """422: the API could not deserialize our request. A bug on our side, so never retried."""


class RetriesExhaustedError(HTTPStatusError):
    """429 or 5xx on every attempt."""


class CircuitOpenError(HyperliquidError):
    """Too many 403, 429 or 5xx answers (or no answers) in a row: the run stops sending requests and fails.

    Raised by the request that made the run give up and by every request after it, so a run whose API is
    down or refusing it fails in minutes instead of spending hours on retries while it holds its slot.
    """

    def __init__(self, message: str, *, failures: int, last_failure: str) -> None:
        super().__init__(message)
        self.failures = failures
        self.last_failure = last_failure


class RateBudgetError(HyperliquidError):
    """The weight budget shared through the Prefect server cannot be set up or taken from."""


class MalformedResponseError(HyperliquidError):
    """The response is not JSON, or not the structure the endpoint documents. Nothing is written."""


class VaultRecordError(HyperliquidError):
    """One vault record is invalid: a required field is missing or has the wrong type."""

    def __init__(self, address: str | None, field: str, problem: str) -> None:
        self.address = address or "<unknown address>"
        self.field = field
        self.problem = problem
        super().__init__(f"vault {self.address}: field {field!r} {problem}")


# --- vault data: a record we refuse, and a run whose data is too bad to pass -------------------


class VaultMismatchError(VaultRecordError):
    """vaultDetails answered for another vault than the one asked about; nothing of it is stored."""

    def __init__(self, requested: str, answered: str) -> None:
        super().__init__(requested, "vaultAddress", f"is {answered}: the answer is for another vault, so it is skipped")
        self.answered = answered


class NumericRangeError(VaultRecordError):
    """A number PostgreSQL's `numeric` cannot hold, or not summed with others (over 131066 digits before the point,
    six fewer than the column's 131072, or over 16383 after)."""


class NulCharacterError(VaultRecordError):
    """A string holding U+0000 (JSON `\\u0000`), which PostgreSQL's `text` and `jsonb` cannot store."""


class DataQualityError(VaultIngestError):
    """Too many vaults were skipped, failed or not found, or a list snapshot would replace a good one with
    a mostly empty one. `summary` holds the run's counts and its first problems."""

    def __init__(self, message: str, summary: object = None) -> None:
        super().__init__(message)
        self.summary = summary


class StorageError(VaultIngestError):
    """The app database rejected or could not take a write."""


# --- deploying and checking a deployment (vault_ingest.deploy, vault_ingest.doctor, release-slots) -----------


class StaleListError(StorageError):
    """A list snapshot parsed against stored entries (`unchanged` vaults) found them changed by another write
    before its own: nothing was written; parse the list again in full and write that."""


class DeployError(VaultIngestError):
    """Deploying the flows failed."""


class ServerUnreachableError(DeployError):
    """The Prefect API did not answer."""


class AuthRefusedError(DeployError):
    """The Prefect API answered 401/403: basic auth is on and the credentials are missing or wrong."""


class SourceError(DeployError):
    """The source is not a git URL, or cannot be cloned at the ref."""


class EntrypointNotFoundError(DeployError):
    """The cloned source has no flow at an entrypoint."""


class APIError(VaultIngestError):
    """A request to the Prefect API got no answer or an unexpected one; the message names the request, secrets
    masked."""
