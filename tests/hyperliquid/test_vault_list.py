"""The fast list parser agrees with the precise one on every entry, valid or not."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hyperliquid.test_models import ADDRESS, DECIMAL_TEXT, JSON_VALUES, MILLIS, summary_entry
from vault_ingest.errors import VaultRecordError
from vault_ingest.hyperliquid.models import parse_vault_summary
from vault_ingest.hyperliquid.models import digest
from vault_ingest.hyperliquid.vault_list import parse_changed_vaults, parse_vault_list

FIELD_VALUES = {
    "name": st.text(max_size=20) | JSON_VALUES,
    "tvl": DECIMAL_TEXT | JSON_VALUES,
    "isClosed": st.booleans() | JSON_VALUES,
    "createTimeMillis": MILLIS | JSON_VALUES,
    "vaultAddress": ADDRESS | st.text(max_size=44),
    "leader": ADDRESS | JSON_VALUES,
    "relationship": st.sampled_from([{"type": "normal"}, {"type": "child"}, {"type": "parent"},
                                     {"type": "parent", "data": {"childAddresses": ["0x" + "ab" * 20]}},
                                     {"type": "sibling"}, None]) | JSON_VALUES,
}


def precise(entry):
    try:
        return parse_vault_summary(json.loads(json.dumps(entry)))
    except VaultRecordError as exc:
        return str(exc)


@settings(max_examples=300, deadline=None)  # a loaded machine is not a slow parser
@given(address=ADDRESS, changes=st.dictionaries(st.sampled_from(sorted(FIELD_VALUES)), st.none(), max_size=3)
       .flatmap(lambda keys: st.fixed_dictionaries({k: FIELD_VALUES[k] for k in keys})),
       pnl=st.lists(DECIMAL_TEXT, max_size=3), compact=st.booleans())
def test_fast_path_matches_the_precise_parser(address, changes, pnl, compact):
    """Compact, as the wire sends it (pnls text kept as sent), or with spaces (pnls text written again)."""
    entry = summary_entry(address, **changes)
    entry["pnls"] = [["day", pnl], ["week", ["0.0"]]]
    vaults, errors = parse_vault_list(json.dumps([entry], separators=(",", ":") if compact else None).encode())
    fast = vaults[0] if vaults else str(errors[0])
    assert fast == precise(entry)


def test_valid_entries_take_the_fast_path(monkeypatch):
    """The precise parser is only for entries the typed decoder refuses: 10,000 entries through it take seconds."""
    from benchmarks.synthetic import vault_list_body
    from vault_ingest.hyperliquid import vault_list

    def refuse(raw):
        raise AssertionError(f"the slow parser ran for {str(raw)[:80]}")

    monkeypatch.setattr(vault_list, "parse_vault_summary", refuse)
    vaults, errors = vault_list.parse_vault_list(vault_list_body(50))
    assert len(vaults) == 50 and errors == []
    assert all(v.pnls_json and v.pnl["day"] is not None for v in vaults)


def _entries(n: int) -> list[dict]:
    return [summary_entry(f"0x{i:040x}") for i in range(1, n + 1)]


def _raw(entry: dict) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode()


def test_entries_stored_with_the_same_bytes_are_not_parsed_again(monkeypatch):
    from vault_ingest.hyperliquid import vault_list

    entries = _entries(4)
    entries[1]["summary"]["tvl"] = "5.25"  # changed since stored
    stored = {digest(_raw(e)): e["summary"]["vaultAddress"] for e in _entries(4)}
    parsed = []
    monkeypatch.setattr(vault_list, "_parse_entry", lambda raw, d, nul, parse=vault_list._parse_entry:
                        parsed.append(d) or parse(raw, d, nul))
    body = b"[" + b",".join(map(_raw, entries)) + b"]"
    vaults, unchanged, errors = parse_changed_vaults(body, stored)
    assert [(v.address, str(v.tvl)) for v in vaults] == [(f"0x{2:040x}", "5.25")] and errors == []
    assert unchanged == {e["summary"]["vaultAddress"]: digest(_raw(e)) for e in (entries[0], *entries[2:])}
    assert parsed == [digest(_raw(entries[1]))]


def test_a_vault_listed_twice_is_an_error_whether_its_entries_were_stored_or_not():
    first, second = _entries(2)
    changed = {**first, "apr": 0.75}  # parsed, then refused as a second listing
    stored = {digest(_raw(first)): first["summary"]["vaultAddress"]}
    body = b"[" + b",".join(map(_raw, (first, changed, second, second))) + b"]"
    vaults, unchanged, errors = parse_changed_vaults(body, stored)
    assert list(unchanged) == [first["summary"]["vaultAddress"]]
    assert [v.address for v in vaults] == [second["summary"]["vaultAddress"]]
    assert [(e.address, e.field) for e in errors] == [(first["summary"]["vaultAddress"], "summary.vaultAddress"),
                                                      (second["summary"]["vaultAddress"], "summary.vaultAddress")]
