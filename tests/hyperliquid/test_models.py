"""Property tests of the parsers: exact decimals, required fields, unknown fields, odd names, timestamps."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault_ingest.errors import (
    MalformedResponseError, NulCharacterError, NumericRangeError, VaultMismatchError, VaultRecordError,
)
from vault_ingest.hyperliquid.models import loads, parse_vault_details
from vault_ingest.hyperliquid.vault_list import parse_changed_vaults, parse_vault_list

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SAMPLES = Path(__file__).resolve().parents[2] / "cassettes" / "samples"
ADDRESS = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())
DIGITS = st.text("0123456789", min_size=1, max_size=40)


def number_text(whole: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Signed, with optional fraction and exponent: the huge, tiny and exponent forms a decimal can take."""
    fraction = st.none() | DIGITS.map(lambda digits: "." + digits[:30])
    exponent = st.none() | st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]),
                                     st.integers(0, 9999)).map(lambda e: f"{e[0]}{e[1]}{e[2]}")
    return st.tuples(st.sampled_from(["", "-"]), whole, fraction, exponent).map(
        lambda parts: "".join(part or "" for part in parts))


DECIMAL_TEXT = number_text(DIGITS)
JSON_NUMBER = number_text(DIGITS.map(lambda digits: digits.lstrip("0") or "0"))  # JSON allows no leading zeros
MILLIS = st.integers(min_value=0, max_value=253402300799999)  # up to 9999-12-31T23:59:59.999Z
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
SUMMARY_FIELDS = ("name", "vaultAddress", "leader", "tvl", "isClosed", "createTimeMillis")
DETAILS_FIELDS = ("vaultAddress", "name", "leader", "isClosed")


def summary_entry(address: str, **summary) -> dict:
    return {"apr": 0.5, "pnls": [["day", ["0.0", "1.25"]], ["allTime", ["0.0"]]], "summary": {
        "name": "v", "vaultAddress": address, "leader": "0x" + "11" * 20, "tvl": "1.5", "isClosed": False,
        "relationship": {"type": "normal"}, "createTimeMillis": 1700000000000, **summary}}


def details_body(address: str, **fields) -> dict:
    return {"name": "v", "vaultAddress": address, "leader": "0x" + "22" * 20, "description": "d",
            "portfolio": [["day", {"accountValueHistory": [[1700000000000, "10.5"]],
                                   "pnlHistory": [[1700000000000, "0.0"]], "vlm": "3.0"}]],
            "apr": 0.1, "followerState": None, "leaderFraction": 0.2, "leaderCommission": 0,
            "followers": [{"user": "Leader", "vaultEquity": "1.0", "pnl": "0.0", "allTimePnl": "0.0",
                           "daysFollowing": 1, "vaultEntryTime": 1700000000000, "lockupUntil": 1700086400000}],
            "maxDistributable": 5.5, "maxWithdrawable": 1.5, "isClosed": False, "relationship": {"type": "normal"},
            "allowDeposits": True, "alwaysCloseOnWithdraw": False, **fields}


def with_raw_number(body: object, key: str, literal: str) -> str:
    """JSON text of `body` whose `key` holds `literal` as written, as a server would send a JSON number."""
    return json.dumps(body).replace(json.dumps(f"@{key}@"), literal, 1)


def parse_one(entry: object):
    vaults, errors = parse_vault_list(json.dumps([entry]))
    assert errors == []
    return vaults[0]


@settings(max_examples=200, deadline=None)
@given(ADDRESS, DECIMAL_TEXT, DECIMAL_TEXT)
def test_decimal_strings_are_kept_exactly(address, tvl, pnl):
    entry = summary_entry(address, tvl=tvl)
    entry["pnls"][0][1].append(pnl)
    vault = parse_one(entry)
    assert vault.tvl.as_tuple() == Decimal(tvl).as_tuple()
    assert vault.pnl["day"].as_tuple() == Decimal(pnl).as_tuple()


@settings(max_examples=200, deadline=None)
@given(ADDRESS, JSON_NUMBER, JSON_NUMBER)
def test_json_numbers_never_pass_through_float(address, apr, max_distributable):
    [vault], _ = parse_vault_list(with_raw_number([{**summary_entry(address), "apr": "@apr@"}], "apr", apr))
    assert vault.apr == Decimal(apr) and isinstance(vault.apr, Decimal)
    body = with_raw_number(details_body(address, maxDistributable="@max@"), "max", max_distributable)
    details = parse_vault_details(json.loads(body, parse_float=Decimal), address)
    assert details.max_distributable == Decimal(max_distributable)
    if any(c in apr for c in ".eE"):  # a JSON integer is an int, which keeps its value but not a "-0" sign
        assert vault.apr.as_tuple() == Decimal(apr).as_tuple()


@settings(max_examples=150, deadline=None)
@given(ADDRESS, st.sampled_from(SUMMARY_FIELDS), st.booleans())
def test_a_missing_summary_field_is_reported_with_vault_and_field(address, field, null_instead):
    broken = summary_entry(address)
    if null_instead:
        broken["summary"][field] = None
    else:
        del broken["summary"][field]
    vaults, errors = parse_vault_list(json.dumps([summary_entry("0x" + "ab" * 20), broken]))
    assert [v.address for v in vaults] == ["0x" + "ab" * 20]
    [error] = errors
    assert error.field == f"summary.{field}"
    assert error.address == ("<unknown address>" if field == "vaultAddress" else address)
    assert error.address in str(error) and field in str(error)


@settings(max_examples=100, deadline=None)
@given(ADDRESS, st.sampled_from(DETAILS_FIELDS))
def test_a_missing_details_field_raises_naming_vault_and_field(address, field):
    body = details_body(address)
    del body[field]
    with pytest.raises(VaultRecordError) as caught:
        parse_vault_details(body, address.upper().replace("0X", "0x"))
    assert (caught.value.address, caught.value.field) == (address, field)


KNOWN_KEYS = {"apr", "pnls", "summary", *SUMMARY_FIELDS, "relationship", *details_body("0x").keys()}
EXTRAS = st.dictionaries(st.text(min_size=1, max_size=12).filter(lambda k: k not in KNOWN_KEYS), JSON_VALUES,
                         max_size=4)


@settings(max_examples=150, deadline=None)
@given(ADDRESS, EXTRAS, EXTRAS, EXTRAS)
def test_unknown_fields_are_ignored(address, top, summary, details):
    entry = summary_entry(address)
    extended = {**entry, **top, "summary": {**entry["summary"], **summary}}
    assert parse_one(extended) == parse_one(entry)
    assert parse_vault_details({**details_body(address), **details}, address) == parse_vault_details(
        details_body(address), address)


@settings(max_examples=200, deadline=None)
@given(ADDRESS, st.text().filter(lambda name: "\x00" not in name))
def test_any_name_round_trips(address, name):
    """Any name PostgreSQL can store; one holding NUL is refused (test_a_nul_character_is_a_named_error)."""
    assert parse_one(summary_entry(address, name=name)).name == name
    body = json.loads(json.dumps(details_body(address, name=name)), parse_float=Decimal)
    assert parse_vault_details(body, address).name == name


@settings(max_examples=200, deadline=None)
@given(ADDRESS, MILLIS, MILLIS)
def test_millisecond_timestamps_become_exact_aware_utc(address, created, point):
    vault = parse_one(summary_entry(address, createTimeMillis=created))
    assert vault.created_at == EPOCH + timedelta(milliseconds=created)
    assert vault.created_at.utcoffset() == timedelta(0)
    body = details_body(address, portfolio=[["week", {"accountValueHistory": [[point, "1.0"]],
                                                      "pnlHistory": [[point, "0.0"]], "vlm": "0.0"}]])
    [(when, value)] = parse_vault_details(body, address).portfolio["week"].account_value
    assert when == EPOCH + timedelta(milliseconds=point) and when.tzinfo is not None


@settings(max_examples=100, deadline=None)
@given(ADDRESS, st.lists(st.tuples(MILLIS, DECIMAL_TEXT), min_size=1, max_size=20))
def test_portfolio_series_keep_every_point(address, points):
    history = [[ms, text] for ms, text in points]
    body = details_body(address, portfolio=[["allTime", {"accountValueHistory": history,
                                                         "pnlHistory": history, "vlm": "1e3"}]])
    window = parse_vault_details(body, address).portfolio["allTime"]
    expected = tuple((EPOCH + timedelta(milliseconds=ms), Decimal(text)) for ms, text in points)
    assert window.account_value == expected and window.pnl == expected
    assert window.volume == Decimal(1000)


@settings(max_examples=100, deadline=None)
@given(ADDRESS, st.lists(st.booleans(), min_size=42, max_size=42))
def test_addresses_are_lowercased(address, upper):
    written = "".join(c.upper() if up else c for c, up in zip(address, upper))
    assert parse_one(summary_entry(written)).address == address


@settings(max_examples=50, deadline=None)
@given(ADDRESS, st.sampled_from([("tvl", True), ("tvl", "abc"), ("tvl", "NaN"), ("tvl", "Infinity"),
                                 ("isClosed", "false"), ("createTimeMillis", "1700000000000"),
                                 ("leader", "0x123"), ("name", 7)]))
def test_mistyped_values_are_record_errors(address, bad):
    field, value = bad
    _, [error] = parse_vault_list(json.dumps([summary_entry(address, **{field: value})]))
    assert (error.address, error.field) == (address, f"summary.{field}")


def test_a_fractional_timestamp_is_a_record_error():
    text = with_raw_number([summary_entry("0x" + "ab" * 20, createTimeMillis="@ms@")], "ms", "1700000000000.5")
    _, [error] = parse_vault_list(text)
    assert error.field == "summary.createTimeMillis"


def test_null_details_mean_no_such_vault():
    assert parse_vault_details(None, "0x" + "ab" * 20) is None


@pytest.mark.parametrize("body", ['{"vaults": []}', "null", "<html>", ""])
def test_a_list_that_is_not_a_json_array_fails_whole(body):
    with pytest.raises(MalformedResponseError, match="vault list"):
        parse_vault_list(body)


def test_details_for_another_vault_are_a_named_error():
    asked, answered = "0x" + "aa" * 20, "0x" + "bb" * 20
    with pytest.raises(VaultMismatchError) as caught:
        parse_vault_details(details_body(answered), asked.upper().replace("0X", "0x"))
    assert caught.value.address == asked and answered in str(caught.value)
    assert isinstance(caught.value, VaultRecordError)  # skipped like any invalid record, never a crash


@pytest.mark.parametrize("literal", ["1e131072", "1e-16384", "-0.5e-16383", "1e131066", "-" + "9" * 131067 + ".5",
                                     "9" * 131067])
def test_a_number_beyond_postgresql_numeric_is_a_named_error(literal):
    # The limits are PostgreSQL's (tests/db/test_writer.py shows a real server taking 1e131071 and refusing the
    # first three), less six integer digits so that totals fit too (the last three: an integer literal of more digits than
    # Python makes an int of is still a number, not a body that is not JSON).
    address = "0x" + "cc" * 20
    vaults, [error] = parse_vault_list(json.dumps([summary_entry(address, tvl=literal)]).encode())
    assert vaults == [] and isinstance(error, NumericRangeError)
    assert (error.address, error.field) == (address, "summary.tvl")
    body = with_raw_number(details_body(address, maxDistributable="@maxDistributable@"), "maxDistributable", literal)
    with pytest.raises(NumericRangeError, match="maxDistributable"):
        parse_vault_details(loads(body, "test"), address)


def snipe_entry() -> dict:
    """The real stats-list entry (cassettes/samples/stats_vaults_raw_entry_snipe_trading.json)."""
    return json.loads((SAMPLES / "stats_vaults_raw_entry_snipe_trading.json").read_text())[0]


def _nul_in_name(entry):
    entry["summary"]["name"] = "Snipe\x00Trading"


def _nul_in_a_past_pnl(entry):
    entry["pnls"][3][1][1] = "-4022.69\x00"  # not the last value: only the jsonb text holds it


def _nul_in_a_window(entry):
    entry["pnls"].append(["perpDay\x00", ["0.0"]])  # a window we do not read, stored in the jsonb text


@pytest.mark.parametrize("put_nul, field", [(_nul_in_name, "summary.name"), (_nul_in_a_past_pnl, "pnls"),
                                            (_nul_in_a_window, "pnls")])
@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("hourly", [False, True])  # entries stored: each parsed entry is searched, not the body
def test_a_nul_character_is_a_named_error(put_nul, field, compact, hourly):
    """PostgreSQL's text and jsonb cannot hold U+0000 (tests/db/test_writer.py shows a real server refusing it): the
    vault is skipped with an error naming it and the field, and the rest of the list is parsed."""
    bad, good = snipe_entry(), summary_entry("0x" + "cc" * 20)
    put_nul(bad)
    body = json.dumps([good, bad], separators=(",", ":") if compact else None)
    stored = {1: "0x" + "dd" * 20} if hourly else {}  # another vault's entry, so both are parsed
    vaults, _, [error] = parse_changed_vaults(body.encode() if compact else body, stored)
    assert [v.address for v in vaults] == [good["summary"]["vaultAddress"]]
    assert isinstance(error, NulCharacterError) and isinstance(error, VaultRecordError)
    assert (error.address, error.field) == (bad["summary"]["vaultAddress"], field)


def test_an_escaped_backslash_before_u0000_is_no_nul():
    entry = snipe_entry()
    entry["summary"]["name"] = "C:\\u0000"  # a backslash, then the six characters u0000
    assert parse_one(entry).name == "C:\\u0000"


def test_a_nul_character_in_a_details_description_is_a_named_error():
    address = "0x" + "cc" * 20
    body = json.loads(json.dumps(details_body(address, description="line\x00two")), parse_float=Decimal)
    with pytest.raises(NulCharacterError, match="description"):
        parse_vault_details(body, address)
