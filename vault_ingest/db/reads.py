"""The reads the jobs and their reports make: which vaults to ask vaultDetails about, the largest vaults, the
latest list snapshot. A dashboard reads the views of migration 0004 instead (README "Querying the data")."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, text

from vault_ingest.db.staging import transaction

# Open, listed vaults with their current list values: the partial index on current rows finds them.
_OPEN_BY_TVL = """
    FROM vaults v
    JOIN vault_list_values latest ON latest.vault_address = v.address AND latest.valid_to IS NULL
    WHERE NOT v.is_closed AND v.delisted_at IS NULL"""


def vaults_for_details(engine: Engine, min_tvl: Decimal | None, max_vaults: int | None) -> list[str]:
    """Addresses of open, listed vaults by latest tvl, highest first: tvl >= min_tvl, at most max_vaults.

    A vault that answered null is asked again once a list snapshot newer than that answer still lists it: one
    null can be a glitch, and a vault the list keeps showing is worth one request an hour. (A listed vault is
    in the newest snapshot.)
    """
    with transaction(engine) as conn:
        return list(conn.execute(text(f"""
            SELECT v.address {_OPEN_BY_TVL}
              AND (v.not_found_checked_at IS NULL
                   OR (SELECT max(observed_at) FROM list_snapshots) > v.not_found_checked_at)
              AND (CAST(:min_tvl AS numeric) IS NULL OR latest.tvl >= CAST(:min_tvl AS numeric))
            ORDER BY latest.tvl DESC, v.address
            LIMIT CAST(:max_vaults AS bigint)"""), {"min_tvl": min_tvl, "max_vaults": max_vaults}).scalars())


def top_vaults(engine: Engine, limit: int = 10) -> list[dict]:
    """The `limit` open, listed vaults with the highest latest tvl: name, address, tvl, apr, and `children`, the
    number of child vaults whose TVL is inside it. Children are not rows of their own: their dollars are the
    parent's (README "TVL counted once"). Vaults vaultDetails cannot find are left out."""
    with transaction(engine) as conn:
        rows = conn.execute(text(f"""
            SELECT v.name, v.address, latest.tvl, latest.apr,
                   (SELECT count(*) FROM vaults c WHERE c.parent_address = v.address
                      AND c.delisted_at IS NULL) AS children
            {_OPEN_BY_TVL} AND v.relationship <> 'child' AND v.not_found_at IS NULL
            ORDER BY latest.tvl DESC, v.address LIMIT :limit"""), {"limit": limit})
        return [dict(row._mapping) for row in rows]


def stored_list_digests(engine: Engine) -> dict[int, str]:
    """The listed vaults' stored list entries, digest -> address: what `parse_changed_vaults` need not parse."""
    with transaction(engine) as conn:  # 10,000 rows: the driver's tuples, not SQLAlchemy rows
        return dict(conn.connection.driver_connection.execute(
            "SELECT list_digest, address FROM vaults WHERE delisted_at IS NULL AND list_digest IS NOT NULL").fetchall())


def latest_list_snapshot(engine: Engine) -> dict | None:
    """The newest stored list snapshot: observed_at, vaults, skipped, total_tvl; None before the first."""
    with transaction(engine) as conn:
        row = conn.execute(text("SELECT observed_at, vaults, skipped, total_tvl FROM list_snapshots "
                                "ORDER BY observed_at DESC LIMIT 1")).first()
        return dict(row._mapping) if row else None
