"""The app database's tables. Alembic migrations (vault_ingest/migrations) create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger, Boolean, Column, Computed, DateTime, ForeignKey, Index, Integer, MetaData, Numeric, String, Table, Text, text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSTZRANGE

WINDOW_COLUMNS = {"day": "day", "week": "week", "month": "month", "allTime": "all_time"}

metadata = MetaData()


def _address(name: str, *args, **kwargs) -> Column:
    return Column(name, String(42), *args, **kwargs)


vaults = Table(
    "vaults",
    metadata,
    _address("address", primary_key=True),
    Column("name", Text, nullable=False),
    _address("leader", nullable=False),
    Column("description", Text),  # from vaultDetails only
    Column("created_at", DateTime(timezone=True), nullable=False),
    # is_closed and relationship: the list sets them until vaultDetails answers, then vaultDetails wins
    # (live, and it names the children); a disagreement is settled by the next vaultDetails answer
    Column("is_closed", Boolean, nullable=False),
    Column("relationship", String(8), nullable=False),  # normal | parent | child
    _address("parent_address"),  # set on children
    Column("allow_deposits", Boolean),
    Column("always_close_on_withdraw", Boolean),
    Column("leader_commission", Numeric),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    # the last list snapshot that listed it, once a newer one lacks it; NULL while listed, when that is the newest
    # snapshot (list_snapshots): the hourly write need not touch every vault to say it is still there
    Column("seen_until", DateTime(timezone=True)),
    Column("list_digest", BigInteger),  # of the list entry as stored: an unchanged vault is not staged again
    Column("delisted_at", DateTime(timezone=True)),  # the first list snapshot without it; NULL while listed
    Column("details_at", DateTime(timezone=True)),  # when vaultDetails last answered for it
    Column("not_found_at", DateTime(timezone=True)),  # since when vaultDetails answers null
    Column("not_found_checked_at", DateTime(timezone=True)),  # its latest null answer
    # the few children: a list write subtracts their TVL from the listed total (writer._record_snapshot)
    Index("vaults_children", "address", postgresql_where=text("relationship = 'child'")),
)

list_snapshots = Table(
    "list_snapshots",
    metadata,
    Column("observed_at", DateTime(timezone=True), primary_key=True),  # the list's Last-Modified
    Column("vaults", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    Column("total_tvl", Numeric, nullable=False),  # each dollar once: children are inside their parent
    Column("listed_tvl", Numeric),  # every listed vault's, children too: the next write's base (NULL before 0006)
)


def _per_window(prefix: str, type_) -> list[Column]:
    return [Column(f"{prefix}_{suffix}", type_) for suffix in WINDOW_COLUMNS.values()]


def _interval() -> list:
    """Values stored once while they hold: from the snapshot that brought them (`valid_from`) until the one that
    changed them or first lacked the vault (`valid_to`, NULL while current). `during` is that range, stored so
    that its GiST index can answer "every vault at a time T" from the index alone."""
    return [Column("valid_from", DateTime(timezone=True), primary_key=True),
            Column("valid_to", DateTime(timezone=True)),
            Column("during", TSTZRANGE, Computed("tstzrange(valid_from, valid_to)", persisted=True))]


def _interval_indexes(table: str, covered: list[str]) -> list[Index]:
    """The current row per vault, and the rows at a time T, each read from its index alone (`covered`)."""
    return [Index(f"{table}_current", "vault_address", unique=True, postgresql_where=text("valid_to IS NULL"),
                  postgresql_include=["valid_from", *covered]),
            Index(f"{table}_during", "during", postgresql_using="gist",
                  postgresql_include=["vault_address", "valid_from", *covered])]


LIST_COVERED = ["tvl", "apr", *(f"pnl_{w}" for w in WINDOW_COLUMNS.values())]

# The stats list's values of a vault. Current rows are confirmed by every list snapshot that lists the vault:
# the newest snapshot, or `vaults.seen_until` for a delisted vault (`vault_latest.list_confirmed_at`).
vault_list_values = Table(
    "vault_list_values",
    metadata,
    _address("vault_address", ForeignKey("vaults.address", ondelete="CASCADE"), primary_key=True),
    *_interval(),
    Column("tvl", Numeric, nullable=False),
    Column("apr", Numeric),
    *_per_window("pnl", Numeric),  # the last value of each `pnls` array
    Column("pnls", JSONB),  # the `pnls` arrays as sent, decimals as strings: the only PnL of undetailed vaults
    *_interval_indexes("vault_list_values", LIST_COVERED),
)

# vaultDetails' values of a vault. `valid_from` is the data's own time (the portfolio's request-time point);
# `snapshot_at` the list snapshot the run selected it from: the key that joins it to that snapshot's list values.
vault_detail_values = Table(
    "vault_detail_values",
    metadata,
    _address("vault_address", ForeignKey("vaults.address", ondelete="CASCADE"), primary_key=True),
    *_interval(),
    Column("confirmed_at", DateTime(timezone=True), nullable=False),  # the latest fetch that answered the same
    Column("snapshot_at", DateTime(timezone=True)),
    Column("apr", Numeric),
    Column("max_distributable", Numeric),
    Column("max_withdrawable", Numeric),
    Column("leader_fraction", Numeric),
    Column("leader_equity", Numeric),
    Column("followers_listed", Integer),  # the API caps the list: not the number of depositors
    # from the portfolio, each within its own window
    *_per_window("pnl", Numeric),
    *_per_window("volume", Numeric),
    *_per_window("return", Numeric),
    *_per_window("max_drawdown", Numeric),
    *_interval_indexes("vault_detail_values", []),
)

vault_history = Table(
    "vault_history",
    metadata,
    _address("vault_address", ForeignKey("vaults.address", ondelete="CASCADE"), primary_key=True),
    Column("series", String(8), primary_key=True),  # all | perp (vault_ingest.history)
    Column("ts", DateTime(timezone=True), primary_key=True),
    Column("account_value", Numeric, nullable=False),
    Column("pnl", Numeric),  # since the series' origin; NULL only on points kept from schema 0001
    # the request-time point of the latest fetch, replaced by the next one; never a regular sample
    Column("is_now", Boolean, nullable=False, server_default=text("false")),
)
