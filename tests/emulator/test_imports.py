"""The emulator knows no application: importing every module of it loads nothing of vault_ingest."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import emulator

ROOT = Path(__file__).resolve().parents[2]


def test_no_emulator_module_imports_the_application():
    # __main__ runs the CLI; it imports emulator.cli and nothing else.
    modules = sorted(m.name for m in pkgutil.walk_packages(emulator.__path__, "emulator.") if m.name != "emulator.__main__")
    assert {"emulator.cli", "emulator.project", "emulator.runtime.steps", "emulator.runtime.supervisor"} <= set(modules)
    script = ("import importlib, sys\n"
              f"for name in {modules!r}:\n"
              "    importlib.import_module(name)\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'vault_ingest'))")
    found = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_the_model_imports_nothing_of_the_runtime():
    # The model computes plans; only the runtime may start processes or write files.
    model = sorted(m.name for m in pkgutil.walk_packages(emulator.__path__, "emulator.")
                   if m.name.startswith("emulator.model."))
    assert "emulator.model.planner" in model
    script = ("import importlib, sys\n"
              f"for name in {model!r}:\n"
              "    importlib.import_module(name)\n"
              "print(sorted(m for m in sys.modules if m.startswith('emulator.runtime')))")
    found = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
