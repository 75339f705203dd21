"""Deploy the two flows to a Prefect process work pool, their code pulled from git by `git_clone`.

`deploy(DeployOptions)` returns a `DeployResult`; only the CLI prints. `build_specs` says what will be deployed
and touches neither the server nor git, so `--dry-run` can print it anywhere. `apply` makes the server match:
it creates the pool if missing, then creates or updates each deployment in place under its fixed name, so a
rerun changes nothing but what changed. It also keeps the automation that marks runs whose worker died
Crashed, in any state that holds the deployment's concurrency slot (`UNRESPONSIVE_AUTOMATION`).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from datetime import timedelta
from typing import Any, Mapping
from urllib.parse import urlsplit

from vault_ingest.errors import (
    AuthRefusedError,
    ConfigError,
    DeployError,
    EntrypointNotFoundError,
    ServerUnreachableError,
    SourceError,
)

TIMEZONE = "UTC"
CONCURRENCY_LIMIT = 1  # a run that overruns its hour delays the next instead of doubling the request rate

# vaultDetails weighs 20 of Hyperliquid's 1,200 per minute, so one process fetches 60 vaults a minute:
# 2,400 vaults take 40 minutes and leave a third of the hour for retries before the next run at :15.
DETAILS_MAX_VAULTS = 2400

# When a worker's container dies (a redeploy with Railway's 0 s draining, an out-of-memory kill) nothing reports
# the end of its runs: they stay Pending or Running and, under the concurrency limit, keep the deployment's slot.
# Prefect Cloud crashes such runs ("unresponsive run detection"); a self-hosted server does not, so `deploy` keeps
# an automation that does: after any event that says a run's process is at work (it entered Pending, Running or
# Cancelling, ran a pull step, or sent a heartbeat), another event of that run must follow within
# UNRESPONSIVE_RUN_SECONDS, or the run is marked Crashed, which releases its slot
# (prefect/server/orchestration/core_policy.py, ReleaseFlowConcurrencySlots). Scheduled states (Late,
# AwaitingConcurrencySlot, AwaitingRetry) wait by design.
UNRESPONSIVE_AUTOMATION = "vault-ingest: crash unresponsive flow runs"
LIVE_RUN_EVENTS = frozenset({
    "prefect.flow-run.Pending", "prefect.flow-run.Submitting",  # the worker claims the run, runs the pull steps
    # Each pull step's event (prefect/deployments/steps/core.py); were it only expected, the first one would
    # close the window, and a run killed after cloning its code would never be crashed.
    "prefect.flow-run.pull-step.*",
    "prefect.flow-run.Running", "prefect.flow-run.Retrying",
    "prefect.flow-run.Cancelling",
    "prefect.flow-run.heartbeat",  # every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds while the flow runs
})
UNRESPONSIVE_SECONDS_VAR = "UNRESPONSIVE_RUN_SECONDS"
# Three missed heartbeats at the frequency the deployments set (HEARTBEAT_ENV); also the longest a run may take
# to clone its code and start. A slot whose holder died is free again within this plus the triggers service's
# 5 s evaluation loop.
DEFAULT_UNRESPONSIVE_SECONDS = 180
MIN_HEARTBEAT_SECONDS = 30  # Prefect refuses a lower PREFECT_FLOWS_HEARTBEAT_FREQUENCY
MIN_UNRESPONSIVE_SECONDS = 45
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


@dataclass(frozen=True)
class FlowDeployment:
    """One flow as this project deploys it: where the code is, when it runs, with which parameters."""

    entrypoint: str
    flow_name: str
    name: str
    cron: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)


FLOWS = (
    FlowDeployment(
        entrypoint="vault_ingest/flows.py:sync_vaults",
        flow_name="sync-vaults",
        name="hourly",
        cron="0 * * * *",  # the stats list refreshes hourly
        description="Every vault in Hyperliquid's stats list into `vaults`, with its list metrics.",
    ),
    FlowDeployment(
        entrypoint="vault_ingest/flows.py:sync_vault_details",
        flow_name="sync-vault-details",
        name="hourly",
        cron="15 * * * *",  # after sync-vaults has refreshed the list and TVLs it ranks by
        description=f"vaultDetails for the {DETAILS_MAX_VAULTS} open vaults with the highest TVL, within budget.",
        parameters={"min_tvl": 0, "max_vaults": DETAILS_MAX_VAULTS},
    ),
)


@dataclass(frozen=True)
class DeploymentSpec:
    flow: FlowDeployment
    work_pool: str
    repository: str
    branch: str | None  # None: the repository's default branch

    @property
    def full_name(self) -> str:
        return f"{self.flow.flow_name}/{self.flow.name}"

    def storage(self):
        from prefect.runner.storage import GitRepository

        return GitRepository(url=self.repository, branch=self.branch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.full_name,
            "entrypoint": self.flow.entrypoint,
            "work_pool": {"name": self.work_pool, "type": "process"},
            "pull_steps": [self.storage().to_pull_step()],
            "schedules": [{"cron": self.flow.cron, "timezone": TIMEZONE}],
            "parameters": self.flow.parameters,
            "concurrency_limit": CONCURRENCY_LIMIT,
            "description": self.flow.description,
        }


_SCP_LIKE = re.compile(r"^[\w.-]+@([\w.-]+):(?!//)(\S+)$")  # git@github.com:owner/repo.git


def git_url(source: str) -> str:
    """`source` if git can clone it as a URL; file:// counts, a bare path does not (git_clone shallow-clones,
    and git ignores --depth for plain paths)."""
    parts = urlsplit(source)
    if parts.password or (parts.scheme in ("http", "https") and parts.username):
        raise SourceError(
            "--source carries credentials, which would be stored in the deployment and shown in the Prefect UI; "
            "pass the URL without them"
        )
    if (parts.scheme in ("https", "http", "ssh", "git") and parts.netloc) or (parts.scheme == "file" and parts.path):
        return source
    if _SCP_LIKE.match(source):
        return source
    hint = f"file://{Path(source).resolve()}" if Path(source).exists() else "https://github.com/you/repo.git"
    raise SourceError(f"--source {source!r} is not a git URL; pass one git can clone, e.g. {hint}")


def default_source(repo_dir: Path) -> str:
    """The `origin` remote of the checkout at `repo_dir`: where the worker will clone the flows from."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo_dir), "remote", "get-url", "origin"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise SourceError("git is not installed, so --source cannot default to the origin remote; pass it") from None
    origin = result.stdout.strip()
    if result.returncode != 0 or not origin:
        raise SourceError(
            f"no --source given and {repo_dir} has no `origin` remote; pass --source with the URL the worker "
            "should clone, e.g. https://github.com/you/repo.git"
        )
    # Deploying from an SSH origin works (this machine has the key), then every run crashes on the worker.
    scp, parts = _SCP_LIKE.match(origin), urlsplit(origin)
    if scp or parts.scheme == "ssh":
        https = f"https://{scp.group(1)}/{scp.group(2)}" if scp else f"https://{parts.hostname}{parts.path}"
        raise SourceError(
            f"origin is {origin}, an SSH URL, and the worker has no SSH key to clone it with; pass --source {https}"
        )
    return origin


def build_specs(work_pool: str, source: str, ref: str | None) -> list[DeploymentSpec]:
    repository = git_url(source)
    return [DeploymentSpec(flow, work_pool, repository, ref) for flow in FLOWS]


def _api_url() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ConfigError(
            "PREFECT_API_URL is not set, so this would deploy to a throwaway local server; "
            "set it to your server, e.g. PREFECT_API_URL=https://my-app.up.railway.app/api"
        )
    return url


def unresponsive_seconds(env: Mapping[str, str]) -> int:
    """How long a run may send no event before the automation marks it Crashed ($UNRESPONSIVE_RUN_SECONDS)."""
    raw = env.get(UNRESPONSIVE_SECONDS_VAR) or str(DEFAULT_UNRESPONSIVE_SECONDS)
    if not raw.isdigit() or int(raw) < MIN_UNRESPONSIVE_SECONDS:
        raise ConfigError(
            f"{UNRESPONSIVE_SECONDS_VAR}={raw!r} must be a whole number of seconds, at least "
            f"{MIN_UNRESPONSIVE_SECONDS}: "
            f"runs send a heartbeat every third of it, and Prefect's shortest heartbeat is {MIN_HEARTBEAT_SECONDS} s, "
            f"so less would mark healthy runs Crashed; the default is {DEFAULT_UNRESPONSIVE_SECONDS}"
        )
    return int(raw)


def heartbeat_seconds(unresponsive: int) -> int:
    """The heartbeat frequency the deployments give their runs: three fit in the unresponsive window."""
    return max(MIN_HEARTBEAT_SECONDS, unresponsive // 3)


def unresponsive_automation(seconds: int):
    """After each event of a flow run, expect another within `seconds`; if none comes, Crash the run."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=UNRESPONSIVE_AUTOMATION,
        description=f"Marks a flow run Crashed after {seconds} s in Pending, Running or Cancelling without a "
                    "heartbeat or state change: its worker died. Kept by `vault-ingest deploy`.",
        trigger=EventTrigger(
            # Each live event restarts the window; "prefect.flow-run.*" also matches the final state's event,
            # which ends it, as do the Scheduled states, which start none.
            after=set(LIVE_RUN_EVENTS),
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=seconds),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"No heartbeat for {seconds} s, nor any state change: the worker running it stopped "
                    f"(marked by {UNRESPONSIVE_AUTOMATION!r})",
        )],
    )


def ensure_unresponsive_automation(client, seconds: int) -> str:
    """Create the automation, or update the one a previous deploy made; "created" or "updated"."""
    automation = unresponsive_automation(seconds)
    found = client.read_automations_by_name(UNRESPONSIVE_AUTOMATION)
    if not found:
        client.create_automation(automation)
        return "created"
    client.update_automation(found[0].id, automation)
    for duplicate in found[1:]:  # two deploys raced; one automation is enough
        client.delete_automation(duplicate.id)
    return "updated"


def ensure_work_pool(client, name: str) -> bool:
    """Create process work pool `name` unless it exists; True when it was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        from prefect.workers.process import ProcessWorker  # slow import, only needed here

        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template()
                )
            )
        except ObjectAlreadyExists:
            return False  # created by someone else between our read and our create
        return True
    if pool.type != "process":
        raise DeployError(
            f"work pool {name!r} exists with type {pool.type!r}, but this project's worker is a process worker; "
            "pass another --work-pool or delete that pool"
        )
    return False


def _load(spec: DeploymentSpec):
    """Clone the source at the ref and load the flow: proves the worker will find it there."""
    from prefect import Flow
    from prefect.exceptions import MissingFlowError, ScriptError

    where = f"{spec.repository} at {spec.branch or 'its default branch'}"
    try:
        return Flow.from_source(source=spec.storage(), entrypoint=spec.flow.entrypoint)
    except RuntimeError as exc:  # GitRepository's clone failure
        raise SourceError(
            f"cannot clone {where}: {exc} Check the URL, that the ref is pushed, and that the repository is public"
        ) from None
    except FileNotFoundError:
        reason = f"there is no {spec.flow.entrypoint.partition(':')[0]}"
    except (MissingFlowError, ScriptError) as exc:
        reason = str(exc).strip()
    raise EntrypointNotFoundError(
        f"flow entrypoint {spec.flow.entrypoint} not found in {where}: {reason}. Push the commit that has it, "
        "or pass --ref with a branch that does"
    )


@dataclass(frozen=True)
class DeployOptions:
    """What `vault-ingest deploy` takes: the pool, the git source (None: this checkout's origin) and ref."""

    work_pool: str
    source: str | None = None
    ref: str | None = None  # None: the repository's default branch
    unresponsive_seconds: int = DEFAULT_UNRESPONSIVE_SECONDS


@dataclass(frozen=True)
class DeployResult:
    work_pools: dict[str, bool]  # name -> created now
    deployments: dict[str, str]  # flow/deployment -> id
    automation: str  # "created" or "updated"
    unresponsive_seconds: int

    def lines(self) -> list[str]:
        out = [f"work pool {name!r}: {'created' if created else 'exists'}" for name, created in self.work_pools.items()]
        out += [f"deployment {name}: {deployment_id}" for name, deployment_id in self.deployments.items()]
        out.append(f"automation {UNRESPONSIVE_AUTOMATION!r}: {self.automation} (runs silent for "
                   f"{self.unresponsive_seconds} s in Pending, Running or Cancelling become Crashed)")
        return out


def specs_for(options: DeployOptions, repo_dir: Path | None = None) -> list[DeploymentSpec]:
    source = options.source or default_source(repo_dir or Path.cwd())
    return build_specs(options.work_pool, source, options.ref)


def apply(specs: Sequence[DeploymentSpec], unresponsive: int = DEFAULT_UNRESPONSIVE_SECONDS) -> DeployResult:
    """Make the server match `specs`; the automation crashes runs silent for `unresponsive` seconds."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.schedules import Cron

    api_url = _api_url()
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise ServerUnreachableError(
                f"cannot reach the Prefect API at {api_url} ({problem}); start the server, or point PREFECT_API_URL "
                "at it, e.g. https://my-app.up.railway.app/api"
            )
        flows = [_load(spec) for spec in specs]  # source problems surface before anything changes on the server
        try:
            pools = {pool: ensure_work_pool(client, pool) for pool in dict.fromkeys(spec.work_pool for spec in specs)}
            deployed = {}
            for spec, flow in zip(specs, flows):
                deployment = flow.to_deployment(
                    name=spec.flow.name,
                    work_pool_name=spec.work_pool,
                    schedules=[Cron(spec.flow.cron, timezone=TIMEZONE)],
                    parameters=spec.flow.parameters,
                    description=spec.flow.description,
                    concurrency_limit=CONCURRENCY_LIMIT,
                    # Heartbeats often enough that three fit in the window the automation waits.
                    job_variables={"env": {HEARTBEAT_ENV: str(heartbeat_seconds(unresponsive))}},
                )
                deployed[spec.full_name] = str(deployment.apply())
            done = ensure_unresponsive_automation(client, unresponsive)
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code not in (401, 403):
                raise
            raise AuthRefusedError(
                f"the Prefect server at {api_url} refused the credentials (HTTP {exc.response.status_code}); set "
                "PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING (user:password)"
            ) from None
    return DeployResult(pools, deployed, done, unresponsive)


def deploy(options: DeployOptions, repo_dir: Path | None = None) -> DeployResult:
    """`vault-ingest deploy`: the flows from `options.source` at `options.ref` onto the server."""
    return apply(specs_for(options, repo_dir), options.unresponsive_seconds)
