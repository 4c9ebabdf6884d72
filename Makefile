# Developer and CI entry points. Everything runs from the project's own .venv, built from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lint test demo clean system-deps

venv: $(STAMP)
	@:

# Reinstalls only when pyproject.toml changes. pip's output goes to a log that is shown only on failure.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -e '.[dev]' > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

# Programs the sandbox runs that come from Debian rather than the Go module proxy (installed once, as root).
SYSTEM_DEPS := prometheus prometheus-alertmanager postgresql
system-deps:
	@missing=""; for pkg in $(SYSTEM_DEPS); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; done; \
	  test -z "$$missing" || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv lint system-deps
	$(BIN)/python -m sandbox.toolchain
	$(BIN)/pytest

# The main job on the local sandbox: build (cached), start the sandbox (idempotent), then rehearse a rollback
# on it: deploy the demo app v1.0.0, upgrade to v1.1.0, roll back with the helm-rollback runbook, verify.
demo: venv system-deps
	$(BIN)/python -m sandbox.toolchain
	$(BIN)/rollbook sandbox up
	eval "$$($(BIN)/rollbook sandbox env)" && $(BIN)/rollbook run rollback-rehearsal \
	  --param request.kubeconfig_path="$$KUBECONFIG" \
	  --param request.helm_executable="$$ROLLBOOK_SANDBOX_BIN/helm" \
	  --param request.image_repository="$$ROLLBOOK_SANDBOX_REGISTRY/rollbook/demo-app"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
