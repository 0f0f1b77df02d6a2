# The two commands the README names: `make study` (the main job) and `make test`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test test-all lint study study-quick

$(BIN)/moelab: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(BIN)/moelab

# vLLM's own environment (scripts/setup-serve.sh writes the marker only when vLLM imports; else it says why)
SERVE_READY := .venv-serve/.moelab-ready
$(SERVE_READY): scripts/setup-serve.sh
	bash scripts/setup-serve.sh

setup: $(BIN)/moelab $(SERVE_READY)

test: setup
	bash scripts/setup-browser.sh
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q --durations=25

test-all: setup
	bash scripts/setup-browser.sh
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks

study: setup
	$(BIN)/moelab study --out runs/study

study-quick: setup
	$(BIN)/moelab study --quick --out runs/study-quick
