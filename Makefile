# Every target sets up what it needs, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test bench emulate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# One worker per core of a two-core machine: the suite is bound by CPU (Prefect's imports), so -n 3 is slower.
PYTEST_ARGS ?= -n 2
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The whole stack locally, in the foreground until Ctrl-C; EMULATE_ARGS="--variant NAME" and so on.
emulate: $(STAMP)
	$(BIN)/python -m emulator up $(EMULATE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
