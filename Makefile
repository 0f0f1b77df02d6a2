# The two commands the README names: `make study` (the main job) and `make test`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test test-all lint study

$(BIN)/moelab: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(BIN)/moelab

setup: $(BIN)/moelab

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks

study: setup
	$(BIN)/moelab estimate mixtral-8x7b --hardware H100-SXM --batch 8
	$(BIN)/moelab compare mixtral-8x7b llama-3-70b --hardware H100-SXM --batches 1,8,32,128,512
