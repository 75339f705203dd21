"""The fast list parser agrees with the precise one on every entry, valid or not."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hyperliquid.test_models import ADDRESS, DECIMAL_TEXT, JSON_VALUES, MILLIS, summary_entry
from vault_ingest.errors import VaultRecordError
from vault_ingest.hyperliquid.models import parse_vault_summary
from vault_ingest.hyperliquid.vault_list import parse_vault_list

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


@settings(max_examples=300)
@given(address=ADDRESS, changes=st.dictionaries(st.sampled_from(sorted(FIELD_VALUES)), st.none(), max_size=3)
       .flatmap(lambda keys: st.fixed_dictionaries({k: FIELD_VALUES[k] for k in keys})),
       pnl=st.lists(DECIMAL_TEXT, max_size=3))
def test_fast_path_matches_the_precise_parser(address, changes, pnl):
    entry = summary_entry(address, **changes)
    entry["pnls"] = [["day", pnl], ["week", ["0.0"]]]
    vaults, errors = parse_vault_list(json.dumps([entry]).encode())
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
