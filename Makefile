# TenantGate developer commands. `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/tenantgate/v1/*.proto)

.PHONY: serve test bench proto install lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Start the PDP on 127.0.0.1:50051 with embedded development defaults.
serve: $(STAMP)
	$(VENV)/bin/tenantgate serve $(ARGS)

## Run the whole test suite (unit, integration, adversarial).
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

## Benchmarks (issue #7): prints a markdown table, writes bench/results/. A few minutes; not part of `make test`.
bench: $(STAMP)
	@command -v h2load >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq nghttp2-client >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nghttp2-client >/dev/null 2>&1; }; }; } || \
	  echo "note: h2load (package nghttp2-client) is not installed: the load gate runs with the Python generator only"
	$(PY) -m pip install -q -e '.[bench]' && $(PY) -m bench $(BENCH_ARGS)

## A bounded, loopback-only soak of a real server (default 3 minutes at 300 req/s; MINUTES=, RATE= to change).
soak: $(STAMP)
	$(PY) -m soak --minutes $(or $(MINUTES),3) --rate $(or $(RATE),300)

## Regenerate the committed gRPC/protobuf stubs under src/tenantgate/v1/.
proto: $(STAMP)
	$(PY) -m tenantgate._protogen src

lint: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
