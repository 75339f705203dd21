"""What the doctor says about a deployment's concurrency slot, from the numbers it read. The real server,
wedged by a fault and released: tests/reliability/test_broken_config.py."""

from __future__ import annotations

from vault_ingest.cli import main
from vault_ingest.doctor.slots import Holder, Slots


def slots(active: int, live=(), dead=(), waiting=0) -> Slots:
    return Slots("sync-vaults/hourly", "limit-id", 1, active, tuple(live), tuple(dead), waiting, 180.0)


def test_a_slot_held_by_a_live_run_is_fine():
    state = slots(1, live=[Holder("r1", "brave-fox", "RUNNING", 20)], waiting=1)
    assert not state.wedged and state.orphaned == 0
    assert "run 'brave-fox' (RUNNING) is alive" in state.describe()


def test_a_slot_held_by_a_silent_run_is_wedged():
    state = slots(1, dead=[Holder("r1", "brave-fox", "PENDING", 3600)], waiting=2)
    assert state.wedged and state.orphaned == 0
    assert "run 'brave-fox' holds one but is PENDING and silent for 3600 s (over 180 s)" in state.describe()
    assert "2 run(s) waiting in AwaitingConcurrencySlot" in state.describe()


def test_a_slot_counted_with_no_run_behind_it_is_orphaned():
    state = slots(1, waiting=1)
    assert state.wedged and state.orphaned == 1
    assert "1 slot(s) held by no run" in state.describe()


def test_release_slots_names_a_malformed_deployment(capsys):
    assert main(["release-slots", "sync-vaults", "--api-url", "http://127.0.0.1:9/api"]) == 2
    assert "write it flow/deployment, e.g. sync-vaults/hourly" in capsys.readouterr().err


def test_release_slots_wants_an_api_url(capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["release-slots", "sync-vaults/hourly"]) == 2
    assert "pass --api-url" in capsys.readouterr().err
