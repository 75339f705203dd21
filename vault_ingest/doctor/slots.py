"""Wedged deployments: a concurrency slot held by a run whose worker is gone, found and released.

A deployment with `concurrency_limit` counts its slots in a global concurrency limit (`active_slots`, Prefect
3.9.1 `prefect/server/orchestration/core_policy.py`, SecureFlowConcurrencySlots). A run holds one from Pending
until it leaves Pending, Running or Cancelling. A holder is dead when no event of it (state change, pull step,
heartbeat) arrived for longer than the window of deploy's automation: runs send a heartbeat every third of it,
so a live run cannot be that silent. A slot counted with no run in those states behind it is orphaned: its
lease was lost (Prefect's default in-memory leases, then a server restart).

`inspect` reads one deployment; `release` marks its dead holders Crashed (Prefect then releases their slots
itself) and sets the count to the live holders, only when `apply` is True. Only the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from vault_ingest.deploy import UNRESPONSIVE_AUTOMATION
from vault_ingest.doctor.client import PrefectAPI
from vault_ingest.errors import APIError

HOLDING_STATES = ["PENDING", "RUNNING", "CANCELLING"]
NO_AUTOMATION_SILENCE = 3 * 180  # three of Prefect's default heartbeats, when deploy's automation is missing


@dataclass(frozen=True)
class Holder:
    run_id: str
    name: str
    state: str
    silent_seconds: float


@dataclass(frozen=True)
class Slots:
    label: str  # flow/deployment
    limit_id: str | None  # None: the deployment has no concurrency limit
    limit: int
    active_slots: int
    live: tuple[Holder, ...]
    dead: tuple[Holder, ...]
    waiting: int  # runs in AwaitingConcurrencySlot
    silence: float  # seconds without an event that make a holder dead

    @property
    def orphaned(self) -> int:
        """Slots counted that no run in Pending, Running or Cancelling holds."""
        return max(0, self.active_slots - len(self.live) - len(self.dead))

    @property
    def wedged(self) -> bool:
        return bool(self.dead) or self.orphaned > 0

    def describe(self) -> str:
        if self.limit_id is None:
            return f"{self.label} has no concurrency limit"
        parts = [f"{self.label}: {self.active_slots} of {self.limit} slot(s) taken"]
        parts += [f"run {h.name!r} ({h.state}) is alive, last heard of {h.silent_seconds:.0f} s ago" for h in self.live]
        parts += [f"run {h.name!r} holds one but is {h.state} and silent for {h.silent_seconds:.0f} s "
                  f"(over {self.silence:.0f} s): its worker is gone" for h in self.dead]
        if self.orphaned:
            parts.append(f"{self.orphaned} slot(s) held by no run: a lease lost when the server restarted")
        if self.waiting:
            parts.append(f"{self.waiting} run(s) waiting in AwaitingConcurrencySlot")
        return "; ".join(parts)


def unresponsive_window(api: PrefectAPI) -> float:
    """The automation's window (`within`), which is what the deployments' heartbeats are sized to."""
    for automation in api.call("POST", "/automations/filter", {}):
        if automation.get("name") == UNRESPONSIVE_AUTOMATION and automation.get("enabled", True):
            return float(automation["trigger"]["within"])
    return float(NO_AUTOMATION_SILENCE)


def _parse(timestamp: str | None) -> datetime | None:
    return datetime.fromisoformat(timestamp) if timestamp else None


def _last_heard(api: PrefectAPI, run: dict[str, Any]) -> datetime:
    found = api.call("POST", "/events/filter", {
        "filter": {"resource": {"id": [f"prefect.flow-run.{run['id']}"]}, "order": "DESC"}, "limit": 1,
    })
    times = [_parse((run.get("state") or {}).get("timestamp")), _parse(run.get("updated"))]
    times += [_parse(event["occurred"]) for event in found.get("events", [])]
    return max(t for t in times if t is not None)


def inspect(api: PrefectAPI, deployment: dict[str, Any], label: str, silence: float | None = None) -> Slots:
    limit = deployment.get("global_concurrency_limit")
    if not limit:
        return Slots(label, None, 0, 0, (), (), 0, 0.0)
    if silence is None:
        silence = unresponsive_window(api)
    holding = api.call("POST", "/flow_runs/filter", {
        "deployments": {"id": {"any_": [deployment["id"]]}},
        "flow_runs": {"state": {"type": {"any_": HOLDING_STATES}}},
        "limit": 200,
    })
    waiting = api.call("POST", "/flow_runs/filter", {
        "deployments": {"id": {"any_": [deployment["id"]]}},
        "flow_runs": {"state": {"name": {"any_": ["AwaitingConcurrencySlot"]}}},
        "limit": 200,
    })
    now = datetime.now(timezone.utc)
    live, dead = [], []
    for run in holding:
        holder = Holder(run["id"], run["name"], run["state"]["type"], (now - _last_heard(api, run)).total_seconds())
        (dead if holder.silent_seconds > silence else live).append(holder)
    return Slots(label, limit["id"], limit["limit"], limit["active_slots"], tuple(live), tuple(dead),
                 len(waiting), silence)


def read_deployment(api: PrefectAPI, label: str) -> dict[str, Any]:
    flow, sep, name = label.partition("/")
    if not sep or not flow or not name:
        raise APIError(f"{label!r} is not a deployment name; write it flow/deployment, e.g. sync-vaults/hourly")
    response = api.request("GET", f"/deployments/name/{quote(flow, safe='')}/{quote(name, safe='')}")
    if response.status_code == 404:
        raise APIError(f"no deployment {label!r} on {api.api_url}; `vault-ingest doctor` lists the deployments")
    return api.call("GET", f"/deployments/name/{quote(flow, safe='')}/{quote(name, safe='')}")


@dataclass(frozen=True)
class Release:
    before: Slots
    actions: tuple[str, ...]  # what was done, or with apply=False what would be
    applied: bool


def release(api: PrefectAPI, deployment: dict[str, Any], label: str, *, apply: bool) -> Release:
    """Free the slots of `label` that no live run holds. Touches nothing unless `apply`."""
    before = inspect(api, deployment, label)
    actions = []
    for holder in before.dead:
        actions.append(f"mark run {holder.name!r} ({holder.run_id}, {holder.state}, silent "
                       f"{holder.silent_seconds:.0f} s) Crashed, which releases its slot")
        if apply:
            api.call("POST", f"/flow_runs/{holder.run_id}/set_state", {
                "state": {"type": "CRASHED", "name": "Crashed",
                          "message": f"Marked Crashed by `vault-ingest release-slots`: silent for "
                                     f"{holder.silent_seconds:.0f} s, its worker is gone"},
                "force": True,
            })
    after = inspect(api, api.call("GET", f"/deployments/{deployment['id']}"), label, before.silence) if apply else None
    orphaned = after.orphaned if after else before.orphaned
    if orphaned:
        target = (after or before).active_slots - orphaned
        actions.append(f"set the count of taken slots from {(after or before).active_slots} to {target}: "
                       f"{orphaned} held by no run")
        if apply:
            api.call("PATCH", f"/v2/concurrency_limits/{before.limit_id}", {"active_slots": target})
    return Release(before, tuple(actions), apply)
