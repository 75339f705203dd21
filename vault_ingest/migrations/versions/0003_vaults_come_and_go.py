"""Vaults that come and go: delisting, the not-found re-check, which source sets a field, list snapshots.

Existing rows: a vault whose last_seen is older than the newest list snapshot is delisted from the snapshot after
its last_seen; vaults with details keep details_at empty until the next answer (so the list keeps setting their
fields until then, as before); one list_snapshots row per stored list snapshot, from vault_metrics' list rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name in ("delisted_at", "details_at", "not_found_checked_at"):
        op.add_column("vaults", sa.Column(name, sa.DateTime(timezone=True)))
    op.execute("UPDATE vaults SET not_found_checked_at = not_found_at")
    op.create_table(
        "list_snapshots",
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("vaults", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("total_tvl", sa.Numeric(), nullable=False),
        sa.PrimaryKeyConstraint("observed_at"),
    )
    op.execute("""
        INSERT INTO list_snapshots (observed_at, vaults, skipped, total_tvl)
        SELECT m.observed_at, count(*), 0, coalesce(sum(m.tvl) FILTER (WHERE v.relationship <> 'child'), 0)
        FROM vault_metrics m JOIN vaults v ON v.address = m.vault_address
        WHERE m.tvl IS NOT NULL GROUP BY m.observed_at""")
    op.execute("""
        UPDATE vaults v SET delisted_at = (SELECT min(s.observed_at) FROM list_snapshots s
                                           WHERE s.observed_at > v.last_seen)
        WHERE v.last_seen < (SELECT max(observed_at) FROM list_snapshots)""")


def downgrade() -> None:
    op.drop_table("list_snapshots")
    for name in ("not_found_checked_at", "details_at", "delisted_at"):
        op.drop_column("vaults", name)
