"""The doctor's CLI against a real Prefect server: the session's shared `web` service (launcher, basic auth,
PostgreSQL). Each failure mode's diagnosis, through the emulator: tests/scenarios."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from tests.support.prefect_server import railway_web_service

from vault_ingest.doctor import Status, run_checks

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def web(request):
    return railway_web_service(request)


def test_auth_missing_and_wrong_are_named(web):
    pool = f"doctor-{uuid.uuid4().hex[:8]}"
    missing = run_checks(web.server.api_url, pool=pool, auth=None, inside_service=False).check("auth")
    assert missing.status is Status.FAIL and "requires basic auth" in missing.detail

    # The CLI as a user runs it: URL and credentials from the environment, JSON out, non-zero exit.
    env = {**os.environ, "PREFECT_API_URL": web.server.api_url, "PREFECT_API_AUTH_STRING": "admin:wrong-password"}
    result = subprocess.run([sys.executable, "-m", "vault_ingest.cli", "doctor", "--json", "--outside"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    auth = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "auth")
    assert auth["status"] == "fail" and auth["detail"].startswith("wrong credentials")
    assert "wrong-password" not in result.stdout + result.stderr
