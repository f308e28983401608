# Switchboard: `make run` serves the hub with the sample knowledge base; `make test` runs everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs exactly uv.lock; it lives in its own venv, bootstrapped by pip from hashes.
TOOLS := .venv-uv
UV := $(TOOLS)/bin/uv
export LITELLM_LOCAL_MODEL_COST_MAP := True
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: install lock lock-check run test lint format bench bench-kb bench-scale system-deps clean

$(UV): deploy/uv-requirements.txt
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --require-hashes --no-deps -r deploy/uv-requirements.txt
	touch $(UV)

# --locked: refuse to install when pyproject.toml and uv.lock disagree (never re-resolve here).
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --extra test --python $(PYTHON) --quiet
	touch $(STAMP)

install: $(STAMP)

# Refresh the lock on purpose: newest releases that satisfy pyproject.toml.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# Fails when pyproject.toml and uv.lock disagree.
lock-check: $(UV)
	$(UV) lock --check --python $(PYTHON)

run: install
	$(BIN)/switchboard serve

# Debian packages the tests drive for real (installed only when missing; needs root or sudo).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	test -x /usr/sbin/dovecot || missing="$$missing dovecot-imapd"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		echo "installing Debian packages:$$missing"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: install lock-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install system-deps lint
	$(BIN)/pytest -q -n 2 --dist loadfile

bench: install
	$(BIN)/switchboard bench --data-dir .bench

# Knowledge-base figures at 10,000 and 100,000 chunks, twice each (indexes kept in .bench/kb).
bench-kb: install
	$(BIN)/switchboard kb bench --chunks 10000 --chunks 100000 --runs 2

# Scale-out figures: throw-away redis-server and PostgreSQL (default durability), 1 and 2 workers.
bench-scale: install system-deps
	$(BIN)/python -m tests.scale.bench_scale --workers 1 2 --runs 3

clean:
	rm -rf $(VENV) $(TOOLS) .switchboard .bench .mypy_cache .ruff_cache .pytest_cache
