"""vault_metrics becomes vault_list_values and vault_detail_values: values stored once while they hold, with views
for the questions a dashboard asks.

- `vault_latest`: every vault with its current list and detail values;
- `vaults_at(t)` and `vault_details_at(t)`: the values of every vault at a time t;
- `tvl_over_time`: per list snapshot, the TVL counting each dollar once (children are inside their parent);
- one vault's history: its rows of either table, by primary key.

Existing rows: consecutive list rows of a vault with the same values become one row (valid until the next change,
or until the vault was delisted); each detail row stays a row, valid until the vault's next one. List and detail
values that shared a vault_metrics row are split by which columns they filled.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, TSTZRANGE

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WINDOWS = ("day", "week", "month", "all_time")
LIST = ["tvl", "apr", *(f"pnl_{w}" for w in WINDOWS)]
DETAIL = ["max_distributable", "max_withdrawable", "leader_fraction", "followers_listed",
          *(f"{p}_{w}" for p in ("pnl", "volume", "return", "max_drawdown") for w in WINDOWS)]
DETAIL_ONLY = [c for c in DETAIL if not c.startswith("pnl_")]


def _address(name: str) -> sa.Column:
    return sa.Column(name, sa.String(42), nullable=False)


def _interval_table(name: str, *columns: sa.Column) -> None:
    op.create_table(
        name, _address("vault_address"),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True)),
        sa.Column("during", TSTZRANGE(), sa.Computed("tstzrange(valid_from, valid_to)", persisted=True)),
        *columns,
        sa.PrimaryKeyConstraint("vault_address", "valid_from"),
        sa.ForeignKeyConstraint(["vault_address"], ["vaults.address"], ondelete="CASCADE"),
    )


def _interval_indexes(name: str, covered: list[str]) -> None:
    # after the rows of vault_metrics have their valid_to: before, every island of a vault would be "current".
    # Both cover the columns the views read, so the current values and the values at T come from the index alone.
    op.create_index(f"{name}_current", name, ["vault_address"], unique=True, postgresql_where=sa.text("valid_to IS NULL"),
                    postgresql_include=["valid_from", *covered])
    op.create_index(f"{name}_during", name, ["during"], postgresql_using="gist",
                    postgresql_include=["vault_address", "valid_from", *covered])


def _per_window(prefix: str, type_) -> list[sa.Column]:
    return [sa.Column(f"{prefix}_{w}", type_) for w in WINDOWS]


def upgrade() -> None:
    op.add_column("vaults", sa.Column("always_close_on_withdraw", sa.Boolean()))
    op.add_column("vaults", sa.Column("list_digest", sa.BigInteger()))  # NULL: the next list write stages it
    _interval_table(
        "vault_list_values",
        sa.Column("tvl", sa.Numeric(), nullable=False), sa.Column("apr", sa.Numeric()),
        *_per_window("pnl", sa.Numeric()), sa.Column("pnls", JSONB()),
    )
    _interval_table(
        "vault_detail_values",
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snapshot_at", sa.DateTime(timezone=True)),
        sa.Column("apr", sa.Numeric()),
        sa.Column("max_distributable", sa.Numeric()), sa.Column("max_withdrawable", sa.Numeric()),
        sa.Column("leader_fraction", sa.Numeric()), sa.Column("leader_equity", sa.Numeric()),
        sa.Column("followers_listed", sa.Integer()),
        *_per_window("pnl", sa.Numeric()), *_per_window("volume", sa.Numeric()),
        *_per_window("return", sa.Numeric()), *_per_window("max_drawdown", sa.Numeric()),
    )
    listed, cols = ", ".join(LIST), ", ".join(f"lag({c}) OVER w" for c in LIST)
    op.execute(f"""
        INSERT INTO vault_list_values (vault_address, valid_from, {listed})
        SELECT vault_address, min(observed_at), {listed}
        FROM (SELECT *, sum(changed) OVER (PARTITION BY vault_address ORDER BY observed_at) AS island
              FROM (SELECT vault_address, observed_at, {listed},
                           CASE WHEN ({listed}) IS NOT DISTINCT FROM ({cols}) THEN 0 ELSE 1 END AS changed
                    FROM vault_metrics WHERE tvl IS NOT NULL
                    WINDOW w AS (PARTITION BY vault_address ORDER BY observed_at)) marked) islands
        GROUP BY vault_address, island, {listed}""")
    detail = ", ".join(DETAIL)
    op.execute(f"""
        INSERT INTO vault_detail_values (vault_address, valid_from, confirmed_at, snapshot_at, {detail})
        SELECT m.vault_address, m.observed_at, m.observed_at,
               (SELECT max(s.observed_at) FROM list_snapshots s WHERE s.observed_at <= m.observed_at), {detail}
        FROM vault_metrics m
        WHERE {' OR '.join(f'{c} IS NOT NULL' for c in DETAIL_ONLY)}""")
    for table in ("vault_list_values", "vault_detail_values"):
        op.execute(f"""
            UPDATE {table} t SET valid_to = n.next_from
            FROM (SELECT vault_address, valid_from,
                         lead(valid_from) OVER (PARTITION BY vault_address ORDER BY valid_from) AS next_from
                  FROM {table}) n
            WHERE t.vault_address = n.vault_address AND t.valid_from = n.valid_from AND n.next_from IS NOT NULL""")
    op.execute("""
        UPDATE vault_list_values l SET valid_to = v.delisted_at FROM vaults v
        WHERE l.vault_address = v.address AND l.valid_to IS NULL AND v.delisted_at IS NOT NULL""")
    _interval_indexes("vault_list_values", LIST)
    _interval_indexes("vault_detail_values", [])
    op.drop_table("vault_metrics")
    _views()


def _views() -> None:
    windows = ", ".join(f"d.{p}_{w}" for p in ("volume", "return", "max_drawdown") for w in WINDOWS)
    listed = ", ".join(f"l.{c}" for c in LIST)
    # the list's pnls arrays stay out of the views (read them per vault from vault_list_values): without them
    # the list values come from the covering indexes alone
    op.execute(f"""
        CREATE VIEW vault_latest AS
        SELECT v.address, v.name, v.leader, v.relationship, v.parent_address, v.is_closed, v.allow_deposits,
               v.always_close_on_withdraw, v.leader_commission, v.description, v.created_at, v.first_seen,
               v.last_seen AS list_confirmed_at, v.delisted_at, v.not_found_at,
               l.valid_from AS list_since, {listed},
               d.valid_from AS details_at, d.confirmed_at AS details_confirmed_at, d.apr AS details_apr,
               d.max_distributable, d.max_withdrawable, d.leader_fraction, d.leader_equity, d.followers_listed,
               {windows}
        FROM vaults v
        LEFT JOIN vault_list_values l ON l.vault_address = v.address AND l.valid_to IS NULL
        LEFT JOIN vault_detail_values d ON d.vault_address = v.address AND d.valid_to IS NULL""")
    types = ", ".join(f"{c} numeric" for c in LIST)
    op.execute(f"""
        CREATE FUNCTION vaults_at(t timestamptz)
        RETURNS TABLE (vault_address varchar(42), valid_from timestamptz, {types}) LANGUAGE sql STABLE AS $$
            SELECT vault_address, valid_from, {', '.join(LIST)} FROM vault_list_values WHERE during @> t
        $$""")
    op.execute("""
        CREATE FUNCTION vault_details_at(t timestamptz) RETURNS SETOF vault_detail_values LANGUAGE sql STABLE AS $$
            SELECT * FROM vault_detail_values WHERE during @> t
        $$""")
    op.execute("""
        CREATE VIEW tvl_over_time AS
        SELECT observed_at, total_tvl, vaults FROM list_snapshots""")


def downgrade() -> None:
    raise NotImplementedError("0004 merges unchanged rows of vault_metrics; restore a backup to go back")
