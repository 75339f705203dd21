"""Checks against the running Prefect server, through its REST API, as from a user's laptop.

`run_live` asks in dependency order (health, UI URL, auth, pool, workers, deployments, last runs) and
skips what an earlier failure makes unanswerable, so each failure is reported once, at its cause.
The fix texts follow docs/railway.md, Troubleshooting.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from vault_ingest.doctor.client import APIError, PrefectAPI
from vault_ingest.doctor.report import Check, Status, failed, passed, skipped, warned
from vault_ingest.doctor.slots import inspect as inspect_slots
from vault_ingest.urls import mask_url

API_CHECKS = ("api", "ui-api-url", "auth", "work-pool", "workers", "deployments")
TERMINAL_STATES = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
GIT_CLONE_STEP = "prefect.deployments.steps.git_clone"

UNREACHABLE_FIX = (
    "Deploy the `web` service and check its deploy log ends with `Uvicorn running`.\n"
    "Use web's domain from Settings → Networking (Generate Domain if it has none).\n"
    "End the URL with /api: https://<web domain>/api"
)
SERVICE_DOWN_FIX = (
    "web is crashed, still starting or not listening on $PORT: open web's deploy log.\n"
    "Its start command must be `vault-ingest serve` (the Procfile's web line); remove custom PORT/--port settings.\n"
    "A plain `prefect server start` with Railway's postgresql:// URL exits at startup: use `vault-ingest serve`."
)
UI_FALLBACK_FIX = (
    "Start web with `vault-ingest serve` (the Procfile's web line; remove a custom `prefect server start` command),\n"
    "or set PREFECT_UI_API_URL=https://${{RAILWAY_PUBLIC_DOMAIN}}/api on web."
)
AUTH_MISSING_FIX = (
    "Pass --auth user:password or set PREFECT_API_AUTH_STRING to web's PREFECT_SERVER_API_AUTH_STRING.\n"
    "The worker needs the same: PREFECT_API_AUTH_STRING=${{web.PREFECT_SERVER_API_AUTH_STRING}}"
)
AUTH_WRONG_FIX = (
    "Set PREFECT_API_AUTH_STRING (or --auth) to exactly web's PREFECT_SERVER_API_AUTH_STRING, user:password.\n"
    "On the worker use the reference PREFECT_API_AUTH_STRING=${{web.PREFECT_SERVER_API_AUTH_STRING}}"
)
OPEN_API_FIX = (
    "Set PREFECT_SERVER_API_AUTH_STRING=admin:<a long random password> on web,\n"
    "and PREFECT_API_AUTH_STRING=${{web.PREFECT_SERVER_API_AUTH_STRING}} on the worker."
)
NO_WORKER_FIX = (
    "Add the `worker` service (docs/railway.md §4) with Custom Start Command `bash start_worker.sh`,\n"
    "or build it from Dockerfile.worker (RAILWAY_DOCKERFILE_PATH=Dockerfile.worker).\n"
    "If it exists and its build log shows `↳ Found web command in Procfile`, it runs a second server:\n"
    "  set its Custom Start Command to `bash start_worker.sh`.\n"
    "Its PREFECT_WORK_POOL must be {pool!r}, and its PREFECT_API_URL this server's, https://<web domain>/api."
)
OFFLINE_FIX = (
    "The worker stopped or cannot reach the API: open the worker service's deploy log.\n"
    "`start_worker.sh: error: ...` names the cause (git missing, PREFECT_API_URL, credentials).\n"
    "A worker counts as OFFLINE after 3 missed heartbeats (90 s with the defaults)."
)
GIT_CRASH_FIX = (
    "The worker most likely has no git; its log has `FileNotFoundError: [Errno 2] No such file or directory: 'git'`.\n"
    "Railpack: keep railpack.json (deploy.aptPackages: git) at the repo root, or set RAILPACK_DEPLOY_APT_PACKAGES=git "
    "on the worker.\n"
    "Or build the worker from Dockerfile.worker (RAILWAY_DOCKERFILE_PATH=Dockerfile.worker), "
    "or start it with `bash start_worker.sh`, which refuses to run without git.\n"
    "If the log says `Failed to clone repository ... exit code 128` instead, the repository is private or the branch "
    "is gone: rerun `vault-ingest deploy` with a public HTTPS --source and an existing --ref."
)


def _ago(timestamp: str | None) -> str:
    if not timestamp:
        return "never"
    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(timestamp)).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def _is_private_host(host: str | None) -> bool:
    """Loopback, a private network name or address: a browser elsewhere cannot use it."""
    if not host:
        return False
    if host == "localhost" or host.endswith((".railway.internal", ".internal", ".local")) or "." not in host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified or address.is_link_local


def _origin(parts) -> str:
    """scheme://host[:port] of a urlsplit result, without user:password."""
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def check_api_url(api_url: str) -> Check | None:
    """A failed check when `api_url` cannot be a Prefect API URL at all, else None."""
    if not api_url:
        return failed("api", "no API URL given",
                      "Pass --api-url https://<web domain>/api, or export PREFECT_API_URL with that value.")
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        bare = api_url.split("://")[-1].lstrip("/")
        return failed("api", f"{mask_url(api_url)} has no http(s):// scheme", f"Use https://{bare}")
    try:
        parts.port
    except ValueError as exc:
        return failed("api", f"{mask_url(api_url)}: {exc}", "Use https://<web domain>/api, without a port.")
    return None


def check_health(api: PrefectAPI) -> Check:
    url = f"{mask_url(api.api_url)}/health"
    try:
        response = api.request("GET", "/health", authenticate=False)
    except APIError as exc:
        return failed("api", str(exc), UNREACHABLE_FIX)
    if response.is_redirect:
        location = response.headers.get("location", "?")
        return failed("api", f"{url} redirects to {location}",
                      f"Use the URL it redirects to, e.g. --api-url {location.removesuffix('/health')}")
    if response.status_code in (502, 503, 504):
        return failed("api", f"{url} answered HTTP {response.status_code}: the domain is served, the service behind "
                             "it is not answering", SERVICE_DOWN_FIX)
    if response.status_code == 200 and response.text.strip() == "true":
        return passed("api", f"{url} answers")
    what = f"HTTP {response.status_code} ({response.headers.get('content-type', 'no content type')})"
    missing_api = not api.api_url.endswith("/api")
    fix = f"Add /api to the URL: --api-url {mask_url(api.api_url)}/api" if missing_api else UNREACHABLE_FIX
    return failed("api", f"{url} is not a Prefect API health endpoint: {what}", fix)


def check_ui_api_url(api: PrefectAPI) -> Check:
    """The URL the browser UI calls, from `/ui-settings`, against the API URL the doctor was given."""
    name = "ui-api-url"
    try:
        response = api.request("GET", "/ui-settings", authenticate=False, at_root=True)
    except APIError as exc:
        return failed(name, str(exc), UNREACHABLE_FIX)
    try:
        ui_url = str(response.json()["api_url"] or "") if response.is_success else None
    except (ValueError, KeyError, TypeError):
        ui_url = None
    if ui_url is None:
        return warned(name, f"{mask_url(api.root_url)}/ui-settings answered HTTP {response.status_code} without the "
                            "UI's API URL", "If PREFECT_UI_SERVE_BASE is set on web, unset it.")
    ui, given = urlsplit(ui_url), urlsplit(api.api_url)
    origin = _origin(given)
    if ui_url.startswith("/"):
        return passed(name, f"the UI calls {ui_url}, relative to the page it is served from")
    if ui.scheme not in ("http", "https") or not ui.netloc:
        bare = ui_url.split("://")[-1].lstrip("/")
        return failed(
            name, f"the UI calls {ui_url!r}, which has no http(s):// scheme: the browser treats it as a path on the "
                  "page, every API call returns 404, and the UI is blank (\"Something went wrong / Not Found\")",
            f"Set PREFECT_UI_API_URL=https://{bare} on web, or unset it "
            "(`vault-ingest serve` then derives https://$RAILWAY_PUBLIC_DOMAIN/api).",
        )
    if ui_url.rstrip("/") == origin + given.path:
        return passed(name, f"the UI calls {ui_url}, the API checked here")
    # Prefect's fallback when PREFECT_UI_API_URL is unset is http://<server host>:<server port>/api.
    if ui.scheme == "http" and ui.hostname in ("127.0.0.1", "localhost", "0.0.0.0", "::", "::1"):
        return failed(
            name, f"the UI calls {ui_url}, Prefect's fallback when PREFECT_UI_API_URL is unset: browsers look for the "
                  f"API on their own machine (\"Can't connect to Server API at {ui_url}\")",
            UI_FALLBACK_FIX,
        )
    if _is_private_host(given.hostname):
        return passed(name, f"the UI calls {ui_url}; checked through the private address {origin}, the doctor "
                            "cannot tell whether that is the same server (rerun with --api-url set to it)")
    return failed(
        name, f"the UI calls {ui_url}, but the API checked here is {mask_url(api.api_url)}",
        f"If {origin} is web's public domain, unset PREFECT_UI_API_URL on web (`vault-ingest serve` then uses "
        f"https://$RAILWAY_PUBLIC_DOMAIN/api) or set it to {origin}{given.path}.\n"
        "Otherwise rerun the doctor with --api-url https://<web domain>/api.",
    )


def _masked_auth(auth: str) -> str:
    return f"{auth.partition(':')[0]}:***"


def check_auth(api: PrefectAPI, auth: str | None) -> Check:
    """Whether the server wants basic auth, and whether the credentials given (if any) pass."""
    name = "auth"
    probe = ("POST", "/work_pools/filter")
    body = {"limit": 1}
    anonymous = api.request(*probe, body=body, authenticate=False)
    public = not _is_private_host(urlsplit(api.api_url).hostname)
    if anonymous.status_code != 401:
        if not anonymous.is_success:
            raise APIError(f"POST {mask_url(api.api_url)}/work_pools/filter answered HTTP {anonymous.status_code}")
        if public:
            return warned(name, "the API needs no credentials: anyone who finds the domain can run and change flows",
                          OPEN_API_FIX)
        return passed(name, "the API needs no credentials (basic auth off)")
    if not auth:
        return failed(name, "the API requires basic auth (HTTP 401 without credentials) and none were given",
                      AUTH_MISSING_FIX)
    if ":" not in auth:
        return failed(name, "the credentials given are not user:password", AUTH_WRONG_FIX)
    if api.request(*probe, body=body).status_code == 401:
        return failed(name, f"wrong credentials: the API refused {_masked_auth(auth)} (HTTP 401)", AUTH_WRONG_FIX)
    return passed(name, f"basic auth on; {_masked_auth(auth)} accepted")


def check_work_pool(pool: dict[str, Any], workers: list[dict[str, Any]]) -> Check:
    name = "work-pool"
    label = f"work pool {pool['name']!r}"
    if pool["type"] != "process":
        return failed(name, f"{label} has type {pool['type']!r}, but this project's worker is a process worker",
                      "Deploy to another pool with `vault-ingest deploy --work-pool NAME`, or delete this one so the "
                      "worker recreates it as a process pool.")
    status = pool.get("status")
    if status == "PAUSED":
        return failed(name, f"{label} is PAUSED: no worker gets runs from it",
                      f"Resume it: Work Pools → {pool['name']} → Resume, "
                      f"or `prefect work-pool resume {pool['name']}`.")
    if status == "READY":
        return passed(name, f"{label} is READY")
    why = ("no worker has ever polled it" if not workers
           else "its workers stopped sending heartbeats")
    return failed(name, f"{label} is {status}: {why}",
                  "A pool turns READY on a worker's first heartbeat; the workers check says why none arrives.")


def check_workers(pool_name: str, workers: list[dict[str, Any]]) -> Check:
    name = "workers"
    online = [w["name"] for w in workers if w.get("status") == "ONLINE"]
    offline = [w for w in workers if w.get("status") != "ONLINE"]
    if online:
        extra = f"; {len(offline)} OFFLINE (earlier deployments)" if offline else ""
        return passed(name, f"{len(online)} ONLINE: {', '.join(online)}{extra}")
    if not workers:
        return failed(name, f"no worker has ever polled pool {pool_name!r}", NO_WORKER_FIX.format(pool=pool_name))
    latest = max(offline, key=lambda w: w.get("last_heartbeat_time") or "")
    heartbeat = _ago(latest.get("last_heartbeat_time"))
    return failed(name, f"{len(offline)} worker(s), all OFFLINE; last heartbeat {heartbeat} ({latest['name']})",
                  OFFLINE_FIX)


def _step_names(deployment: dict[str, Any]) -> list[str]:
    return [next(iter(step)) for step in deployment.get("pull_steps") or [] if step]


def check_deployment(label: str, deployment: dict[str, Any], workers_online: bool) -> Check:
    name = f"deployment:{label}"
    if deployment.get("status") == "READY":
        return passed(name, f"{label} is READY")
    if not workers_online:
        return failed(name, f"{label} is NOT_READY: no worker polls its pool",
                      "A deployment turns READY when a worker polls its queue; the workers check says why none does.")
    return failed(
        name, f"{label} is NOT_READY although the pool has ONLINE workers: none polls its queue "
              f"{deployment.get('work_queue_name')!r}",
        "Start the worker without --work-queue (start_worker.sh does), so it polls every queue of the pool;\n"
        "a deployment turns NOT_READY 60 s after the last poll of its queue.",
    )


def check_last_run(api: PrefectAPI, label: str, deployment: dict[str, Any]) -> Check:
    """The latest finished run; a crash before RUNNING is a pull step that failed (git_clone: no git)."""
    name = f"last-run:{label}"
    runs = api.call("POST", "/flow_runs/filter", {
        "deployments": {"id": {"any_": [deployment["id"]]}},
        "flow_runs": {"state": {"type": {"any_": TERMINAL_STATES}}},
        "sort": "END_TIME_DESC",
        "limit": 1,
    })
    if not runs:
        return skipped(name, f"{label} has no finished run yet")
    run = runs[0]
    state = run.get("state") or {}
    summary = f"last run {run['name']!r} {state.get('type')} {_ago(run.get('end_time'))}"
    if state.get("type") in ("COMPLETED", "CANCELLED"):
        return passed(name, summary)
    message = (state.get("message") or "").strip()
    if state.get("type") == "FAILED":
        return warned(name, f"{summary}: {message or 'the flow raised'}",
                      "The flow itself raised: open the run in the UI for its logs.")
    history = api.call("GET", f"/flow_run_states/?flow_run_id={run['id']}")
    if any(s.get("type") == "RUNNING" for s in history):
        return warned(name, f"{summary} while running: {message}",
                      "A redeploy or restart killed the worker mid-run: set RAILWAY_DEPLOYMENT_DRAINING_SECONDS "
                      "on the worker to cover a run (e.g. 600).")
    steps = _step_names(deployment)
    if any(step.endswith(".git_clone") for step in steps):
        return failed(name, f"{summary} before the flow started, in its git_clone pull step: {message}", GIT_CRASH_FIX)
    return failed(name, f"{summary} before the flow started, in its pull steps {steps}: {message}",
                  "The worker's log has the traceback of the step that failed.")


RELEASE_FIX = (
    "See what would be released: vault-ingest release-slots {label}\n"
    "Then release it: vault-ingest release-slots {label} --apply (it only touches runs silent past the window, "
    "and slots no run holds).\n"
    "So it does not happen again: start web with `vault-ingest serve` (leases kept in the Prefect database) and "
    "deploy with `vault-ingest deploy` (its automation crashes runs whose worker died, in any state)."
)


def check_slots(api: PrefectAPI, label: str, deployment: dict[str, Any]) -> Check:
    """Whether the deployment's concurrency slot is held by a run with no live worker behind it."""
    name = f"slots:{label}"
    limit = deployment.get("global_concurrency_limit")
    if not limit:
        return skipped(name, f"{label} has no concurrency limit")
    if not limit.get("active_slots"):
        return passed(name, f"{label}: no slot taken")
    slots = inspect_slots(api, deployment, label)
    if not slots.wedged:
        return passed(name, slots.describe())
    return failed(name, slots.describe(), RELEASE_FIX.format(label=label))


# Generators, so that when a later request fails the checks already answered are still reported.
def _deployment_checks(api: PrefectAPI, pool: str, workers_online: bool) -> Iterator[Check]:
    deployments = api.call("POST", "/deployments/filter", {"work_pools": {"name": {"any_": [pool]}}, "limit": 200})
    if not deployments:
        yield warned("deployments", f"no deployments use pool {pool!r}, so nothing runs",
                     f"Deploy the flows: vault-ingest deploy --work-pool {pool} (docs/railway.md §5).")
        return
    flow_ids = sorted({d["flow_id"] for d in deployments})
    flows = api.call("POST", "/flows/filter", {"flows": {"id": {"any_": flow_ids}}, "limit": len(flow_ids)})
    flow_names = {flow["id"]: flow["name"] for flow in flows}
    for deployment in deployments:
        label = f"{flow_names.get(deployment['flow_id'], deployment['flow_id'])}/{deployment['name']}"
        yield check_deployment(label, deployment, workers_online)
        yield check_last_run(api, label, deployment)
        yield check_slots(api, label, deployment)


def _pool_checks(api: PrefectAPI, pool: str) -> Iterator[Check]:
    response = api.request("GET", f"/work_pools/{quote(pool, safe='')}")
    if response.status_code == 404:
        names = [p["name"] for p in api.call("POST", "/work_pools/filter", {"limit": 50})]
        yield failed("work-pool", f"work pool {pool!r} does not exist (pools on this server: {names or 'none'})",
                     f"Start the worker with PREFECT_WORK_POOL={pool} (it creates the pool), or pass --pool with the "
                     "pool the worker and `vault-ingest deploy --work-pool` use.")
        yield skipped("workers", "no such pool")
        yield skipped("deployments", "no such pool")
        return
    if not response.is_success:
        raise APIError(f"GET {mask_url(api.api_url)}/work_pools/{pool} answered HTTP {response.status_code}")
    workers = api.call("POST", f"/work_pools/{quote(pool, safe='')}/workers/filter", {"limit": 200})
    yield check_work_pool(response.json(), workers)
    yield check_workers(pool, workers)
    yield from _deployment_checks(api, pool, any(w.get("status") == "ONLINE" for w in workers))


def _skip_rest(checks: list[Check], reason: str) -> list[Check]:
    done = {check.name for check in checks}
    return checks + [skipped(name, reason) for name in API_CHECKS if name not in done]


def run_live(api_url: str, *, pool: str, auth: str | None,
             transport: httpx.BaseTransport | None = None) -> list[Check]:
    bad_url = check_api_url(api_url)
    if bad_url:
        return _skip_rest([bad_url], "no usable API URL")
    with PrefectAPI(api_url, auth, transport) as api:
        checks = [check_health(api)]
        if checks[0].status is Status.FAIL:
            return _skip_rest(checks, "the API does not answer")
        try:
            checks.append(check_ui_api_url(api))
            checks.append(check_auth(api, auth))
            if checks[-1].status is Status.FAIL:
                return _skip_rest(checks, "needs working credentials")
            checks.extend(_pool_checks(api, pool))
        except APIError as exc:
            checks.append(failed("api-request", str(exc), "See web's deploy log for the error behind this answer."))
            return _skip_rest(checks, "the API answered an earlier request with an error")
    return checks
