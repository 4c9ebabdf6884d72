"""One catalogue: `FLOWS`, `rollbook serve`'s deployments and prefect.yaml all list flows.CATALOGUE, identically."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from deployments import all_deployments
from deployments.prefect_yaml import render
from flows import CATALOGUE, FLOWS
from rollbook.cli import main

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"
REGENERATE = "run `.venv/bin/rollbook catalogue --write prefect.yaml` and commit it"


def _entries() -> list[dict[str, object]]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def test_prefect_yaml_is_generated_from_the_catalogue() -> None:
    assert PREFECT_YAML.read_text() == render(CATALOGUE), f"prefect.yaml differs from flows.CATALOGUE: {REGENERATE}"


def test_prefect_yaml_has_the_catalogue_descriptions_and_tags() -> None:
    """What `prefect deploy --all` reads, parsed: the same names, descriptions and tags in the same order."""
    listed = [(e["name"], e["description"], e["tags"]) for e in _entries()]
    assert listed == [(c.name, c.description, list(c.tags)) for c in CATALOGUE], REGENERATE


def test_every_entrypoint_is_the_catalogued_flow() -> None:
    for entry, catalogued in zip(_entries(), CATALOGUE, strict=True):
        path, _, attr = str(entry["entrypoint"]).partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert getattr(module, attr) is catalogued.flow, entry["name"]


def test_serve_deploys_the_catalogue_with_its_descriptions_and_tags() -> None:
    served = [(d.name, d.description, d.tags, d.flow_name) for d in all_deployments()]
    assert served == [(c.name, c.description, list(c.tags), c.flow.name) for c in CATALOGUE]


def test_flows_is_the_catalogue_by_name() -> None:
    assert len({entry.name for entry in CATALOGUE}) == len(CATALOGUE), "two catalogue entries share a flow name"
    assert FLOWS == {entry.name: entry.flow for entry in CATALOGUE}


def test_the_check_command_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "prefect.yaml"
    stale.write_text(PREFECT_YAML.read_text().replace(CATALOGUE[0].description, "an old description"))
    assert main(["catalogue", "--check", str(stale)]) == 1
    assert f"rollbook catalogue --write {stale}" in capsys.readouterr().err
    assert main(["catalogue", "--write", str(stale)]) == 0
    assert main(["catalogue", "--check", str(stale)]) == 0
    assert stale.read_text() == PREFECT_YAML.read_text()
