"""Typed records of the Hyperliquid vault endpoints, and the parsers that build them from JSON.

Rules (../shared/reference/hyperliquid.md):
- every decimal, string or JSON number, becomes a `Decimal`, never a `float`; decode JSON with
  `loads` below so numbers never pass through `float` at all;
- millisecond timestamps become aware UTC datetimes;
- `relationship` sits in `summary` in the stats list and at the top level in vaultDetails;
- `followers` is capped by the API, so only its length is kept, as `followers_listed`;
- unknown fields are ignored; a missing or mistyped required field raises `VaultRecordError`
  naming the vault and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from vault_ingest.errors import (
    MalformedResponseError, NulCharacterError, NumericRangeError, VaultMismatchError, VaultRecordError,
)

WINDOWS = ("day", "week", "month", "allTime")
PERIODS = WINDOWS + ("perpDay", "perpWeek", "perpMonth", "perpAllTime")
RELATIONSHIPS = ("normal", "parent", "child")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ADDRESS = re.compile(r"0[xX][0-9a-fA-F]{40}")


def _integer(literal: str) -> int | Decimal:
    # Python refuses to make an int of over 4,300 digits (sys.int_info.str_digits_check_threshold): such a literal
    # is a number, so it stays one, and the field that holds it gets its own range error instead of the whole body.
    return int(literal) if len(literal) < 4300 else Decimal(literal)


def loads(body: str | bytes, what: str) -> Any:
    """Decode a JSON body with exact decimals; a body that is not JSON raises MalformedResponseError."""
    try:
        return json.loads(body, parse_float=Decimal, parse_int=_integer)
    except (ValueError, UnicodeDecodeError) as exc:
        preview = body[:80] if isinstance(body, str) else body[:80].decode("utf-8", "replace")
        raise MalformedResponseError(f"{what}: response is not JSON ({exc}); it starts with {preview!r}") from exc


@dataclass(frozen=True)
class Relationship:
    type: str
    child_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class VaultSummary:
    """One entry of the stats list (`GET .../Mainnet/vaults`)."""

    address: str
    name: str
    leader: str
    tvl: Decimal
    is_closed: bool
    relationship: Relationship
    created_at: datetime
    apr: Decimal | None
    pnl: dict[str, Decimal | None] = field(default_factory=dict)  # window -> last cumulative value
    pnls_json: str | None = None  # the `pnls` arrays as sent (JSON text, decimals as strings), for storage
    # a digest of the entry's bytes as sent, when parsed from the list: the same bytes an hour later need no
    # write. Bookkeeping of the wire, not a value of the vault, so equality ignores it.
    entry_digest: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PortfolioWindow:
    account_value: tuple[tuple[datetime, Decimal], ...]
    pnl: tuple[tuple[datetime, Decimal], ...]
    volume: Decimal


@dataclass(frozen=True)
class VaultDetails:
    """The answer to `{"type": "vaultDetails", "vaultAddress": ...}`."""

    address: str
    name: str
    leader: str
    description: str
    is_closed: bool
    relationship: Relationship
    allow_deposits: bool | None
    apr: Decimal | None
    leader_fraction: Decimal | None
    leader_commission: Decimal | None
    max_distributable: Decimal | None
    max_withdrawable: Decimal | None
    followers_listed: int
    portfolio: dict[str, PortfolioWindow]
    always_close_on_withdraw: bool | None = None
    leader_equity: Decimal | None = None  # `vaultEquity` of the follower row whose user is "Leader"


class _Record:
    """Field access on one vault's JSON object that raises VaultRecordError naming vault and field."""

    def __init__(self, raw: Any, address: str | None = None, where: str = "") -> None:
        if not isinstance(raw, dict):
            raise VaultRecordError(address, where or "<record>", f"is {type(raw).__name__}, expected an object")
        self.raw = raw
        self.address = address
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, required: bool = True) -> Any:
        if key not in self.raw or self.raw[key] is None:
            if required:
                raise VaultRecordError(self.address, self._name(key), "is missing")
            return None
        return self.raw[key]

    def sub(self, key: str) -> "_Record":
        return _Record(self.get(key), self.address, self._name(key))

    def text(self, key: str, required: bool = True) -> str | None:
        value = self.get(key, required)
        if value is not None and not isinstance(value, str):
            raise VaultRecordError(self.address, self._name(key), f"is {type(value).__name__}, expected a string")
        if value is not None and "\x00" in value:
            raise _nul(self.address, self._name(key))
        return value

    def address_(self, key: str) -> str:
        value = self.text(key)
        if not _ADDRESS.fullmatch(value):
            raise VaultRecordError(self.address, self._name(key), f"is {value[:60]!r}, expected a 0x address")
        return value.lower()

    def flag(self, key: str, required: bool = True) -> bool | None:
        value = self.get(key, required)
        if value is not None and not isinstance(value, bool):
            raise VaultRecordError(self.address, self._name(key), f"is {value!r}, expected true or false")
        return value

    def decimal(self, key: str, required: bool = True) -> Decimal | None:
        return to_decimal(self.get(key, required), self.address, self._name(key))

    def millis(self, key: str) -> datetime:
        return to_datetime(self.get(key), self.address, self._name(key))


def to_decimal(value: Any, address: str | None, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal, float)):
        raise VaultRecordError(address, name, f"is {value!r}, expected a decimal")
    try:
        result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise VaultRecordError(address, name, f"is {value!r}, expected a decimal") from None
    if not result.is_finite():
        raise VaultRecordError(address, name, f"is {value!r}, expected a finite decimal")
    if not fits_numeric(result):
        raise NumericRangeError(address, name, f"is {str(value)[:40]!r}, beyond the range of PostgreSQL's numeric "
                                                  f"(with room for totals)")
    return result


# PostgreSQL's numeric without precision: up to 131072 digits before the point and 16383 after
# (https://www.postgresql.org/docs/current/datatype-numeric.html, table 8.2).
NUMERIC_INTEGER_DIGITS = 131072
NUMERIC_FRACTION_DIGITS = 16383
# Stored values are also summed (a snapshot's total TVL, the views' totals over time): a million of them must fit,
# or one absurd value within six digits of the limit would fail a whole snapshot at its total.
SUM_HEADROOM_DIGITS = 6


def fits_numeric(value: Decimal, headroom: int = SUM_HEADROOM_DIGITS) -> bool:
    """Whether a finite Decimal can be stored as it is in a `numeric` column, and a million such values summed, so
    neither one COPY row nor a total can fail a snapshot (headroom=0: the column's own limit)."""
    _, digits, exponent = value.as_tuple()
    integer_digits = 0 if value == 0 else len(digits) + exponent  # PostgreSQL takes 0E+200000 as 0
    return integer_digits <= NUMERIC_INTEGER_DIGITS - headroom and -exponent <= NUMERIC_FRACTION_DIGITS


def to_datetime(value: Any, address: str | None, name: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise VaultRecordError(address, name, f"is {repr(value)[:40]}, expected integer milliseconds")
    try:
        return EPOCH + timedelta(milliseconds=value)  # integer arithmetic: value / 1000 as a float drifts
    except OverflowError:
        raise VaultRecordError(address, name, f"is {value!r}, out of range for a timestamp") from None


def _relationship(rec: _Record, key: str = "relationship") -> Relationship:
    raw = rec.get(key, required=False)
    if raw is None:  # older responses had null here
        return Relationship("normal")
    rel = _Record(raw, rec.address, rec._name(key))
    kind = rel.text("type")
    if kind not in RELATIONSHIPS:
        raise VaultRecordError(rec.address, rel._name("type"), f"is {kind!r}, expected one of {RELATIONSHIPS}")
    children: tuple[str, ...] = ()
    if kind == "parent" and rel.get("data", required=False) is not None:
        data = rel.sub("data")
        listed = data.get("childAddresses", required=False) or []
        if not isinstance(listed, list):
            raise VaultRecordError(rec.address, data._name("childAddresses"), "is not a list")
        children = tuple(_Record({"a": a}, rec.address, data._name("childAddresses")).address_("a") for a in listed)
    return Relationship(kind, children)


def _nul(address: str | None, name: str) -> NulCharacterError:
    return NulCharacterError(address, name, "holds a NUL character (\\u0000), which PostgreSQL's text and jsonb "
                                            "cannot store; the vault is skipped until the API sends it without")


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return isinstance(value, list) and any(_holds_nul(v) for v in value)


def _last_pnls(raw: Any, address: str) -> dict[str, Decimal | None]:
    """The stats list's `pnls`: `[[window, [decimal strings]], ...]` -> last value per window."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise VaultRecordError(address, "pnls", "is not a list")
    if _holds_nul(raw):  # the whole `pnls` is stored as jsonb
        raise _nul(address, "pnls")
    result: dict[str, Decimal | None] = {}
    for entry in raw:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
            raise VaultRecordError(address, "pnls", f"entry {str(entry)[:60]!r} is not [window, [values]]")
        window, values = entry
        if window in WINDOWS:
            result[window] = to_decimal(values[-1], address, f"pnls.{window}") if values else None
    return result


def parse_vault_summary(raw: Any) -> VaultSummary:
    """One stats-list entry: `{"apr", "pnls", "summary": {...}}`."""
    top = _Record(raw)
    summary = top.sub("summary")
    named = summary.raw.get("vaultAddress")
    top.address = summary.address = named if isinstance(named, str) else None
    address = summary.address_("vaultAddress")
    top.address = summary.address = address
    return VaultSummary(
        address=address,
        name=summary.text("name"),
        leader=summary.address_("leader"),
        tvl=summary.decimal("tvl"),
        is_closed=summary.flag("isClosed"),
        relationship=_relationship(summary),
        created_at=summary.millis("createTimeMillis"),
        apr=top.decimal("apr", required=False),
        pnl=_last_pnls(top.get("pnls", required=False), address),
        pnls_json=_json_text(top.get("pnls", required=False)),
    )


def digest(raw: bytes) -> int:
    """8 bytes of BLAKE2b as a signed bigint (a PostgreSQL `bigint` column holds it)."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


def _json_text(value: Any) -> str | None:
    # `loads` made JSON numbers Decimals; str keeps their digits exactly
    return None if value is None else json.dumps(value, default=str, separators=(",", ":"))


def _series(raw: Any, address: str, name: str) -> tuple[tuple[datetime, Decimal], ...]:
    if not isinstance(raw, list):
        raise VaultRecordError(address, name, "is not a list of [millis, value] points")
    points = []
    for point in raw:
        if not (isinstance(point, list) and len(point) == 2):
            raise VaultRecordError(address, name, f"point {str(point)[:60]!r} is not [millis, value]")
        points.append((to_datetime(point[0], address, name), to_decimal(point[1], address, name)))
    return tuple(points)


def _portfolio(raw: Any, address: str) -> dict[str, PortfolioWindow]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise VaultRecordError(address, "portfolio", "is not a list of [period, {...}]")
    result = {}
    for entry in raw:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise VaultRecordError(address, "portfolio", f"entry {str(entry)[:60]!r} is not [period, {{...}}]")
        period, body = entry
        rec = _Record(body, address, f"portfolio.{period}")
        result[period] = PortfolioWindow(
            account_value=_series(rec.get("accountValueHistory"), address, rec._name("accountValueHistory")),
            pnl=_series(rec.get("pnlHistory"), address, rec._name("pnlHistory")),
            volume=rec.decimal("vlm", required=False) or Decimal(0),
        )
    return result


def parse_vault_details(raw: Any, requested_address: str) -> VaultDetails | None:
    """A vaultDetails answer; `None` when the API says the vault does not exist (a JSON `null`)."""
    if raw is None:
        return None
    requested = requested_address.lower()
    rec = _Record(raw, requested)
    address = rec.address_("vaultAddress")
    if address != requested:
        raise VaultMismatchError(requested, address)
    followers = rec.get("followers", required=False) or []
    if not isinstance(followers, list):
        raise VaultRecordError(address, "followers", "is not a list")
    leader_rows = [f for f in followers if isinstance(f, dict) and f.get("user") == "Leader"]
    leader_equity = (_Record(leader_rows[0], address, "followers[Leader]").decimal("vaultEquity", required=False)
                     if leader_rows else None)
    return VaultDetails(
        address=address,
        name=rec.text("name"),
        leader=rec.address_("leader"),
        description=rec.text("description", required=False) or "",
        is_closed=rec.flag("isClosed"),
        relationship=_relationship(rec),
        allow_deposits=rec.flag("allowDeposits", required=False),
        apr=rec.decimal("apr", required=False),
        leader_fraction=rec.decimal("leaderFraction", required=False),
        leader_commission=rec.decimal("leaderCommission", required=False),
        max_distributable=rec.decimal("maxDistributable", required=False),
        max_withdrawable=rec.decimal("maxWithdrawable", required=False),
        followers_listed=len(followers),
        portfolio=_portfolio(rec.get("portfolio", required=False), address),
        always_close_on_withdraw=rec.flag("alwaysCloseOnWithdraw", required=False),
        leader_equity=leader_equity,
    )
