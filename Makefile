# Every target sets up what it needs, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-reliability bench emulate clean

# uv.lock is the one source of installed versions (here, CI, the emulator's images, Railway). uv itself is in
# the lock (the emulator builds images with it); its locked version bootstraps the venv with pip.
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --locked --compile-bytecode --extra test
	touch $(STAMP)

install: $(STAMP)

# One worker per core of a two-core machine: the suite is bound by CPU (Prefect's imports), so -n 3 is slower.
PYTEST_ARGS ?= -n 2
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The whole fault matrix of tests/reliability/, the broken configuration's cells included.
test-reliability: $(STAMP)
	$(BIN)/python -m pytest -n 0 -m "broken_config or not broken_config" tests/reliability/

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The whole stack locally, in the foreground until Ctrl-C; EMULATE_ARGS="--variant NAME" and so on.
emulate: $(STAMP)
	$(BIN)/python -m emulator up $(EMULATE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
