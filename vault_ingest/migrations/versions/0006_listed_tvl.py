"""list_snapshots.listed_tvl: the TVL of every vault a snapshot lists, children included. An hourly list write
then gets its totals from the newest snapshot's plus the changes of the vaults it stages or delists, instead of
summing every current row (README, P1): the total counting each dollar once is that, less the listed children's
TVL, read through `vaults_children`.

Existing rows: listed_tvl stays NULL; the next list write sums every current row, as before, and records it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("list_snapshots", sa.Column("listed_tvl", sa.Numeric))
    op.create_index("vaults_children", "vaults", ["address"], postgresql_where=sa.text("relationship = 'child'"))


def downgrade() -> None:
    op.drop_index("vaults_children", table_name="vaults")
    op.drop_column("list_snapshots", "listed_tvl")
