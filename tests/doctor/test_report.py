"""The report as a checklist and as JSON."""

from __future__ import annotations

import json

from vault_ingest.doctor.report import Report, failed, passed, skipped, warned

REPORT = Report(
    api_url="https://x.up.railway.app/api",
    pool="pool",
    inside_service=False,
    checks=(
        passed("api", "https://x.up.railway.app/api/health answers"),
        failed("work-pool", "work pool 'pool' is NOT_READY", "first way\nsecond way"),
        warned("auth", "no basic auth", "set it"),
        skipped("service", "not inside"),
    ),
)


def test_checklist_marks_each_check_and_indents_every_line_of_a_fix():
    assert REPORT.text().splitlines() == [
        "vault-ingest doctor: https://x.up.railway.app/api, work pool 'pool', from outside the services",
        "✓ api: https://x.up.railway.app/api/health answers",
        "✗ work-pool: work pool 'pool' is NOT_READY",
        "    fix: first way",
        "         second way",
        "! auth: no basic auth",
        "    fix: set it",
        "- service: not inside",
        "FAILED: 1 failed (work-pool), 1 passed, 1 warnings, 1 skipped",
    ]


def test_only_a_failure_makes_the_report_fail():
    assert not REPORT.ok
    assert Report("u", "p", False, tuple(c for c in REPORT.checks if c.name != "work-pool")).ok


def test_json_has_every_check_with_its_status_and_fix():
    data = json.loads(REPORT.to_json())
    assert data["ok"] is False and data["pool"] == "pool"
    assert data["checks"][1] == {"name": "work-pool", "status": "fail", "detail": "work pool 'pool' is NOT_READY",
                                 "fix": "first way\nsecond way"}
