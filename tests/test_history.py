"""Stitching the portfolio windows into one series, on the real HLP Strategy B sample."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from tests.portfolio_sample import NOW, details_body, fetch_later, portfolio
from vault_ingest.history import vault_series
from vault_ingest.hyperliquid.models import parse_vault_details

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def at(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def series_of(raw):
    d = parse_vault_details(details_body(raw), "0x31ca8395cf837de08b24da3f660e77761dfb974b")
    return {s.name: s for s in vault_series(d.portfolio, d.address)}


def test_now_is_kept_apart_with_the_all_time_pnl():
    s = series_of(portfolio())["all"]
    assert s.now.ts == at(NOW)
    assert (s.now.account_value, s.now.pnl) == (Decimal("160664370.477425009"), Decimal("650509.577425"))
    assert at(NOW) not in {p.ts for p in s.points}


def test_a_day_point_gets_its_pnl_from_the_all_time_origin():
    points = {p.ts: p for p in series_of(portfolio())["all"].points}
    p = points[at(1755780720022)]  # in day, week and month, which read -103692.0 / -883172.5 / -754210.0 there
    # all-time PnL at now + (day PnL at the point - day PnL at now):
    # 650509.577425 + (-103692.009923 - -130193.448756) = 650509.577425 + 26501.438833 = 677011.016258
    assert p.pnl == Decimal("677011.016258")
    assert p.account_value == Decimal("160690871.9162580073")


def test_one_point_per_timestamp_ascending():
    raw = portfolio()
    s = series_of(raw)["all"]
    stamps = {t for period, w in raw if not period.startswith("perp") for t, _ in w["accountValueHistory"]}
    assert [p.ts for p in s.points] == sorted(at(t) for t in stamps - {NOW})
    assert s.points[0].ts == at(1683758700034) and s.points[0].pnl == 0  # the vault's first point: the origin


def test_perp_windows_equal_to_their_twins_are_left_out():
    raw = portfolio()
    perp = series_of(raw)["perp"]  # perpAllTime differs from allTime in the sample, so there is a perp series
    perp_all_time = dict(raw)["perpAllTime"]["accountValueHistory"]
    assert [p.ts for p in perp.points] == [at(t) for t, _ in perp_all_time[:-1]]  # 71 regular, none from perpDay
    assert len(perp.points) == 71


def test_no_perp_series_when_every_perp_window_repeats_its_twin():
    raw = [[p, w] for p, w in portfolio()]
    windows = dict(raw)
    raw = [[p, windows[p.replace("perpAllTime", "allTime")] if p == "perpAllTime" else w] for p, w in raw]
    assert set(series_of(raw)) == {"all"}


def test_a_later_fetch_gives_every_old_point_the_same_pnl():
    first = {p.ts: p for p in series_of(portfolio())["all"].points}
    later = series_of(fetch_later(portfolio()))["all"]
    again = {p.ts: p for p in later.points}
    shared = set(first) & set(again)
    assert len(shared) >= len(first) - 1  # the day window's oldest point rolled out
    for ts in shared:
        assert again[ts].account_value == first[ts].account_value
        assert abs(again[ts].pnl - first[ts].pnl) < Decimal("1e-6")  # the API's own float noise, ~1e-10
    new = at(NOW + 50 * 60_000)
    assert again[new].pnl == Decimal("650509.577425") + 20000  # extends the series on the same origin
    assert later.now.ts == at(NOW + 3_600_000)
