"""CPU seconds per test of a pytest run, counting every process the tests start: servers, emulated stacks,
browsers. Wall time says little on a shared machine; this is what the tests cost the cores.

    .venv/bin/python -m benchmarks.suite_cpu tests/scenarios/test_git.py [more pytest arguments]

Runs `pytest -n 0 -q` on the arguments and samples /proc four times a second. A process counts if it carries
this run's tag in its environment or its parent counted when it was first seen, so the emulator's services
(started with environments of their own, some in sessions of their own) count too. A process that lives
less than a sample is missed, and each test is charged what ran between its start and the next test's,
module fixtures included; compare two runs made under the same load, not figures of different days.
"""

from __future__ import annotations

import bisect
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 0.25
PLUGIN = '''import os, time
def pytest_runtest_logstart(nodeid, location):
    with open(os.environ["SUITE_CPU_MARKS"], "a") as marks:
        marks.write(f"{time.monotonic()}\\t{nodeid}\\n")
'''


class Sampler:
    def __init__(self, tag: str) -> None:
        self.needle = f"SUITE_CPU_TAG={tag}".encode()
        self.counted: dict[tuple[str, str], bool] = {}  # (pid, start time) -> counts?
        self.cpu: dict[tuple[str, str], float] = {}
        self.names: dict[tuple[str, str], str] = {}
        self.pids: set[str] = set()

    def scan(self) -> float:
        new = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_bytes()
                fields = stat[stat.rindex(b")") + 2:].split()
                key = (pid, fields[19].decode())
                if key not in self.counted:
                    new.append((key, fields[1].decode()))
                    self.counted[key] = False
                    self.counted[key] = self.needle in Path(f"/proc/{pid}/environ").read_bytes()
                self.cpu[key] = (int(fields[11]) + int(fields[12])) / TICK
            except (OSError, ValueError, IndexError):
                continue
        changed = True
        while changed:  # a parent seen in this scan counts its children seen in it too
            changed = False
            for key, parent in new:
                if not self.counted[key] and parent in self.pids:
                    self.counted[key] = changed = True
                if self.counted[key] and key[0] not in self.pids:
                    self.pids.add(key[0])
                    changed = True
        for key, _ in new:
            if self.counted[key]:
                try:
                    self.names[key] = Path(f"/proc/{key[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    self.names[key] = "?"
        return self.total()

    def total(self) -> float:
        return sum(cpu for key, cpu in self.cpu.items() if self.counted.get(key))

    def top(self, count: int) -> list[tuple[float, str]]:
        found = [(cpu, self.names.get(key, "?")) for key, cpu in self.cpu.items() if self.counted.get(key)]
        return sorted(found, reverse=True)[:count]


def main(args: list[str]) -> int:
    tag = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="suite-cpu-") as tmp:
        (Path(tmp) / "suite_cpu_plugin.py").write_text(PLUGIN)
        marks = Path(tmp) / "marks"
        env = {**os.environ, "SUITE_CPU_TAG": tag, "SUITE_CPU_MARKS": str(marks),
               "PYTHONPATH": os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")]))}
        sampler = Sampler(tag)
        started = time.monotonic()
        run = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "suite_cpu_plugin", "-n", "0", "-q", *args],
                               env=env)
        times, totals = [], []
        while run.poll() is None:
            totals.append(sampler.scan())
            times.append(time.monotonic())
            time.sleep(SAMPLE_EVERY)
        totals.append(sampler.scan())
        times.append(time.monotonic())
        tests = [(float(at), nodeid) for at, nodeid in
                 (line.split("\t", 1) for line in marks.read_text().splitlines())] if marks.exists() else []

    def cpu_at(moment: float) -> float:
        return totals[max(bisect.bisect_right(times, moment) - 1, 0)]

    print(f"\n{sampler.total():.1f} s CPU in {times[-1] - started:.1f} s wall (pytest exit {run.returncode})")
    bounds = [*tests, (times[-1], "")]
    for (at, nodeid), (until, _) in zip(bounds, bounds[1:]):
        print(f"{cpu_at(until) - cpu_at(at):7.1f} s CPU {until - at:7.1f} s wall  {nodeid}")
    print("the costliest processes:")
    for cpu, name in sampler.top(10):
        print(f"{cpu:7.1f} s  {name[:150]}")
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
