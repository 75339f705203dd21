"""The run report: amounts as people read them, failures listed, children inside their parent."""

from decimal import Decimal

import pytest

from vault_ingest.report import render, usd


@pytest.mark.parametrize("amount, shown", [
    ("343339094.6083750129", "$343.3M"),  # HLP's real tvl on 2025-12-30
    ("104790263.2179960012", "$104.8M"),
    ("5548124.7052570004", "$5.5M"),
    ("110.741222", "$110.74"),
    ("0.000016", "$0.00"),
    ("-1234.5", "-$1.2K"),
    ("2500000000", "$2.5B"),
])
def test_usd_reads_like_people_say_it(amount, shown):
    assert usd(Decimal(amount)) == shown


def test_report_lists_failures_and_the_top_vaults():
    top = [{"name": "Hyperliquidity Provider (HLP)", "address": "0xdfc2", "tvl": Decimal("343339094.6083750129"),
            "apr": Decimal("0.0017004381514654516"), "children": 4},
           {"name": "Growi | HF", "address": "0x1e37", "tvl": Decimal("5548124.705257"), "apr": None, "children": 0}]
    problems = [f"vault 0x{i:040x}: not found (vaultDetails answered null)" for i in range(12)]
    text = render("Vault details synced", {"new": 3, "not_found": 12}, problems, top,
                  total_tvl=Decimal("343339094.6"), failure="12 of 15 vaults were bad")
    assert "**Failed:** 12 of 15 vaults were bad" in text
    assert "**new** 3 · **not_found** 12" in text
    assert "## Problems (12)" in text and "0x" + "0" * 39 + "9: not found" in text
    assert "… and 2 more in the run's log" in text and "0x" + "0" * 38 + "11" not in text
    assert "| Hyperliquidity Provider (HLP) (incl. 4 child vaults) | $343.3M | 0.2% |" in text
    assert "| Growi \\| HF | $5.5M | — |" in text
    assert "Total TVL, each dollar once (child vaults are inside their parent): **$343.3M**" in text
