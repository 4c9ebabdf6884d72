# Developer and CI entry points. Everything runs from the project's own .venv, built from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lint test demo clean

venv: $(STAMP)
	@:

# Reinstalls only when pyproject.toml changes. pip's output goes to a log that is shown only on failure.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -e '.[dev]' > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv lint
	$(BIN)/python -m sandbox.toolchain
	$(BIN)/pytest

demo: venv
	$(BIN)/rollbook run hello-cluster

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
