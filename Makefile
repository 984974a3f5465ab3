# Two commands for a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-quick lint bench clean

# Debian ships venv's pip bootstrap separately (python3-venv): installed here when missing
# and this runs as root, so both commands work on a bare machine.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -c 'import ensurepip' 2>/dev/null \
		|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		     && apt-get update -qq && apt-get install -y -qq python3-venv; } || true
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/run_demo.py

test: $(STAMP)
	$(BIN)/python -m pytest

# Before a commit: the suite without its slow tests and the ones that start peers or open
# sockets (about a tenth of the tests, most of the time). CI runs `make test`, all of them.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not integration"

lint: $(STAMP)
	$(BIN)/ruff check crdt metaopt simulations tests
	$(BIN)/ruff format --check crdt metaopt simulations tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m simulations.sync_bench
	$(BIN)/python -m simulations.partitions --nodes 20 --seed 1

clean:
	rm -rf $(VENV) build *.egg-info
