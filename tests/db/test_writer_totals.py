"""A list snapshot's totals (list_snapshots.total_tvl, listed_tvl): a newest snapshot adds the changes of the vaults
it stages or delists to the previous snapshot's listed TVL instead of summing every current row. Each stored total
is checked against that full sum, over lists in the real shape (benchmarks.synthetic) with a parent and its
children, vaults leaving and coming back, a relationship changed by vaultDetails, an older snapshot written late and
a snapshot written again with other values."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import text

from tests.db.factories import HOUR, T0, address, details, summary
from vault_ingest.db.reads import stored_list_digests
from vault_ingest.db.writer import write_vault_details, write_vault_list
from vault_ingest.hyperliquid.models import Relationship
from vault_ingest.hyperliquid.vault_list import ListParse

# every listed vault's current values, as _record_snapshot summed them for every snapshot before listed_tvl
_FULL = """
    SELECT coalesce(sum(s.tvl) FILTER (WHERE v.relationship <> 'child'), 0), coalesce(sum(s.tvl), 0)
    FROM vault_list_values s JOIN vaults v ON v.address = s.vault_address
    WHERE s.valid_to IS NULL AND v.delisted_at IS NULL"""


def _lists():
    from benchmarks.synthetic import next_hour, vault_list

    entries = vault_list(120)
    parent, children = entries[0], entries[1:4]
    for child in children:
        child["summary"].update(relationship={"type": "child"}, leader=parent["summary"]["vaultAddress"])
        child["summary"]["tvl"] = "1234.5678901234"  # a child's TVL is inside its parent's: it must not count
    parent["summary"]["relationship"] = {"type": "parent", "data": {
        "childAddresses": [c["summary"]["vaultAddress"] for c in children]}}
    return entries, [next_hour(entries, hour, changed=0.2) for hour in (1, 2, 3, 4)]


def _write(engine, entries, at, hourly=True) -> None:
    """As sync-vaults does: the stored digests, then only the changed entries parsed."""
    parse = ListParse(json.dumps(entries).encode(), stored_list_digests(engine) if hourly else {})
    write_vault_list(engine, parse, at, unchanged=parse.unchanged, skipped=lambda: len(parse.errors))


def _stored(engine, at) -> tuple[Decimal, Decimal]:
    with engine.connect() as conn:
        return tuple(conn.execute(text("SELECT total_tvl, listed_tvl FROM list_snapshots WHERE observed_at = :at"),
                                  {"at": at}).one())


def _full(engine) -> tuple[Decimal, Decimal]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(_FULL)).one())


def test_each_newest_total_equals_the_sum_over_every_current_row(engine):
    first, (hour1, hour2, hour3, hour4) = _lists()
    _write(engine, first, T0)
    assert _stored(engine, T0) == _full(engine)

    _write(engine, hour1[:100] + hour1[101:110], T0 + HOUR)  # 11 vaults leave, one of them a child
    assert _stored(engine, T0 + HOUR) == _full(engine)

    # vaultDetails says a normal vault is a child now (details win): the next total must leave it out
    moved = hour2[50]["summary"]["vaultAddress"].lower()
    write_vault_details(engine, [replace(details(1), address=moved, relationship=Relationship("child"))], [],
                        T0 + HOUR + timedelta(minutes=5))
    _write(engine, hour2, T0 + 2 * HOUR)  # the 11 come back, changed or not
    assert _stored(engine, T0 + 2 * HOUR) == _full(engine)

    # an older snapshot written late: its list says another vault is a child (the list's word, no details yet)
    late = json.loads(json.dumps(hour1))
    late[60]["summary"]["relationship"] = {"type": "child"}
    _write(engine, late, T0 + HOUR + timedelta(minutes=30), hourly=False)
    _write(engine, hour3[:80], T0 + 3 * HOUR)
    assert _stored(engine, T0 + 3 * HOUR) == _full(engine)

    _write(engine, hour4, T0 + 3 * HOUR)  # the same snapshot written again, with other values and all vaults
    assert _stored(engine, T0 + 3 * HOUR) == _full(engine)
    total, listed = _full(engine)
    assert total < listed and total != 0  # the children were there to leave out


def test_a_newest_snapshot_builds_on_the_previous_listed_tvl(engine):
    """The stored listed TVL is the base (an error in it carries over: this is the path taken), and a snapshot
    without one (as 0006 leaves the rows before it) sums every current row again."""
    first, (hour1, hour2, *_) = _lists()
    _write(engine, first, T0)
    with engine.begin() as conn:
        conn.execute(text("UPDATE list_snapshots SET listed_tvl = listed_tvl + 1"))
    _write(engine, hour1, T0 + HOUR)
    total, listed = _full(engine)
    assert _stored(engine, T0 + HOUR) == (total + 1, listed + 1)

    with engine.begin() as conn:
        conn.execute(text("UPDATE list_snapshots SET listed_tvl = NULL"))
    _write(engine, hour2, T0 + 2 * HOUR)
    assert _stored(engine, T0 + 2 * HOUR) == _full(engine)


def test_a_first_snapshot_sums_its_totals_to_the_last_digit(engine):
    """A first snapshot sums the TVL of the vaults it writes as it writes them, not over the stored rows: exactly as
    numeric's sum does (by hand below), where Python's default context would round them to 28 digits."""
    parent = summary(1, tvl=Decimal("12345678901234567890.123456789012345678901"), relationship=Relationship("parent"))
    vaults = [parent, summary(2, tvl=Decimal("0.000000000000000000001")), summary(3, tvl=Decimal("-5.5")),
              summary(4, tvl=Decimal("7.25"), relationship=Relationship("child"), leader=address(1))]
    write_vault_list(engine, vaults, T0)
    total = Decimal("12345678901234567884.623456789012345678902")  # by hand: without the child's 7.25
    listed = Decimal("12345678901234567891.873456789012345678902")
    assert _stored(engine, T0) == (total, listed) == _full(engine)
