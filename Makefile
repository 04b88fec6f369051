# One entry point for developers and CI. Everything is set up on demand in .venv.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
HOST    ?= 127.0.0.1
PORT    ?= 8080
DATA    ?= ./data

.PHONY: run test test-long lint fmt bench clean chromium screenshots constraints

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Newest releases the ranges in pyproject.toml admit, pinned for every clone.
constraints:
	rm -rf .venv-fresh && $(PY) -m venv .venv-fresh
	.venv-fresh/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n 1,2p constraints.txt; .venv-fresh/bin/pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .venv-fresh

run: $(STAMP)
	$(BIN)/banditloop serve --host $(HOST) --port $(PORT) --data-dir $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

# Debian's Chromium for the dashboard's browser test (Playwright drives it; its own
# browser download does not work everywhere). Installed when missing and possible.
chromium:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "chromium is not installed: the browser test will be skipped"

# Two xdist workers (the machines are 2-core); a module whose tests share a server
# is marked xdist_group and runs on one worker.
XDIST   ?= -n 2 --dist loadgroup

test: lint chromium
	$(BIN)/pytest -q $(XDIST) --durations=15

test-long: lint chromium
	BANDITLOOP_LONG_TESTS=1 $(BIN)/pytest -q $(XDIST) --durations=15

screenshots: $(STAMP) chromium
	BANDITLOOP_SCREENSHOTS=1 $(BIN)/pytest -q tests/test_dashboard_browser.py

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests bench examples

# wrk comes from the distribution (installed here when missing and running as root).
# The default run gives both tables of issue 23 (saturation and paced load, 2 workers);
# BENCH_ARGS= (empty) for the full run at 1 and 2 workers.
BENCH_ARGS ?= --quick --workers 2 --skip growth
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && \
		{ apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; }; } || \
		{ echo "wrk is missing: sudo apt-get install -y wrk"; exit 2; }
	$(BIN)/python bench/throughput.py $(BENCH_ARGS)
	$(BIN)/python bench/rank_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
