# `make run` and `make test` do all the set-up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check bench bench-all clean broker postgres build up down logs cluster-up cluster-down test-cluster faults

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

broker:
	scripts/ensure-rabbitmq.sh

# The rejections tests use the PostgreSQL server on 127.0.0.1:5432 (a database each).
postgres:
	scripts/ensure-postgres.sh

run: $(STAMP) broker
	$(BIN)/routerd lint config/routes.yaml
	$(BIN)/routerd serve --config config/routes.yaml

# The shipped config as ops check theirs: lint, then its route tests.
lint: $(STAMP)
	$(BIN)/routerd lint config/routes.yaml
	$(BIN)/routerd test --config config/routes.yaml

check: $(STAMP)
	$(BIN)/ruff check routerd tests scripts
	$(BIN)/ruff format --check routerd tests scripts
	$(BIN)/mypy

test: $(STAMP) broker postgres check lint
	$(BIN)/pytest

# The headline figures (~11 minutes on an idle 2-core machine), written to
# docs/BENCHMARKS.md with plots in docs/img/: the pipeline alone, routerd against a raw
# forwarder, publishing cost, bodies at the size limit, latency under load and a reload
# under it, a 200,000 backlog, scale-out to 3 replicas, config scale, and a profile of
# the hot path.
# scripts/bench_report.py runs each benchmark script; BENCH_ARGS passes it options
# (BENCH_ARGS=--quick: tiny inputs, to see that it all works).
bench: $(STAMP) broker
	$(BIN)/python scripts/bench_report.py $(BENCH_ARGS)

# Every other figure in docs/performance.md, docs/SCALING.md and docs/rejections.md (long:
# a bulk spike, the queue ceiling, the recorder).
bench-all: bench postgres
	$(BIN)/python scripts/bench_spike.py
	$(BIN)/python scripts/bench_queue_ceiling.py
	$(BIN)/python scripts/bench_rejections.py
	$(BIN)/python scripts/bench_api.py --rounds 3

# The fault scenarios, and docs/reliability.md written from their figures. Raises the
# broker's memory alarm and restarts it (both undone): not against a shared production broker.
faults: $(STAMP) broker
	$(BIN)/python scripts/reliability.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The local stack (RabbitMQ, two routerd replicas, the public API): compose.yaml with a
# container engine, else local processes under honcho. scripts/stack.py does the work.
build: $(STAMP)
	$(BIN)/python scripts/stack.py build

up: $(STAMP)
	$(BIN)/python scripts/stack.py up

down:
	$(BIN)/python scripts/stack.py down

logs:
	$(BIN)/python scripts/stack.py logs

# A 3-node RabbitMQ cluster of its own on loopback (ports from 46001), for trying routerd's
# failover by hand; `test-cluster` runs the node-loss tests, which start their own.
cluster-up: $(STAMP)
	$(BIN)/python scripts/rabbit-cluster.py up

cluster-down: $(STAMP)
	$(BIN)/python scripts/rabbit-cluster.py down

test-cluster: $(STAMP)
	$(BIN)/pytest -s tests/cluster
