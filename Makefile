# shardlite — see README.md. Everything runs from a local virtualenv (.venv).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ./data
SEEDS  ?= 1000
PYTEST_ARGS ?=
BENCH_ARGS ?=

DURATION ?= 600
SEED ?=

.PHONY: run test lint fmt proto check-proto sim chaos bench bench-scale clean help

help:
	@echo "make run    - start a local 3-node cluster on 127.0.0.1:7001-7003, data in $(DATA) (Ctrl-C stops it)"
	@echo "make test   - install test tools, lint, run the whole suite"
	@echo "make lint   - ruff, ruff format --check, mypy"
	@echo "make proto  - regenerate the *_pb2*.py modules from proto/shardlite/v1/*.proto"
	@echo "make sim SEEDS=N - run the Raft simulator over N seeds per cluster size"
	@echo "make chaos DURATION=600 - every chaos scenario, checked for linearizability"
	@echo "make bench [QUICK=1] - shardlite, etcd and a bare gRPC echo server side by side (~13 min; ~2 quick)"
	@echo "make bench-scale [QUICK=1] - many shards, catch-up, restart, overload (issue 12 targets 5-7; ~12 min; ~3 quick)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project's metadata changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python -m scripts.cluster --nodes 3 --data $(DATA) --base-port 7001

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

proto: $(VENV)/.installed-test
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m scripts.gen_proto

sim: $(VENV)/.installed-test
	$(BIN)/python -m tests.raft.sim --seeds $(SEEDS) --nodes 3,5

# Every shipped chaos scenario against local process clusters, DURATION seconds in all.
chaos: $(VENV)/.installed-test
	$(BIN)/python -m scripts.chaos --all --total-duration $(DURATION) $(if $(SEED),--seed $(SEED))

# docs/benchmarks.md; installs Debian's etcd-server with apt-get if etcd is missing.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m scripts.bench --install-etcd $(if $(QUICK),--quick) $(BENCH_ARGS)

# Issue 12 targets 5-7 (docs/benchmarks.md); QUICK=1: 1,000 namespaces, 100 MB, 100,000 keys.
# SCALE_ARGS: more flags, e.g. SCALE_ARGS="--bytes 2G"; python -m scripts.bench_scale --help.
bench-scale: $(VENV)/.installed-bench
	$(BIN)/python -m scripts.bench_scale all $(if $(QUICK),--quick) $(SCALE_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

# Docker targets (docker-build, docker-up, docker-down, docker-test) live in docker/docker.mk.
-include docker/docker.mk
