# `make run` and `make test` do all the set-up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check bench clean broker postgres build up down logs cluster-up cluster-down test-cluster

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

bench: $(STAMP) broker
	$(BIN)/python scripts/bench_pipeline.py
	$(BIN)/python scripts/bench_serve.py

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
