#!/usr/bin/env bash
# Railway `worker` service: a Prefect process worker for this project's flows.
#
# Flow runs pull the code with Prefect's `git_clone` step, and a worker without git makes every run Crash
# ("Process exited with status code: 1") with the real cause only in these logs, so check git first.
# Then wait for the server, because Railway starts `web` and `worker` together. Finally `exec` the worker, so it
# is the process Railway's SIGTERM reaches: `vault-ingest worker`, Prefect's process worker that, on SIGTERM,
# takes no more flow runs and stops once the ones it has are done. Prefect 3.9's own `prefect worker start`
# stops within a second and its runs with it (vault_ingest/worker.py), so set RAILWAY_DEPLOYMENT_DRAINING_SECONDS
# to the longest run: Railway SIGKILLs whatever is left when it ends (default 0: at once).
#
#   PREFECT_API_URL            required: https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api (http:// only for the private
#                              domain, *.railway.internal, or localhost)
#   PREFECT_API_AUTH_STRING    user:password, when the server sets PREFECT_SERVER_API_AUTH_STRING
#   PREFECT_WORK_POOL          default hyperliquid-vault-ingestion
#   PREFECT_SERVER_WAIT_SECONDS  how long to wait for the server, default 120
#   WORKER_INSTALL_GIT=1       install git with apt-get at start when it is missing (root images only, as
#                              Railpack's and Nixpacks' are; slow, and again at every deployment, so off)
#   RAILWAY_DEPLOYMENT_DRAINING_SECONDS  Railway's SIGTERM-to-SIGKILL window: the longest run's seconds
# Extra arguments go to `vault-ingest worker`: --name, --work-queue, --limit, --prefetch-seconds, as Prefect's.
set -euo pipefail

pool="${PREFECT_WORK_POOL:-hyperliquid-vault-ingestion}"
wait_seconds="${PREFECT_SERVER_WAIT_SECONDS:-120}"

# The first argument is the problem; each further one is a line of the fix.
fail() {
  printf 'start_worker.sh: error: %s\n' "$1" >&2
  shift
  [[ $# -eq 0 ]] || printf '  %s\n' "$@" >&2
  exit 1
}

ensure_git() {
  command -v git >/dev/null 2>&1 && return
  if [[ "${WORKER_INSTALL_GIT:-}" == 1 ]]; then
    # apt-get itself says when it is not root ("are you root?"), in the image as on the emulator.
    if command -v apt-get >/dev/null 2>&1; then
      echo "start_worker.sh: git is missing; installing it with apt-get (WORKER_INSTALL_GIT=1)" >&2
      if apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends git ca-certificates >&2 && command -v git >/dev/null 2>&1; then
        return
      fi
      echo "start_worker.sh: installing git with apt-get failed (output above)" >&2
    else
      echo "start_worker.sh: WORKER_INSTALL_GIT=1 needs apt-get (run as root), and this image has no apt-get" >&2
    fi
  fi
  fail "git is not installed, and flow runs clone their code with git (every run would Crash)." \
    "Fix it for the builder this service uses:" \
    "Railpack (the default): keep railpack.json (deploy.aptPackages: [\"...\", \"git\"]) at the repo root," \
    "  or, only where no railpack.json sets that list, the service variable RAILPACK_DEPLOY_APT_PACKAGES=git" \
    "Dockerfile: build the worker from Dockerfile.worker (service variable RAILWAY_DOCKERFILE_PATH=Dockerfile.worker)" \
    "Nixpacks (deprecated): nixpacks.toml already adds git; make sure nixPkgs keeps \"...\"" \
    "Or set WORKER_INSTALL_GIT=1 to apt-get install git at every start (root images only)"
}

# Railway's edge answers plain HTTP on a public domain with a 301 to https://, which clients follow with a
# GET: the worker's reads would pass and its POSTs fail (405). http:// is fine on the private network.
refuse_public_http() {
  [[ "$1" == http://* ]] || return 0
  local host="${1#http://}"
  host="${host%%/*}"
  host="${host##*@}"
  if [[ "$host" == \[* ]]; then host="${host%%]*}]"; else host="${host%%:*}"; fi
  host="${host,,}"
  case "$host" in
    *.railway.internal | localhost | 127.* | "[::1]") return 0 ;;
  esac
  fail "PREFECT_API_URL uses http:// for the public domain $host. Railway's edge answers plain HTTP with a 301 to https://, so the worker's POSTs arrive as GETs and fail (405 Method Not Allowed)." \
    "Use https:// for the public domain: PREFECT_API_URL=https://\${{web.RAILWAY_PUBLIC_DOMAIN}}/api" \
    "or http:// over the private network: PREFECT_API_URL=http://\${{web.RAILWAY_PRIVATE_DOMAIN}}:<web's PORT>/api"
}

# Health is unauthenticated; the second request tells a wrong or missing PREFECT_API_AUTH_STRING apart
# now, instead of as a worker that logs 401s forever.
wait_for_server() {
  [[ -n "${PREFECT_API_URL:-}" ]] \
    || fail "PREFECT_API_URL is not set, so the worker would talk to a throwaway local server." \
      "Set it on the worker service: PREFECT_API_URL=https://\${{web.RAILWAY_PUBLIC_DOMAIN}}/api"
  [[ "$PREFECT_API_URL" == http://* || "$PREFECT_API_URL" == https://* ]] \
    || fail "PREFECT_API_URL=$PREFECT_API_URL has no http(s):// scheme; set it like https://my-app.up.railway.app/api"
  refuse_public_http "$PREFECT_API_URL"
  [[ "$wait_seconds" =~ ^[0-9]+$ ]] || fail "PREFECT_SERVER_WAIT_SECONDS=$wait_seconds is not a whole number of seconds"
  local python
  python="$(command -v python3 || command -v python || true)"
  [[ -n "$python" ]] || fail "no python3 or python on PATH; put the Python that has Prefect installed on PATH"
  "$python" - "$PREFECT_API_URL" "$wait_seconds" <<'PY'
import base64, os, sys, time, urllib.error, urllib.request

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


api, timeout = sys.argv[1].rstrip("/"), int(sys.argv[2])
deadline = time.monotonic() + timeout
last = "no answer yet"
# Over http:// the redirect itself is what to look at; over https:// one is followed, as Prefect's client does.
health = urllib.request.build_opener(*([NoRedirect] if api.startswith("http://") else []))
print(f"start_worker.sh: waiting up to {timeout}s for the Prefect server at {api}/health", file=sys.stderr)
while True:
    try:
        with health.open(f"{api}/health", timeout=5) as response:
            if response.status == 200:
                break
            last = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        last = f"HTTP {exc.code}"
        if exc.code in (301, 302, 307, 308) and (exc.headers.get("Location") or "").startswith("https://"):
            # An edge such as Railway's (or the emulator's, on 127.0.0.1:<port>) that only serves HTTPS.
            sys.exit(
                f"start_worker.sh: error: the server at {api} answers plain HTTP with a redirect to https:// "
                f"(HTTP {exc.code}), so the worker's POSTs would arrive as GETs and fail. Set PREFECT_API_URL="
                "https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api, or use the private domain over http://."
            )
    except OSError as exc:
        last = str(getattr(exc, "reason", exc))
    if time.monotonic() >= deadline:
        sys.exit(
            f"start_worker.sh: error: the Prefect server at {api} did not answer /health within {timeout}s "
            f"(last: {last}). Check that the web service is running and that PREFECT_API_URL points at it "
            "(https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api); raise PREFECT_SERVER_WAIT_SECONDS if it is just slow."
        )
    time.sleep(1)

request = urllib.request.Request(f"{api}/work_pools/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
auth = os.environ.get("PREFECT_API_AUTH_STRING")
if auth:
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
try:
    urllib.request.urlopen(request, timeout=10).close()
except urllib.error.HTTPError as exc:
    if exc.code == 401:
        sys.exit(
            "start_worker.sh: error: the Prefect server refused the worker's credentials (HTTP 401). Set "
            "PREFECT_API_AUTH_STRING on the worker to the server's PREFECT_SERVER_API_AUTH_STRING, e.g. "
            "PREFECT_API_AUTH_STRING=${{web.PREFECT_SERVER_API_AUTH_STRING}}"
        )
print("start_worker.sh: the Prefect server is up", file=sys.stderr)
PY
}

ensure_git
wait_for_server
exec vault-ingest worker --pool "$pool" "$@"
