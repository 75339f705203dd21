"""P6: the four dashboard questions on 30 days of hourly snapshots of 10,000 vaults, 5 % of them changing each hour.

The history is generated straight into the tables by COPY (the equivalent of 720 list writes: for each vault the
hours at which its values changed, one row per change, as write_vault_list stores them), plus vaultDetails values
of the 300 largest vaults every hour. Each question runs once to warm the cache, then its best server-side
execution time of five runs is taken (EXPLAIN ANALYZE: the database's work, not the client's decoding).
Target: each under 50 ms. Also reported: the database size per month of history.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import psycopg

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
HOURS, VAULTS, CHANGED, DETAILED = 720, 10_000, 0.05, 300

QUESTIONS = {
    "latest per vault": "SELECT * FROM vault_latest",
    "one vault's history": """
        SELECT l.valid_from, l.valid_to, l.tvl, l.apr, d.max_distributable, d.return_all_time
        FROM vault_list_values l
        LEFT JOIN vault_detail_values d ON d.vault_address = l.vault_address
             AND tstzrange(d.valid_from, d.valid_to) @> l.valid_from
        WHERE l.vault_address = %(vault)s ORDER BY l.valid_from""",
    "all vaults at T": "SELECT * FROM vaults_at(%(t)s)",
    "total TVL over time": "SELECT observed_at, total_tvl FROM tvl_over_time ORDER BY observed_at",
}


def _address(i: int) -> str:
    return f"0x{i:040x}"


def generate(url: str, seed: int = 5) -> dict:
    rng = random.Random(seed)
    at = [T0 + timedelta(hours=h) for h in range(HOURS)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY vaults (address, name, leader, created_at, is_closed, relationship, first_seen) "
                      "FROM STDIN") as copy:
            for i in range(VAULTS):
                copy.write_row((_address(i), f"Vault {i}", _address(10**6 + i), T0 - timedelta(days=i % 400),
                                rng.random() < 0.65, "normal", T0))
        totals = [0.0] * HOURS
        with cur.copy("COPY vault_list_values (vault_address, valid_from, valid_to, tvl, apr, pnl_day, pnls) "
                      "FROM STDIN") as copy:
            for i in range(VAULTS):
                changes = [0] + [h for h in range(1, HOURS) if rng.random() < CHANGED] + [HOURS]
                for start, end in zip(changes, changes[1:]):
                    tvl = round(rng.lognormvariate(6, 3), 6)
                    for h in range(start, end):
                        totals[h] += tvl
                    pnls = json.dumps([["day", [f"{rng.uniform(-5e4, 5e4):.6f}" for _ in range(13)]]])
                    copy.write_row((_address(i), at[start], at[end] if end < HOURS else None, tvl,
                                    round(rng.uniform(-1, 3), 6), round(rng.uniform(-5e4, 5e4), 6), pnls))
        with cur.copy("COPY vault_detail_values (vault_address, valid_from, valid_to, confirmed_at, snapshot_at, "
                      "max_distributable, followers_listed, return_all_time, max_drawdown_all_time) FROM STDIN") as copy:
            for i in range(DETAILED):
                for h in range(HOURS):
                    copy.write_row((_address(i), at[h] + timedelta(minutes=20), at[h + 1] + timedelta(minutes=20)
                                    if h + 1 < HOURS else None, at[h] + timedelta(minutes=20), at[h],
                                    round(rng.lognormvariate(6, 3), 6), rng.randint(1, 101),
                                    round(rng.uniform(-1, 5), 8), round(rng.uniform(0, 1), 8)))
        with cur.copy("COPY list_snapshots (observed_at, vaults, skipped, total_tvl) FROM STDIN") as copy:
            for h in range(HOURS):
                copy.write_row((at[h], VAULTS, 0, round(totals[h], 6)))
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        rows = conn.execute("SELECT (SELECT count(*) FROM vault_list_values), (SELECT count(*) FROM "
                            "vault_detail_values), pg_database_size(current_database())").fetchone()
    return {"list_rows": rows[0], "detail_rows": rows[1], "db_mb_per_month": round(rows[2] / 1e6, 1)}


def _execution_ms(conn, sql: str, params: dict) -> float:
    plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0]
    return plan[0]["Execution Time"]


def run(admin_url: str) -> dict:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "bench_p6" WITH (FORCE)')
        conn.execute('CREATE DATABASE "bench_p6"')
    url = admin_url.rsplit("/", 1)[0] + "/bench_p6"
    from vault_ingest.db.migrate import upgrade
    upgrade(url)
    result = generate(url)
    params = {"vault": _address(7), "t": T0 + timedelta(days=17, minutes=30)}
    with psycopg.connect(url) as conn:
        for name, sql in QUESTIONS.items():
            _execution_ms(conn, sql, params)  # warm
            result[f"{name} ms"] = round(min(_execution_ms(conn, sql, params) for _ in range(5)), 2)
        result["vaults at T"] = conn.execute("SELECT count(*) FROM vaults_at(%(t)s)", params).fetchone()[0]
    return result
