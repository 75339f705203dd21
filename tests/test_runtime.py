"""runtime.weight_limiter: the budget's place (server or process) and its window come from Settings."""

from vault_ingest.config import Settings
from vault_ingest.hyperliquid.limiter import WeightLimiter
from vault_ingest.hyperliquid.prefect_budget import SLOTS_PER_WEIGHT, PrefectWeightLimiter
from vault_ingest.runtime import weight_limiter


def test_the_limiter_spends_the_configured_weight_over_the_configured_window():
    shared = weight_limiter(Settings.from_env({"PREFECT_API_URL": "http://127.0.0.1:4200/api",
                                               "HYPERLIQUID_WEIGHT_PER_MINUTE": "900",
                                               "HYPERLIQUID_WEIGHT_WINDOW_SECONDS": "20",
                                               "HYPERLIQUID_RATE_LIMIT_NAME": "egress-a"}))
    assert isinstance(shared, PrefectWeightLimiter) and shared.name == "egress-a"
    assert shared.decay_per_second == 900 * SLOTS_PER_WEIGHT / 20
    local = weight_limiter(Settings.from_env({"HYPERLIQUID_WEIGHT_PER_MINUTE": "900"}))
    assert isinstance(local, WeightLimiter) and (local.budget, local.window) == (900, 60.0)
