"""Two fetches of the real portfolio sample an hour apart through the writer: the stored series keeps its meaning."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from itertools import combinations

from sqlalchemy import select

from tests.db.factories import summary
from tests.portfolio_sample import ADDRESS, details_body, fetch_later, portfolio
from vault_ingest.db.schema import vault_history
from vault_ingest.db.writer import write_vault_details, write_vault_list
from vault_ingest.hyperliquid.models import EPOCH, parse_vault_details
from vault_ingest.history import PLAIN

NOISE = Decimal("1e-6")  # windows disagree in the API's last float digits (~1e-10), see vault_ingest.history


def write(engine, raw):
    d = parse_vault_details(details_body(raw), ADDRESS)
    write_vault_details(engine, [d], [], EPOCH + timedelta(milliseconds=max(w["pnlHistory"][-1][0] for _, w in raw)))


def stored(engine, series="all"):
    h = vault_history.c
    with engine.connect() as conn:
        rows = conn.execute(select(vault_history).where(h.series == series).order_by(h.ts)).all()
    return {r.ts: r for r in rows if not r.is_now}, [r for r in rows if r.is_now]


def pairs_hold(points, raw) -> int:
    """PnL differences between stored points equal those inside each window of the fetch; returns pairs checked."""
    checked = 0
    for period, w in raw:
        if period not in PLAIN:
            continue
        pnl = {EPOCH + timedelta(milliseconds=t): Decimal(v) for t, v in w["pnlHistory"]}
        for a, b in combinations([t for t in pnl if t in points], 2):
            assert abs((points[b].pnl - points[a].pnl) - (pnl[b] - pnl[a])) < NOISE, (period, a, b)
            checked += 1
    return checked


def test_a_later_fetch_extends_the_series_and_rewrites_no_point(engine):
    first, later = portfolio(), fetch_later(portfolio())
    write_vault_list(engine, [summary(1, address=ADDRESS)], EPOCH)
    write(engine, first)
    points1, [now1] = stored(engine)
    write(engine, later)
    points2, [now2] = stored(engine)

    assert {ts: points2[ts] for ts in points1} == points1  # every old point as it was, exactly
    assert set(points2) - set(points1) == {now1.ts + timedelta(minutes=50)}  # one new regular point
    assert now2.ts == now1.ts + timedelta(hours=1) and now2.pnl == now1.pnl + 25000
    assert pairs_hold(points2, first) > 1000 and pairs_hold(points2, later) > 1000
    perp1, _ = stored(engine, "perp")
    assert len(perp1) == 71  # perpAllTime only: the short perp windows repeat their twins


def test_the_same_fetch_twice_changes_nothing(engine):
    write_vault_list(engine, [summary(1, address=ADDRESS)], EPOCH)
    write(engine, portfolio())
    before = stored(engine)
    write(engine, portfolio())
    assert stored(engine) == before


def test_an_older_fetch_written_late_keeps_the_newer_now(engine):
    write_vault_list(engine, [summary(1, address=ADDRESS)], EPOCH)
    write(engine, fetch_later(portfolio()))
    write(engine, portfolio())
    _, [now] = stored(engine)
    assert now.pnl == Decimal("650509.577425") + 25000
