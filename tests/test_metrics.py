"""Returns and drawdown against values computed by hand (the arithmetic is in the comments), never by the code."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

from tests.portfolio_sample import portfolio
from vault_ingest.hyperliquid.models import PortfolioWindow
from vault_ingest.metrics import performance, window_metrics

T = [datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(hours=i) for i in range(10)]
CLOSE = D("1e-20")


def pts(*rows):
    return [(T[i], D(av), D(pnl)) for i, (av, pnl) in enumerate(rows)]


def test_a_deposit_is_not_performance():
    # step: gain 10, ΔAV 200, flow 190, capital 100 + 190/2 = 195, return 10/195 = 0.05128205128205128205...
    perf = performance(pts(("100", "0"), ("300", "10")))
    assert abs(perf.return_ - D("0.05128205128205128205128205128")) < CLOSE
    assert perf.max_drawdown == 0 and perf.since == T[0]


def test_hlp_strategy_b_starts_at_its_first_point_with_capital():
    # The real allTime window's first five points (cassettes/samples/info_portfolio_vault_0x31ca83_hlp_child.json).
    # 0 -> 28881.476403 with PnL 18603.835769: no capital before, so no return; the base is the second point.
    # step 2: gain -9309.504103 - 18603.835769 = -27913.339872; ΔAV 39477.55495 - 28881.476403 = 10596.078547;
    #   flow 10596.078547 + 27913.339872 = 38509.418419; capital 28881.476403 + 19254.7092095 = 48136.1856125;
    #   return -27913.339872 / 48136.1856125 = -0.57988267073557790619
    # step 3: gain -29607.749011 + 9309.504103 = -20298.244908; ΔAV 131172.494541; flow 151470.739449;
    #   capital 39477.55495 + 75735.3697245 = 115212.9246745; return -0.17618027634787225436
    # step 4: gain 115916.50024 + 29607.749011 = 145524.249251; ΔAV 370124.858040; flow 224600.608789;
    #   capital 170650.049491 + 112300.3043945 = 282950.3538855; return 0.51431018640778415970
    # index: 1 -> 0.42011732926442209381 -> 0.34610094209608616991 -> 0.52410418214143395968
    # return -0.47589581785856604032; max drawdown at step 3: 1 - 0.34610094209608616991 = 0.65389905790391383009
    all_time = dict(portfolio())["allTime"]
    rows = list(zip(all_time["accountValueHistory"], all_time["pnlHistory"]))[:5]
    perf = performance([(T[i], D(av), D(pnl)) for i, ((_, av), (_, pnl)) in enumerate(rows)])
    assert perf.since == T[1]
    assert abs(perf.return_ - D("-0.47589581785856604032")) < D("1e-18")
    assert abs(perf.max_drawdown - D("0.65389905790391383009")) < D("1e-18")


def test_a_wipe_out_then_a_recapitalisation_starts_a_new_epoch():
    # 100 -> 110 (+10: return 10/100 = 0.1, index 1.1) -> 0 (-110: return -110/110 = -1, index 0, drawdown 1)
    # -> 50 with no PnL (new money: a new epoch, base, index 1) -> 60 (+10: return 10/50 = 0.2, index 1.2)
    perf = performance(pts(("100", "0"), ("110", "10"), ("0", "-100"), ("50", "-100"), ("60", "-90")))
    assert perf.return_ == D("0.2") and perf.max_drawdown == 1 and perf.since == T[3]


def test_emptied_by_withdrawals_keeps_the_index():
    # 100 -> 120 (+20: 0.2, index 1.2) -> 0 by withdrawal (gain 0, flow -120, capital 100+... = 120-60 = 60,
    # return 0) -> 0 (no capital: no return) -> 50 deposited (no capital before: no return)
    # -> 45 (-5: -5/50 = -0.1, index 1.08, drawdown (1.2 - 1.08) / 1.2 = 0.1)
    perf = performance(pts(("100", "0"), ("120", "20"), ("0", "20"), ("0", "20"), ("50", "20"), ("45", "15")))
    assert perf.return_ == D("0.08") and perf.max_drawdown == D("0.1") and perf.since == T[0]


def test_a_vault_that_never_had_capital_has_no_return():
    assert performance(pts(("0", "0"), ("0", "0"))).return_ is None


def test_window_metrics_read_one_window():
    # 100 -> 110 (+10: 0.1, index 1.1) -> 104.5 (-5.5: -5.5/110 = -0.05, index 1.045, drawdown 0.05)
    w = PortfolioWindow(account_value=tuple(zip(T, map(D, ["100", "110", "104.5"]))),
                        pnl=tuple(zip(T, map(D, ["0", "10", "4.5"]))), volume=D(7))
    m = window_metrics(w)
    assert (m.volume, m.pnl, m.return_, m.max_drawdown) == (D(7), D("4.5"), D("0.045"), D("0.05"))
