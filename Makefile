# Every target sets up what it needs, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-reliability bench emulate clean

# uv.lock is the one source of installed versions (here, CI, the emulator's images, Railway). uv itself is in
# the lock (the emulator builds images with it). A uv on PATH of the locked version makes the venv in a fraction
# of a second; otherwise `python -m venv` and pip bootstrap the locked uv, as on a machine without uv.
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
HOST_UV_VERSION := $(word 2,$(shell uv --version 2>/dev/null))
UV := $(if $(filter $(UV_VERSION),$(HOST_UV_VERSION)),uv,$(BIN)/uv)
SYNCED := $(VENV)/.synced

# What `make emulate` needs: the locked packages (the test extra too, so a later `make test` only compiles).
$(SYNCED): pyproject.toml uv.lock
ifeq ($(UV),uv)
	test -x $(BIN)/python || uv venv --quiet --python $(PYTHON) $(VENV)
else
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
endif
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --extra test
	touch $(SYNCED)

# The tests and benchmarks also get every module's bytecode up front (pip compiled it, uv does not): without it
# a fresh clone's first import of rich's emoji table ran inside Prefect's SIGTERM handler and raced the main
# thread's import of the same module, so a worker crashed instead of stopping. It costs ~12 s at every sync
# (uv caches no bytecode), so `make emulate` skips it: its services run from their images, compiled as
# Railpack compiles them, and the rest compiles what it imports.
$(STAMP): $(SYNCED)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --compile-bytecode --extra test
	touch $(STAMP)

install: $(STAMP)

# Three workers on two cores: the end-to-end files spend most of their time waiting on Prefect's loops and
# Railway's windows (the cores were busy 77 % of a -n 2 run), so a third worker fills those waits. On an idle
# 2-core machine, from a fresh clone: -n 2 10 min 11 s; -n 3 8 min 17 s to 10 min 58 s, five runs (cores 84 % busy).
PYTEST_ARGS ?= -n 3
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The whole fault matrix of tests/reliability/, the broken configuration's cells included.
test-reliability: $(STAMP)
	$(BIN)/python -m pytest -n 0 -m "broken_config or not broken_config" tests/reliability/

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The whole stack locally, in the foreground until Ctrl-C; EMULATE_ARGS="--variant NAME" and so on.
emulate: $(SYNCED)
	$(BIN)/python -m emulator up $(EMULATE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
