"""The details writer against a real PostgreSQL: values stored once, attributes, not found, atomicity."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select, text

from tests.db.factories import HOUR, T0, address, details, portfolio, summary, window
from tests.db.support import Boom, detail_rows, dump, fail_at, vault
from vault_ingest.db.reads import top_vaults, vaults_for_details
from vault_ingest.db.schema import vault_history
from vault_ingest.db.staging import WriteCounts
from vault_ingest.db.writer import write_vault_details, write_vault_list
from vault_ingest.hyperliquid.models import Relationship
from vault_ingest.metrics import window_metrics


# --- vaultDetails -----------------------------------------------------------------------------


def test_details_land_metrics_at_the_data_time_and_the_history_series(engine):
    write_vault_list(engine, [summary(1)], T0 - HOUR)
    day = window(T0 + HOUR, ["100", "110", "104.5"], ["0.0", "10", "4.5"], volume="77")
    d = details(1, portfolio={**portfolio(), "day": day, "perpDay": day,
                              "someFuturePeriodName": window(T0, ["1"], ["0"])},
                always_close_on_withdraw=True, leader_equity=Decimal("61.725"))
    assert write_vault_details(engine, [d], [], T0 + 5 * HOUR) == WriteCounts(new=1)

    [detail_row] = detail_rows(engine, 1)
    assert detail_row["valid_from"] == detail_row["confirmed_at"] == T0 + HOUR  # the last day point, not the write
    assert detail_row["snapshot_at"] == T0 - HOUR  # the list snapshot it belongs to
    assert (detail_row["max_distributable"], detail_row["max_withdrawable"]) == (Decimal("1234.5"), Decimal("1000.25"))
    assert (detail_row["leader_fraction"], detail_row["followers_listed"]) == (Decimal("0.05"), 42)
    assert (detail_row["apr"], detail_row["leader_equity"]) == (Decimal("0.12"), Decimal("61.725"))
    assert vault(engine, 1)["always_close_on_withdraw"] is True
    for key, suffix in [("day", "day"), ("week", "week"), ("month", "month"), ("allTime", "all_time")]:
        expected = window_metrics(d.portfolio[key])
        assert detail_row[f"volume_{suffix}"] == expected.volume
        assert detail_row[f"pnl_{suffix}"] == expected.pnl == Decimal("4.5")
        assert detail_row[f"return_{suffix}"] == expected.return_
        assert detail_row[f"max_drawdown_{suffix}"] == expected.max_drawdown
    assert detail_row["volume_day"] == Decimal(77)

    with engine.connect() as conn:
        history = conn.execute(select(vault_history).order_by(vault_history.c.ts)).all()
    # Every perp window repeats its twin: one series. The day window shares no timestamp with the all-time
    # one, so nothing ties its PnL to the origin: it is left out (and logged). The all-time "now" is flagged.
    assert {h.series for h in history} == {"all"}
    assert [(h.ts, h.account_value, h.pnl, h.is_now) for h in history] == [
        (T0 - 4 * HOUR, Decimal(100), Decimal("0.0"), False),
        (T0 - 2 * HOUR, Decimal(110), Decimal(10), False),
        (T0, Decimal("104.5"), Decimal("4.5"), True),
    ]


def test_details_without_a_day_window_use_the_given_time(engine):
    write_vault_list(engine, [summary(1)], T0)
    write_vault_details(engine, [details(1, portfolio={})], [], T0 + 2 * HOUR)
    assert [m["valid_from"] for m in detail_rows(engine, 1)] == [T0 + 2 * HOUR]


def test_details_update_vault_attributes_and_the_list_keeps_them(engine):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    write_vault_details(engine, [details(1, description="Delta neutral", allow_deposits=False,
                                         leader_commission=Decimal("0.1"), is_closed=True,
                                         relationship=Relationship("parent"))], [], T0)
    # the list disagrees: vaultDetails wins is_closed and relationship once it has answered, every time
    for hour in (1, 2):
        write_vault_list(engine, [summary(1, is_closed=False), summary(2, is_closed=True)], T0 + hour * HOUR)
        v = vault(engine, 1)
        assert (v["description"], v["allow_deposits"], v["leader_commission"]) == ("Delta neutral", False, Decimal("0.1"))
        assert (v["is_closed"], v["relationship"], v["details_at"]) == (True, "parent", T0)
    assert vault(engine, 2)["is_closed"] is True  # no details yet: the list's


def test_details_counts_are_about_values_stored_once(engine):
    write_vault_list(engine, [summary(1), summary(2), summary(3), summary(4)], T0 - HOUR)
    first = [details(1), details(2), details(3)]
    assert write_vault_details(engine, first, [], T0) == WriteCounts(new=3)
    later = portfolio(T0 + HOUR)  # the same values an hour later: confirmed, not stored again
    refetched = [details(1), details(2, max_withdrawable=Decimal(1), portfolio=later), details(3, portfolio=later),
                 details(4)]
    assert write_vault_details(engine, refetched, [], T0) == WriteCounts(new=1, updated=1, unchanged=2)
    assert [(r["valid_from"], r["confirmed_at"], r["valid_to"]) for r in detail_rows(engine, 3)] == [
        (T0, T0 + HOUR, None)]
    assert [(r["valid_from"], r["valid_to"], r["max_withdrawable"]) for r in detail_rows(engine, 2)] == [
        (T0, T0 + HOUR, Decimal("1000.25")), (T0 + HOUR, None, Decimal(1))]


def test_same_details_snapshot_twice_leaves_identical_tables(engine):
    write_vault_list(engine, [summary(1), summary(2, relationship=Relationship("parent")), summary(3)], T0)
    snapshot = [details(1), details(2, relationship=Relationship("parent", (address(3),)))]
    write_vault_details(engine, snapshot, [address(3)], T0)
    before = dump(engine)
    assert write_vault_details(engine, snapshot, [address(3)], T0) == WriteCounts(unchanged=2)
    assert dump(engine) == before


@pytest.mark.parametrize("stage", ["staged", "vaults", "vault_detail_values", "vault_history"])
def test_a_details_snapshot_failing_midway_leaves_no_trace(engine, stage):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    write_vault_details(engine, [details(1)], [], T0)
    before = dump(engine)
    with pytest.raises(Boom):
        write_vault_details(engine, [details(1, description="changed", portfolio=portfolio(T0 + HOUR)), details(2)],
                            [address(1)], T0 + HOUR, _after_stage=fail_at(stage))
    assert dump(engine) == before


def test_not_found_is_recorded_once_and_cleared_by_details(engine):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    write_vault_details(engine, [], [address(1), address(99)], T0)  # 99 is unknown: ignored
    write_vault_details(engine, [], [address(1)], T0 + HOUR)
    assert (vault(engine, 1)["not_found_at"], vault(engine, 1)["not_found_checked_at"]) == (T0, T0 + HOUR)
    assert vault(engine, 2)["not_found_at"] is None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM vaults")).scalar() == 2

    write_vault_details(engine, [details(1)], [], T0 + 2 * HOUR)
    assert (vault(engine, 1)["not_found_at"], vault(engine, 1)["not_found_checked_at"]) == (None, None)


def test_a_not_found_vault_is_asked_again_when_a_newer_list_still_shows_it(engine):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    write_vault_details(engine, [], [address(1)], T0 + HOUR)
    assert vaults_for_details(engine, None, None) == [address(2)]  # not again for the same list
    write_vault_list(engine, [summary(1), summary(2)], T0 + 2 * HOUR)
    assert vaults_for_details(engine, None, None) == [address(2), address(1)]
    assert [v["address"] for v in top_vaults(engine)] == [address(2)]  # until it answers


def test_parent_details_set_stored_childrens_parent(engine):
    write_vault_list(engine, [summary(1, relationship=Relationship("parent")),
                              summary(2, relationship=Relationship("child")), summary(3)], T0)
    parent = details(1, relationship=Relationship("parent", (address(2), address(50))))  # 50 is not stored
    write_vault_details(engine, [parent], [], T0)
    assert vault(engine, 2)["parent_address"] == address(1)
    assert vault(engine, 3)["parent_address"] is None

    write_vault_list(engine, [summary(2, relationship=Relationship("child"))], T0 + HOUR)
    assert vault(engine, 2)["parent_address"] == address(1)  # the list cannot tell, so it keeps it


def test_details_of_a_vault_not_yet_listed_are_skipped(engine):
    write_vault_list(engine, [summary(1)], T0 - HOUR)
    assert write_vault_details(engine, [details(1), details(2)], [], T0) == WriteCounts(new=1)
    with engine.connect() as conn:
        stored = conn.execute(select(vault_history.c.vault_address).distinct()).scalars().all()
    assert stored == [address(1)]


