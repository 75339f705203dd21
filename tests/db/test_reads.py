"""The reads of the jobs and their reports."""

from __future__ import annotations

from decimal import Decimal

from tests.db.factories import HOUR, T0, address, details, portfolio, summary
from vault_ingest.db.reads import top_vaults, vaults_for_details
from vault_ingest.db.writer import write_vault_details, write_vault_list
from vault_ingest.hyperliquid.models import Relationship


# --- reads ------------------------------------------------------------------------------------


def test_vaults_for_details_orders_by_latest_tvl_filters_and_caps(engine):
    write_vault_list(engine, [summary(1, tvl=Decimal(900)), summary(2, tvl=Decimal(10)), summary(3, tvl=Decimal(50)),
                              summary(4, tvl=Decimal(70)), summary(5, tvl=Decimal(80))], T0)
    write_vault_list(engine, [summary(1, tvl=Decimal(5)),  # its latest tvl is what counts
                              summary(2, tvl=Decimal(100)), summary(3, tvl=Decimal(50)),
                              summary(4, tvl=Decimal(1000), is_closed=True), summary(5, tvl=Decimal(60))], T0 + HOUR)
    write_vault_details(engine, [details(2, portfolio=portfolio(T0 + 2 * HOUR))], [address(5)], T0 + 2 * HOUR)

    assert vaults_for_details(engine, None, None) == [address(2), address(3), address(1)]
    assert vaults_for_details(engine, Decimal(50), None) == [address(2), address(3)]
    assert vaults_for_details(engine, None, 2) == [address(2), address(3)]
    assert vaults_for_details(engine, Decimal(1000), 5) == []


def test_top_vaults_lists_the_biggest_open_vaults(engine):
    write_vault_list(engine, [summary(1, tvl=Decimal(10)), summary(2, tvl=Decimal("2000.25"), apr=Decimal("-0.5")),
                              summary(3, tvl=Decimal(300)), summary(4, tvl=Decimal(10**9), is_closed=True)], T0)
    assert top_vaults(engine, 2) == [
        {"name": "Vault 2", "address": address(2), "tvl": Decimal("2000.25"), "apr": Decimal("-0.5"), "children": 0},
        {"name": "Vault 3", "address": address(3), "tvl": Decimal(300), "apr": Decimal("0.12"), "children": 0},
    ]


def test_top_vaults_count_a_childs_dollars_once_in_its_parent(engine):
    parent = summary(1, tvl=Decimal(300), relationship=Relationship("parent"))
    child = summary(2, tvl=Decimal(200), relationship=Relationship("child"), leader=parent.address)
    write_vault_list(engine, [parent, child, summary(3, tvl=Decimal(100))], T0)
    assert [(v["address"], v["children"]) for v in top_vaults(engine)] == [(address(1), 1), (address(3), 0)]
