# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
RELIABILITY_ROUNDS ?= 5
RELIABILITY_RESULTS ?= docs/reliability-results.jsonl
RELIABILITY_TESTS := tests/integration/test_crash.py tests/integration/test_publish_crash.py tests/integration/test_outages.py

.PHONY: install prometheus browser demo test test-fast lint dashboard bench reliability clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(BIN)/gepa-sidecar: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --all-extras --compile-bytecode
	@touch $@

install: $(BIN)/gepa-sidecar ## create .venv from uv.lock

# The rules and end-to-end tests run the real Prometheus and promtool, from Debian's packages.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
		apt-get install -y --no-install-recommends prometheus >/dev/null || \
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends prometheus >/dev/null; }

# The browser tests drive headless Chromium through Selenium: Debian's chromium and chromedriver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null || \
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }

demo: install ## the whole loop beside the example chatbot (asks before approving)
	$(BIN)/gepa-sidecar demo

lint: install
	$(BIN)/ruff check sidecar tests bench examples deploy
	$(BIN)/ruff format --check sidecar tests bench examples deploy
	$(BIN)/mypy

dashboard: install ## regenerate deploy/grafana/dashboard.json from deploy/grafana/dashboard.py
	$(BIN)/python deploy/grafana/dashboard.py

test: install prometheus browser lint ## the whole suite: unit, integration (real broker, SQLite, PostgreSQL, HTTP)
	$(BIN)/pytest -q

test-fast: install ## the unit tests only, no lint: seconds, for the edit-test loop
	$(BIN)/pytest -q tests/unit

reliability: install prometheus ## the reliability suite full-sized, its table in docs/RELIABILITY.md; then the crash and outage tests RELIABILITY_ROUNDS times
	@rm -f $(RELIABILITY_RESULTS)
	@SIDECAR_RELIABILITY_SCALE=full SIDECAR_RELIABILITY_RESULTS=$(RELIABILITY_RESULTS) \
		$(BIN)/pytest -q tests/reliability; status=$$?; \
		$(BIN)/python -m tests.reliability.table $(RELIABILITY_RESULTS) > docs/RELIABILITY.md \
		&& echo "wrote docs/RELIABILITY.md"; exit $$status
	@for round in $$(seq 1 $(RELIABILITY_ROUNDS)); do \
		echo "reliability round $$round of $(RELIABILITY_ROUNDS)"; \
		$(BIN)/pytest -q $(RELIABILITY_TESTS) || exit 1; \
	done

bench: install ## benchmarks, each printing one JSON line
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/judge.py
	$(BIN)/python bench/footprint.py
	$(BIN)/python bench/optimize_parity.py
	$(BIN)/python bench/reload.py
	$(BIN)/python bench/sdk.py

clean:
	rm -rf $(VENV) $(TOOLS) demo-data .pytest_cache .ruff_cache .mypy_cache
