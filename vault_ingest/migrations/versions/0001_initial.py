"""The vaults, vault_metrics and vault_history tables.

Revision ID: 0001
Revises:
Create Date: 2026-05-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

WINDOWS = ("day", "week", "month", "all_time")


def _address(name: str, **kwargs) -> sa.Column:
    return sa.Column(name, sa.String(42), **kwargs)


def _per_window(prefix: str, type_) -> list[sa.Column]:
    return [sa.Column(f"{prefix}_{window}", type_) for window in WINDOWS]


def upgrade() -> None:
    op.create_table(
        "vaults",
        _address("address", nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        _address("leader", nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_closed", sa.Boolean(), nullable=False),
        sa.Column("relationship", sa.String(8), nullable=False),
        _address("parent_address"),
        sa.Column("allow_deposits", sa.Boolean()),
        sa.Column("leader_commission", sa.Numeric()),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_found_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "vault_metrics",
        _address("vault_address", nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tvl", sa.Numeric()),
        sa.Column("apr", sa.Numeric()),
        sa.Column("max_distributable", sa.Numeric()),
        sa.Column("max_withdrawable", sa.Numeric()),
        sa.Column("leader_fraction", sa.Numeric()),
        sa.Column("followers_listed", sa.Integer()),
        *_per_window("pnl", sa.Numeric()),
        *_per_window("volume", sa.Numeric()),
        *_per_window("return", sa.Numeric()),
        *_per_window("max_drawdown", sa.Numeric()),
        sa.PrimaryKeyConstraint("vault_address", "observed_at"),
        sa.ForeignKeyConstraint(["vault_address"], ["vaults.address"], ondelete="CASCADE"),
    )
    op.create_table(
        "vault_history",
        _address("vault_address", nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_value", sa.Numeric(), nullable=False),
        sa.Column("pnl", sa.Numeric()),
        sa.PrimaryKeyConstraint("vault_address", "period", "ts"),
        sa.ForeignKeyConstraint(["vault_address"], ["vaults.address"], ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("vault_history")
    op.drop_table("vault_metrics")
    op.drop_table("vaults")
