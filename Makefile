SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# pip repeats a warning per package for each configured local index that lacks it: noise.
QUIET_PIP := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Re-install only when a requirements file changes.
BASE_STAMP := $(VENV)/.base-$(shell cat requirements/base.txt | md5sum | cut -c1-12)
DEV_STAMP := $(VENV)/.dev-$(shell cat requirements/base.txt requirements/dev.txt | md5sum | cut -c1-12)
CHROMIUM ?= /usr/bin/chromium
RUN_PORT ?= 8000
# The simulator's port follows the web server's, so that two checkouts run side by side.
SIMULATOR_PORT ?= $(shell echo $$(( $(RUN_PORT) + 765 )))

.PHONY: install install-dev chromium run test lint typecheck format migrate check bench bench-poll bench-rotate bench-api bench-simulator bench-load bench-parquet bench-failover soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(BASE_STAMP): | $(PY)
	$(PIP) install --quiet --disable-pip-version-check -r requirements/base.txt $(QUIET_PIP)
	rm -f $(VENV)/.base-* && touch $@

$(DEV_STAMP): | $(PY)
	$(PIP) install --quiet --disable-pip-version-check -r requirements/dev.txt $(QUIET_PIP)
	rm -f $(VENV)/.dev-* $(VENV)/.base-* && touch $@ $(BASE_STAMP)

install: $(BASE_STAMP)

install-dev: $(DEV_STAMP)

# Browser tests drive Debian's Chromium; Playwright cannot download its own browsers here.
chromium:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Chromium from Debian's packages for the browser tests..."; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "Chromium could not be installed: browser tests will be skipped."; \
	else \
		echo "No $(CHROMIUM) and no root to install it: browser tests will be skipped."; \
	fi

# A development .env with generated keys, written once: `manage.py` works on its own afterwards.
.env: | $(PY)
	$(PY) -m rainlog.local_env --simulator-port $(SIMULATOR_PORT)

# Everything on embedded defaults: SQLite, the ORM broker, local archive, the EAGLE simulator.
run: install .env
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate --no-input
	DEBUG=$${DEBUG:-1} $(PY) manage.py run_all --port $(RUN_PORT) --simulator-port $(SIMULATOR_PORT)

# The database-dependent tests run again on SQLite, the embedded default of `make run`.
SQLITE_TESTS := tests/users/test_models.py tests/ingestion/test_poller.py \
	tests/ingestion/test_rotation.py tests/ingestion/test_retrieval.py

test: install-dev chromium typecheck
	$(PY) -m pytest
	RAINLOG_TEST_DATABASE=sqlite $(PY) -m pytest -m "not slow" $(SQLITE_TESTS)

lint: install-dev typecheck
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy over the app code (pyproject.toml). Its Django plugin imports the settings, which need no
# secrets in development mode.
typecheck: install-dev
	DEBUG=1 $(VENV)/bin/mypy

format: install-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrate: install
	$(PY) manage.py migrate

check: install
	$(PY) manage.py check

bench: bench-poll bench-rotate bench-api bench-simulator bench-load bench-parquet bench-failover

bench-poll: install-dev
	$(PY) -m bench.poll

bench-rotate: install-dev
	$(PY) -m bench.rotate

bench-api: install-dev
	$(PY) -m bench.api

bench-simulator: install-dev
	$(PY) -m bench.simulator

bench-load: install-dev
	$(PY) -m bench.load

bench-parquet: install-dev
	$(PY) -m bench.parquet

bench-failover: install-dev
	$(PY) -m bench.failover

soak: install-dev
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) var test-output
