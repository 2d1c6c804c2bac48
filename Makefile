# One entry point for developers and CI. `make test` works on a fresh Debian machine with
# Python 3.11: it installs redis-server when missing, builds the venv, then lints,
# type-checks and runs the whole suite.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: test install redis lint typecheck unit golden-update bench bench-runtime sample clean

test: redis install lint typecheck unit

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server missing: installing it from Debian"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends redis-server; }

lint: install
	$(BIN)/ruff check compiler functions tests bench
	$(BIN)/ruff format --check compiler functions tests bench

typecheck: install
	$(BIN)/mypy compiler functions/ai4ec_runtime functions/function_app.py

unit: install
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

golden-update: install
	$(BIN)/pytest -n 2 --update-golden $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/compile_scale.py
	$(BIN)/python bench/diff_scale.py

# Task-manager throughput against Celery and Dramatiq on the same Redis; the peers live in
# their own venv because Celery pins libraries that conflict with ours. Their pins are the
# `bench-peers` extra of setup.cfg (installed alone: the peers' venv needs no ai4ec).
BENCH_PEERS = $(shell $(PY) -c "import configparser as c, shlex; p = c.RawConfigParser(); \
	p.read('setup.cfg'); print(shlex.join(p['options.extras_require']['bench-peers'].split()))")

bench-runtime: redis install .venv-bench/.installed
	$(BIN)/python bench/taskmanager.py

.venv-bench/.installed: setup.cfg
	$(PY) -m venv .venv-bench
	.venv-bench/bin/pip install -q $(BENCH_PEERS)
	touch $@

sample: install
	$(BIN)/ai4ec build samples/camera-trap/platform.yaml -o out

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache .mypy_cache .ruff_cache
