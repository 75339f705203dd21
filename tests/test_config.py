"""Settings.from_env: the Hyperliquid budget and breaker settings, their defaults and the errors that name a fix."""

import pytest

from vault_ingest.config import Settings
from vault_ingest.errors import ConfigError


def settings(**env):
    return Settings.from_env(env)


def test_defaults_leave_headroom_below_hyperliquids_1200_and_keep_the_budget_in_process():
    s = settings()
    assert (s.weight_per_minute, s.rate_limit, s.rate_limit_name, s.breaker_threshold) == (
        1080, "local", "hyperliquid-weight", 10)


def test_the_budgets_minute_is_hyperliquids_unless_a_test_scales_time():
    assert settings().weight_window == 60.0
    assert settings(HYPERLIQUID_WEIGHT_WINDOW_SECONDS="20").weight_window == 20.0


def test_a_prefect_server_shares_the_budget_unless_told_otherwise():
    assert settings(PREFECT_API_URL="http://127.0.0.1:4200/api").rate_limit == "prefect"
    assert settings(PREFECT_API_URL="http://x/api", HYPERLIQUID_RATE_LIMIT="local").rate_limit == "local"
    assert settings(HYPERLIQUID_RATE_LIMIT_NAME="egress-a").rate_limit_name == "egress-a"


@pytest.mark.parametrize(("env", "message"), [
    ({"HYPERLIQUID_RATE_LIMIT": "cluster"}, "HYPERLIQUID_RATE_LIMIT='cluster' is not one of auto, prefect, local"),
    ({"HYPERLIQUID_RATE_LIMIT": "prefect"}, "HYPERLIQUID_RATE_LIMIT=prefect needs PREFECT_API_URL"),
    ({"HYPERLIQUID_WEIGHT_PER_MINUTE": "1500"}, "HYPERLIQUID_WEIGHT_PER_MINUTE='1500' must be a whole number from 20 "
                                                "to 1200"),
    ({"HYPERLIQUID_WEIGHT_PER_MINUTE": "10"}, "one vaultDetails request weighs 20"),
    ({"HYPERLIQUID_WEIGHT_WINDOW_SECONDS": "120"}, "HYPERLIQUID_WEIGHT_WINDOW_SECONDS='120' must be seconds from 1 "
                                                    "to 60"),
    ({"HYPERLIQUID_WEIGHT_WINDOW_SECONDS": "fast"}, "leave it unset for Hyperliquid's minute"),
    ({"HYPERLIQUID_BREAKER_THRESHOLD": "0"}, "HYPERLIQUID_BREAKER_THRESHOLD='0' must be a whole number from 1"),
])
def test_bad_values_are_named_with_their_fix(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        settings(**env)
