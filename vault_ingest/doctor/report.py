"""What the doctor found: one `Check` per question, gathered in a `Report`, shown as a checklist or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import Enum


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"  # works, but is likely to bite; does not fail the report
    SKIP = "skip"  # could not be checked, because an earlier check failed or it does not apply here


MARKS = {Status.PASS: "✓", Status.FAIL: "✗", Status.WARN: "!", Status.SKIP: "-"}


@dataclass(frozen=True)
class Check:
    name: str  # stable, for tests and JSON consumers: "work-pool", "deployment:sync-vaults/hourly"
    status: Status
    detail: str  # what was found, secrets masked
    fix: str = ""  # what to do, for FAIL and WARN; one alternative per line


def passed(name: str, detail: str) -> Check:
    return Check(name, Status.PASS, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def warned(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.WARN, detail, fix)


def skipped(name: str, detail: str) -> Check:
    return Check(name, Status.SKIP, detail)


@dataclass(frozen=True)
class Report:
    api_url: str  # as checked, password masked
    pool: str
    inside_service: bool
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.status is not Status.FAIL for check in self.checks)

    def check(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; the report has {[check.name for check in self.checks]}")

    def text(self) -> str:
        where = "inside a Railway service" if self.inside_service else "from outside the services"
        lines = [f"vault-ingest doctor: {self.api_url or '(no API URL)'}, work pool {self.pool!r}, {where}"]
        for check in self.checks:
            lines.append(f"{MARKS[check.status]} {check.name}: {check.detail}")
            if check.fix and check.status in (Status.FAIL, Status.WARN):
                first, *rest = check.fix.splitlines()
                lines.append(f"    fix: {first}")
                lines.extend(f"         {line}" for line in rest)
        lines.append(self._summary())
        return "\n".join(lines)

    def _summary(self) -> str:
        counts = {status: sum(check.status is status for check in self.checks) for status in Status}
        failing = [check.name for check in self.checks if check.status is Status.FAIL]
        tally = f"{counts[Status.PASS]} passed, {counts[Status.WARN]} warnings, {counts[Status.SKIP]} skipped"
        if failing:
            return f"FAILED: {len(failing)} failed ({', '.join(failing)}), {tally}"
        return f"OK: {tally}"

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "api_url": self.api_url,
            "pool": self.pool,
            "inside_service": self.inside_service,
            "checks": [{**asdict(check), "status": check.status.value} for check in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
