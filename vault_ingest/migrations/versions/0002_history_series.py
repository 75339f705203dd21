"""vault_history: one series per vault (all, perp) with PnL from a fixed origin, the "now" point flagged.

Rows of 0001 are kept as far as they mean something: `allTime` and `perpAllTime` PnL is since inception (that
window never rolls), so those rows move over whole; the finer windows' PnL was from their own rolling start and
overwritten by each fetch, so their rows keep their account value (window-independent) with a NULL PnL, which a
later fetch fills. The perp twins of the finer windows repeated the plain ones and are dropped.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.rename_table("vault_history", "vault_history_0001")
    op.execute("ALTER TABLE vault_history_0001 RENAME CONSTRAINT vault_history_pkey TO vault_history_0001_pkey")
    op.execute("ALTER TABLE vault_history_0001 RENAME CONSTRAINT vault_history_vault_address_fkey "
               "TO vault_history_0001_vault_address_fkey")
    op.create_table(
        "vault_history",
        sa.Column("vault_address", sa.String(42), nullable=False),
        sa.Column("series", sa.String(8), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_value", sa.Numeric(), nullable=False),
        sa.Column("pnl", sa.Numeric()),
        sa.Column("is_now", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.PrimaryKeyConstraint("vault_address", "series", "ts"),
        sa.ForeignKeyConstraint(["vault_address"], ["vaults.address"], ondelete="CASCADE"),
    )
    # where a timestamp is in several windows, the all-time row (the one with a meaningful PnL) wins
    op.execute("""
        INSERT INTO vault_history (vault_address, series, ts, account_value, pnl)
        SELECT DISTINCT ON (vault_address, series, ts) vault_address, series, ts, account_value, pnl
        FROM (SELECT vault_address, CASE WHEN period LIKE 'perp%' THEN 'perp' ELSE 'all' END AS series, ts,
                     account_value, CASE WHEN period IN ('allTime', 'perpAllTime') THEN pnl END AS pnl,
                     period IN ('allTime', 'perpAllTime') AS all_time
              FROM vault_history_0001
              WHERE period IN ('day', 'week', 'month', 'allTime', 'perpAllTime')) old
        ORDER BY vault_address, series, ts, all_time DESC""")
    op.drop_table("vault_history_0001")


def downgrade() -> None:
    raise NotImplementedError("0002 drops the per-window baselines of 0001; restore a backup to go back")
