# Developer and CI entry points. Everything runs from the project's own .venv, installed from uv.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs exactly the versions in uv.lock (no resolving); it comes from PyPI at this version into .tools/.
UV_VERSION := 0.13.8
UV := .tools/bin/uv
UV_ENV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never
# Toolchain sets (sandbox/toolchain.py SETS): the demo needs only the base set; the tests also scan with grype.
DEMO_TOOLCHAIN := base
TEST_TOOLCHAIN := all

.PHONY: venv lock lint test demo clean system-deps test-system-deps

venv: $(STAMP)
	@:

$(UV):
	@$(PYTHON) -m venv .tools
	@.tools/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'

# The project (editable) with its dev extras, at the locked versions. Re-syncs only when pyproject.toml or
# uv.lock changes; fails when the lock no longer matches pyproject.toml instead of resolving on the fly.
$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(UV_ENV) $(UV) sync --quiet --locked --extra dev --python $(PYTHON) || { \
	  echo "make: uv sync failed; after editing dependencies in pyproject.toml run \`make lock\`"; exit 1; }
	@touch $(STAMP)

# Re-resolve after a dependency edit, keeping every other pin; upgrades: make lock LOCK_ARGS=--upgrade
# (everything) or LOCK_ARGS='--upgrade-package moto' (one package). Commit uv.lock with pyproject.toml.
lock: | $(UV)
	$(UV_ENV) $(UV) lock --python $(PYTHON) $(LOCK_ARGS)

# Programs the sandbox runs that come from Debian rather than the Go module proxy (installed once, as root).
SYSTEM_DEPS := prometheus prometheus-alertmanager postgresql
# Only the tests drive a browser (the Prefect UI forms), so the demo does not wait for it.
system-deps: DEPS = $(SYSTEM_DEPS)
test-system-deps: DEPS = $(SYSTEM_DEPS) chromium-headless-shell
system-deps test-system-deps:
	@missing=""; for pkg in $(DEPS); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; done; \
	  test -z "$$missing" || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv lint test-system-deps
	$(BIN)/python -m sandbox.toolchain $(TEST_TOOLCHAIN)
	$(BIN)/pytest

# The main job on the local sandbox: build (cached), start the sandbox (idempotent), then rehearse a rollback
# on it: deploy the demo app v1.0.0, upgrade to v1.1.0, roll back with the helm-rollback runbook, verify.
demo: venv system-deps
	$(BIN)/python -m sandbox.toolchain $(DEMO_TOOLCHAIN)
	$(BIN)/rollbook sandbox up
	eval "$$($(BIN)/rollbook sandbox env)" && $(BIN)/rollbook run rollback-rehearsal \
	  --param request.kubeconfig_path="$$KUBECONFIG" \
	  --param request.helm_executable="$$ROLLBOOK_SANDBOX_BIN/helm" \
	  --param request.image_repository="$$ROLLBOOK_SANDBOX_REGISTRY/rollbook/demo-app"

clean:
	rm -rf $(VENV) .tools build *.egg-info .pytest_cache .mypy_cache .ruff_cache
