"""prefect.yaml and `rollbook serve` must offer the same deployments of the same flows."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from deployments import DEPLOYMENTS, all_deployments
from flows import FLOWS

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def _entries() -> list[dict[str, object]]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def test_every_entrypoint_is_a_registered_flow() -> None:
    for entry in _entries():
        path, _, attr = str(entry["entrypoint"]).partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert getattr(module, attr) in FLOWS.values(), entry["name"]


def test_same_deployments_as_serve() -> None:
    assert sorted(str(e["name"]) for e in _entries()) == sorted(d.name for d in all_deployments())


def test_every_flow_is_deployed() -> None:
    assert set(DEPLOYMENTS) == set(FLOWS)
