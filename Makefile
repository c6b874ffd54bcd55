# fleet: `make run` starts the whole fleet, `make test` proves it.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test test-fast lint broker prometheus chromium console-screenshots worker beat api render bench clean soak

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,test]'
	touch $@

install: $(STAMP)  ## create .venv and install the pinned dependencies

# Where `make run` keeps state, logs and supervisord's socket (FLEET_VAR_DIR if set).
RUN_VAR_DIR = $(or $(FLEET_VAR_DIR),$(CURDIR)/var)
# Who runs the programs: the invoking user (supervisord started as root drops to FLEET_USER if set).
RUN_USER = $(or $(FLEET_USER),$(shell id -un))

run: install  ## the whole fleet (API, every pool, beat; in development the SMTP and payment stand-ins) under supervisord in the foreground; Ctrl-C stops it warmly
	@bin/ensure-rabbitmq || { echo "make run: no broker, so no fleet (see above)." >&2; exit 1; }
	@mkdir -p "$(RUN_VAR_DIR)/log"
	@FLEET_VAR_DIR="$(RUN_VAR_DIR)" $(BIN)/fleet render supervisor --banner
	@FLEET_VAR_DIR="$(RUN_VAR_DIR)" $(BIN)/fleet supervisor-auth >/dev/null
	@echo "starting supervisord (logs in $(RUN_VAR_DIR)/log) ..."
	@FLEET_HOME="$(CURDIR)" FLEET_VAR_DIR="$(RUN_VAR_DIR)" FLEET_USER="$(RUN_USER)" \
		exec $(BIN)/supervisord -c "$$($(BIN)/fleet dev conf)"

render: install  ## render deploy/supervisor, deploy/k8s, deploy/prometheus and the README's pool table from pools + values (commit the result)
	$(BIN)/fleet render supervisor
	$(BIN)/fleet render k8s
	$(BIN)/fleet render prometheus
	$(BIN)/fleet pools --write-readme README.md

broker:  ## make sure RabbitMQ answers (starts the local one if it is installed and down)
	@bin/ensure-rabbitmq

prometheus:  ## promtool and prometheus (Debian package), for the rule tests and the real-Prometheus test
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y prometheus; }

chromium:  ## Debian's Chromium, the browser the console's Playwright tests drive (Playwright cannot download one here)
	@command -v /usr/bin/chromium >/dev/null || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

console-screenshots: install broker chromium  ## re-take the console screenshots in docs/img (the README shows them)
	FLEET_CONSOLE_SCREENSHOTS=docs/img $(BIN)/pytest tests/test_console_browser.py -q $(PYTEST_ARGS)

test: install broker prometheus chromium  ## the whole suite against the local RabbitMQ (a private vhost per run)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install prometheus  ## the pure tier: needs no RabbitMQ, Redis or peers, runs in seconds
	$(BIN)/pytest -m pure $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

worker: install broker  ## one pool in the foreground: make worker POOL=email
	$(BIN)/fleet worker $(POOL)

beat: install broker
	$(BIN)/fleet beat

api: install broker
	$(BIN)/fleet api

BENCH_STAMP := $(VENV)/.bench-installed
LIBRABBITMQ_VENV := bench/.venv-librabbitmq

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	touch $@

# librabbitmq lives in its own venv: installed beside fleet it would be a loaded gun (docs/TRANSPORT.md).
$(LIBRABBITMQ_VENV)/.installed: pyproject.toml
	test -x $(LIBRABBITMQ_VENV)/bin/python || $(PYTHON) -m venv $(LIBRABBITMQ_VENV)
	$(LIBRABBITMQ_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[bench-librabbitmq]' \
		|| echo "librabbitmq-fork did not install; the transport scenario will say so"
	touch $@

bench: $(BENCH_STAMP) $(LIBRABBITMQ_VENV)/.installed broker  ## benchmarks, never part of make test: make bench [QUICK=1]
	timeout 3600 $(BIN)/python -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache

soak: install broker  ## minutes of mixed load with random faults (not part of make test): make soak MINUTES=10
	$(BIN)/python -m tests.soak --minutes $(or $(MINUTES),10)
