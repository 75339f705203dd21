import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from emulator.runtime.postgres import free_port
from emulator.runtime.replay import Budget, Faults, ReplayServer

CASSETTES = Path(__file__).resolve().parents[3] / "cassettes"
HLP = "0xdfc24b077bc1425ad1dea75bcb6f8158e10df303"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def replay(request):
    params = getattr(request, "param", {})
    server = ReplayServer(CASSETTES, **params).start()
    yield server
    server.shutdown()
    server.server_close()


def details(url, address):
    return httpx.post(f"{url}/info", json={"type": "vaultDetails", "vaultAddress": address})


def test_serves_the_recorded_list_and_details(replay):
    listed = httpx.get(f"{replay.url}/Mainnet/vaults")
    assert listed.status_code == 200 and isinstance(listed.json(), list) and len(listed.json()) > 10
    answer = details(replay.url, HLP)
    assert answer.status_code == 200
    assert answer.json()["relationship"]["type"] == "parent"


def test_unknown_vault_is_null_like_the_real_api(replay):
    answer = details(replay.url, "0x" + "ab" * 20)
    assert answer.status_code == 200 and answer.json() is None


def test_bad_body_is_422(replay):
    answer = httpx.post(f"{replay.url}/info", content=b"{not json")
    assert answer.status_code == 422
    assert "Failed to deserialize" in answer.text


clock = FakeClock()


@pytest.mark.parametrize("replay", [{"budget": Budget(60, 10.0, clock=clock)}], indirect=True)
def test_enforces_the_weight_budget_in_a_sliding_window(replay):
    clock.now = 100.0
    codes = [details(replay.url, HLP).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]  # 3 x 20 fills 60
    clock.now = 109.9
    assert details(replay.url, HLP).status_code == 429
    clock.now = 110.0  # the first three leave the window together
    assert details(replay.url, HLP).status_code == 200
    assert replay.stats["throttled"] == 2


@pytest.mark.parametrize("replay", [{"budget": Budget(60, 10.0, clock=FakeClock())}], indirect=True)
def test_reports_what_it_counted_for_tests_to_judge_clients_by(replay):
    replay.budget.clock.now = 7.5
    assert [details(replay.url, HLP).status_code for _ in range(4)] == [200, 200, 200, 429]
    httpx.get(f"{replay.url}/Mainnet/vaults").raise_for_status()
    first = httpx.get(f"{replay.url}/_replay/stats").json()
    assert first == {"requests": 5, "throttled": 1, "admitted_weight": 60, "limit": 60, "window": 10.0,
                     "arrivals": [[7.5, 20]] * 3,
                     "asked": [[7.5, json.dumps({"type": "vaultDetails", "vaultAddress": HLP}, sort_keys=True,
                                                separators=(",", ":"))]] * 3}
    assert httpx.get(f"{replay.url}/_replay/stats").json() == first  # asking is not a request it counts


@pytest.mark.parametrize("replay", [{"faults": Faults(error_every=2, malformed_every=3)}], indirect=True)
def test_injects_faults_on_request(replay):
    answers = [details(replay.url, HLP) for _ in range(6)]
    assert [a.status_code for a in answers] == [200, 500, 200, 500, 200, 500]
    assert answers[2].headers["content-type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        json.loads(answers[2].text)


def test_a_folder_of_json_is_served_too(tmp_path):
    (tmp_path / "Mainnet").mkdir()
    (tmp_path / "Mainnet" / "vaults.json").write_text('[{"summary": {"name": "A"}}]')
    (tmp_path / "info").mkdir()
    (tmp_path / "info" / "hlp.json").write_text(json.dumps(
        {"request": {"vaultAddress": HLP, "type": "vaultDetails"}, "response": {"name": "HLP"}}))
    server = ReplayServer(tmp_path).start()
    try:
        assert httpx.get(f"{server.url}/Mainnet/vaults").json() == [{"summary": {"name": "A"}}]
        assert details(server.url, HLP).json() == {"name": "HLP"}  # key order in the request does not matter
    finally:
        server.shutdown()
        server.server_close()


def test_the_replay_service_takes_its_faults_from_its_variables(tmp_path):
    port = free_port()
    env = {**os.environ, "REPLAY_ERROR_EVERY": "2", "REPLAY_WEIGHT_PER_MINUTE": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "emulator.runtime.replay", str(CASSETTES), str(port)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert f"Hyperliquid replay on http://127.0.0.1:{port}" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert [details(url, HLP).status_code for _ in range(3)] == [200, 500, 429]  # 2 x 20 fills 40
    finally:
        proc.terminate()
        proc.wait(5)


def test_the_replay_service_refuses_a_bad_setting():
    result = subprocess.run([sys.executable, "-m", "emulator.runtime.replay", str(CASSETTES), "0"],
                            env={**os.environ, "REPLAY_ERROR_EVERY": "often"}, capture_output=True, text=True)
    assert result.returncode == 1 and "REPLAY_ERROR_EVERY='often' must be a number >= 0" in result.stderr


def test_the_budget_can_be_counted_over_a_shorter_window_at_the_same_rate_or_switched_off():
    tick = FakeClock()
    budget = Budget.per_minute(1200, 10.0, clock=tick)
    assert (budget.limit, budget.window) == (200, 10.0)
    assert [budget.admit("a", 20) for _ in range(11)] == [True] * 10 + [False]
    assert budget.admit("b", 20)  # per client address, as Hyperliquid counts per IP
    tick.now = 10.0
    assert budget.admit("a", 20)
    off = Budget.per_minute(0)
    assert all(off.admit("a", 60) for _ in range(100))


def test_the_replay_service_takes_its_window_from_its_variables():
    port = free_port()
    env = {**os.environ, "REPLAY_WEIGHT_PER_MINUTE": "240", "REPLAY_WINDOW_SECONDS": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "emulator.runtime.replay", str(CASSETTES), str(port)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "budget 120 weight per 30s" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert [details(url, HLP).status_code for _ in range(7)] == [200] * 6 + [429]
    finally:
        proc.terminate()
        proc.wait(5)
