"""Scenario 2: the Prefect UI in headless Chromium, through the edge's public address (prefect.md §2.2).

The UI asks `/ui-settings` where the API is. A raw `prefect server start` answers Prefect's fallback,
http://127.0.0.1:4200/api, the browser's own machine; a PREFECT_UI_API_URL without a scheme is resolved as a
path on the page, so every API call is a 404. `vault-ingest serve` answers https://<public domain>/api; its
dashboard: test_shipped.py. Screenshots of each page go to test-artifacts/.
"""

from __future__ import annotations

import socket

import pytest

from tests.scenarios.browser import page, screenshot, shows, visible_lines
from tests.scenarios.conftest import running, up_output
from tests.scenarios.stacks import Spec
from vault_ingest.doctor import Status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# Only what the UI needs: web and its Postgres.
MISSING = Spec("ui-api-url-missing", services=("web",))
NO_SCHEME = Spec("ui-api-url-no-scheme", services=("web",))
FALLBACKS = ("http://127.0.0.1:4200/api", "http://0.0.0.0:4200/api")


@pytest.fixture(scope="module")
def broken(scenario_root):
    with running([MISSING, NO_SCHEME], scenario_root) as stacks:
        for stack in stacks.values():
            assert stack.up_result.returncode == 0, up_output(stack)
        yield stacks


def test_without_ui_api_url_the_browser_looks_for_the_api_on_its_own_machine(broken, browser, artifacts):
    stack = broken[MISSING.name]
    api_url = stack.ui_settings()["api_url"]
    assert api_url in FALLBACKS
    with socket.socket() as probe:  # on a user's machine nothing answers there either
        assert probe.connect_ex(("127.0.0.1", 4200)) != 0, "something listens on 127.0.0.1:4200 on this machine"
    with page(browser, f"{stack.ui_url}/v2/dashboard") as v2:
        shows(v2, "Unable to connect to Prefect server")
        screenshot(v2, artifacts, "ui-api-url-missing-v2")
    with page(browser, f"{stack.ui_url}/dashboard") as v1:
        shows(v1, f"Can't connect to Server API at {api_url}")
        screenshot(v1, artifacts, "ui-api-url-missing-v1")

    check = stack.doctor().check("ui-api-url")
    assert check.status is Status.FAIL
    assert f"the UI calls {api_url}, Prefect's fallback when PREFECT_UI_API_URL is unset" in check.detail
    assert "vault-ingest serve" in check.fix


def test_a_ui_api_url_without_scheme_is_a_path_on_the_page(broken, browser, artifacts):
    stack = broken[NO_SCHEME.name]
    domain = stack.ui_url.removeprefix("https://")
    assert stack.ui_settings()["api_url"] == f"{domain}/api"
    answers = []
    with page(browser, f"{stack.ui_url}/v2/dashboard", answers) as v2:
        shows(v2, "Something went wrong")
        shows(v2, "Not Found")
        screenshot(v2, artifacts, "ui-api-url-no-scheme-v2")
    # The browser resolved the API URL against the page: the server got paths under the UI, and said 404.
    assert (404, f"{stack.ui_url}/v2/{domain}/api/health") in answers
    toast = f"Can't connect to Server API at {domain}/api. Check that it's accessible from your machine."
    with page(browser, f"{stack.ui_url}/dashboard") as v1:
        shows(v1, toast)
        assert visible_lines(v1) <= {toast, "Close"}  # the toast on an empty page: no navigation, no dashboard
        screenshot(v1, artifacts, "ui-api-url-no-scheme-v1")

    check = stack.doctor().check("ui-api-url")
    assert check.status is Status.FAIL
    assert f"the UI calls '{domain}/api', which has no http(s):// scheme" in check.detail
    assert f"PREFECT_UI_API_URL=https://{domain}/api" in check.fix
