"""One catalogue: `FLOWS`, `rollbook serve`'s deployments and prefect.yaml all list flows.CATALOGUE, identically."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from deployments import all_deployments
from deployments.prefect_yaml import render
from deployments.schedules import DEFAULT_FILE, ScheduleError, load_schedules
from flows import CATALOGUE, FLOWS, CatalogueEntry
from rollbook.cli import main

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"
REGENERATE = "run `.venv/bin/rollbook catalogue --write prefect.yaml` and commit it"


def _entries() -> list[dict[str, object]]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def test_prefect_yaml_is_generated_from_the_catalogue() -> None:
    assert PREFECT_YAML.read_text() == render(CATALOGUE, load_schedules(DEFAULT_FILE)), (
        f"prefect.yaml differs from flows.CATALOGUE: {REGENERATE}"
    )


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


def _schedules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedules.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-such-flow:\n  - cron: '0 * * * *'\n", "'no-such-flow' is not a rollbook deployment"),
        ("hello-cluster:\n  - cron: 'every hour'\n", "hello-cluster[0].cron"),
        ("hello-cluster:\n  - cron: '0 * * * *'\n    cadence: hourly\n", "hello-cluster[0].cadence"),
        ("hello-cluster:\n  - cron: '0 * * * *'\n    parameters: {request: {namespace: Prod}}\n", "[0].parameters"),
        ("hello-cluster: hourly\n", "expected a list of schedules"),
        ("- a\n", "expected a mapping"),
    ],
)
def test_a_wrong_schedules_file_is_refused_naming_the_entry(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_schedules(_schedules_file(tmp_path, text))


def test_schedules_and_exclusive_entries_reach_serve_and_prefect_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file feeds both: the served deployment and prefect.yaml carry the same cron, zone and parameters."""
    path = _schedules_file(
        tmp_path,
        "hello-cluster:\n  - cron: '15 3 * * *'\n    timezone: Europe/Paris\n"
        "    parameters: {request: {namespace: kube-system}}\n",
    )
    monkeypatch.setenv("ROLLBOOK_SCHEDULES", str(path))
    exclusive = [CatalogueEntry(CATALOGUE[0].flow, CATALOGUE[0].description, CATALOGUE[0].tags, exclusive=True)]
    written = yaml.safe_load(render([*exclusive, *CATALOGUE[1:]], load_schedules()))["deployments"][0]
    assert written["schedules"] == [
        {"cron": "15 3 * * *", "timezone": "Europe/Paris", "active": True,
         "parameters": {"request": {"namespace": "kube-system"}}}
    ]  # fmt: skip
    assert written["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    served = {d.name: d for d in all_deployments()}["hello-cluster"]
    assert served.schedules is not None and len(served.schedules) == 1
    schedule = served.schedules[0]
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("15 3 * * *", "Europe/Paris")  # type: ignore[union-attr]
    assert schedule.parameters == {"request": {"namespace": "kube-system"}}
