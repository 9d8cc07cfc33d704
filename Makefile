# receiptflow: the two commands a newcomer needs are `make demo` and `make test`.
# Each installs what it needs first (OS packages when missing and permitted, the virtualenv, the
# Apache Kafka jars from Maven Central) and assumes nothing else.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup registry demo test test-failover chaos fuzz lint typecheck unit integration bench clean stack-down

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# avro-python3 shares the module name `avro` with Apache's maintained package, so it gets a folder
	# of its own; the interoperability tests run it in a child process with that folder on its path.
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps --upgrade --target $(VENV)/avro-python3 avro-python3
	touch $@

setup: $(VENV)/.installed
	bash deploy/setup-system.sh
	$(MAKE) --no-print-directory $(VENV)/.fast-path
	bash deploy/k8s/install-kustomize.sh $(BIN)
	$(BIN)/receiptflow stack fetch
	$(MAKE) --no-print-directory tests/integration/browser/node_modules/.installed

# The router's compiled fast path (rust/receiptflow_fast, PyO3 built by maturin), rebuilt only when its
# sources change; cargo keeps its build cache in rust/receiptflow_fast/target.
FAST_PATH := rust/receiptflow_fast
$(VENV)/.fast-path: $(VENV)/.installed $(wildcard $(FAST_PATH)/src/*.rs) $(FAST_PATH)/Cargo.toml $(FAST_PATH)/Cargo.lock $(FAST_PATH)/pyproject.toml $(FAST_PATH)/receiptflow_fast.pyi
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --locked -q -m $(FAST_PATH)/Cargo.toml
	touch $@

# axe-core (pinned in package.json and its lock) for the browser tests' accessibility check, from the npm registry.
tests/integration/browser/node_modules/.installed: tests/integration/browser/package.json
	npm ci --prefix tests/integration/browser --no-audit --no-fund --loglevel=error
	touch $@

# The embedded schema registry (Apicurio, Confluent's API), built from Maven Central once per machine;
# `stack up --with-registry` and the integration tests build it on first use as well.
registry: setup
	$(BIN)/receiptflow stack fetch --with-registry

demo: setup
	$(BIN)/receiptflow demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/python tests/typecheck.py

# Two test processes (pytest-xdist), whole files to each: the integration tests mostly wait on servers,
# so two of them share the two cores well. Each process starts its own servers on free ports.
test: setup lint typecheck
	$(BIN)/pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-failover: setup
	$(BIN)/pytest -m failover tests/integration/test_cluster.py $(PYTEST_ARGS)

# The fault run: kills and outages under simulated traffic; -s shows its summary line of counts.
chaos: setup
	$(BIN)/pytest -m chaos -s -q tests/integration/test_chaos.py $(PYTEST_ARGS)

# 100,000 inputs per fuzz target (the ordinary test run tries 1,500 of each).
fuzz: $(VENV)/.fast-path
	RECEIPTFLOW_FUZZ_EXAMPLES=100000 $(BIN)/pytest -q tests/unit/test_fuzz.py $(PYTEST_ARGS)

unit: $(VENV)/.fast-path
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# quixstreams, the peer benchmarks/peers.py runs beside the router, pins an older confluent-kafka and
# pydantic than the project does: it gets a folder of its own, first on the path of its process only.
$(VENV)/quixstreams/.installed: $(VENV)/.installed constraints-quixstreams.txt
	$(BIN)/python -m pip install -q -c constraints-quixstreams.txt --upgrade --target $(VENV)/quixstreams quixstreams
	touch $@

# The end-to-end benchmark on its own embedded stack, every stage its own process, then the router with the
# analytics aggregator (benchmarks/aggregate_throughput.py: the router alone, the aggregator alone, both at
# once, and release() alone on chain-days of 50,000 and 200,000 baskets), then the router beside its peers
# (quixstreams, a naive faust agent, Kafka Streams in Java) on one job with their outputs compared (about
# 8.5 + 5 + 4 minutes on 2 cores; BENCH_ARGS=--quick about 2 + 1.5 + 2); figures to
# .receiptflow/end_to_end.json and standard output, BENCH_ARGS=--markdown-out docs/performance.md rewrites
# the "End to end", "The router with the aggregator" and "The router beside its peers" sections there.
bench: setup $(VENV)/quixstreams/.installed
	mkdir -p .receiptflow
	# The Kafka Streams peer of the router (Maven; built again only when its sources change).
	$(BIN)/python benchmarks/peer_kstreams.py
	$(BIN)/python benchmarks/end_to_end.py --json-out .receiptflow/end_to_end.json $(BENCH_ARGS)

stack-down: $(VENV)/.installed
	$(BIN)/receiptflow stack down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
