"""vaults.last_seen becomes seen_until: the last list snapshot that listed a vault, kept once a newer snapshot
lacks it, and NULL while the vault is listed (the newest snapshot is then its last sighting). An hourly list
write then touches the vaults that changed or left, not all 10,000 to move a timestamp.

`vault_latest.list_confirmed_at` reads the same as before: `seen_until`, or the newest list snapshot.

Existing rows: listed vaults (`delisted_at` NULL) get NULL; delisted ones keep their last_seen as seen_until.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WINDOWS = ("day", "week", "month", "all_time")
LIST = ["tvl", "apr", *(f"pnl_{w}" for w in WINDOWS)]


def _vault_latest(list_confirmed_at: str) -> None:
    """vault_latest as 0004 made it, with `list_confirmed_at` from the given expression."""
    windows = ", ".join(f"d.{p}_{w}" for p in ("volume", "return", "max_drawdown") for w in WINDOWS)
    listed = ", ".join(f"l.{c}" for c in LIST)
    op.execute("DROP VIEW vault_latest")
    op.execute(f"""
        CREATE VIEW vault_latest AS
        SELECT v.address, v.name, v.leader, v.relationship, v.parent_address, v.is_closed, v.allow_deposits,
               v.always_close_on_withdraw, v.leader_commission, v.description, v.created_at, v.first_seen,
               {list_confirmed_at} AS list_confirmed_at, v.delisted_at, v.not_found_at,
               l.valid_from AS list_since, {listed},
               d.valid_from AS details_at, d.confirmed_at AS details_confirmed_at, d.apr AS details_apr,
               d.max_distributable, d.max_withdrawable, d.leader_fraction, d.leader_equity, d.followers_listed,
               {windows}
        FROM vaults v
        LEFT JOIN vault_list_values l ON l.vault_address = v.address AND l.valid_to IS NULL
        LEFT JOIN vault_detail_values d ON d.vault_address = v.address AND d.valid_to IS NULL""")


def upgrade() -> None:
    op.alter_column("vaults", "last_seen", new_column_name="seen_until", nullable=True)
    op.execute("UPDATE vaults SET seen_until = NULL WHERE delisted_at IS NULL")
    _vault_latest("coalesce(v.seen_until, (SELECT max(observed_at) FROM list_snapshots))")


def downgrade() -> None:
    op.execute("""
        UPDATE vaults SET seen_until = coalesce((SELECT max(observed_at) FROM list_snapshots), first_seen)
        WHERE seen_until IS NULL""")
    op.alter_column("vaults", "seen_until", new_column_name="last_seen", nullable=False)
    _vault_latest("v.last_seen")
