"""The alert receiver against the session's real Prefect server: hostile requests create zero flow runs, one
alert creates one run however often it is re-sent, the cooldown holds per target, each decision is an event,
and an unreachable Prefect answers 503."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from alert_samples import AUTH, HOSTILE, TOKEN, alert, body, notification, resolved, write_rules
from conftest import poll
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from pydantic import SecretStr
from starlette.testclient import TestClient

from deployments import all_deployments
from flows import FLOWS
from rollbook.alert_launcher import PrefectLauncher
from rollbook.alert_rules import load_rules
from rollbook.webhook import Limits, create_app

ROOMY = Limits(rate_per_second=10_000, burst=10_000)


@pytest.fixture(scope="module")
def deployment_id() -> UUID:
    deployment = next(d for d in all_deployments() if d.name == "helm-rollback")
    return UUID(str(deployment.apply()))


def runs(deployment_id: UUID) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def _delete_runs(deployment_id: UUID) -> None:
    with get_client(sync_client=True) as client:
        for run in runs(deployment_id):
            client.delete_flow_run(run.id)


@pytest.fixture
def clean(deployment_id: UUID) -> Iterator[UUID]:
    """The deployment starts without runs (the session's sandbox tests may have run helm-rollback through it),
    and no alert-started run outlives its test (nothing must execute them later in the session)."""
    _delete_runs(deployment_id)
    yield deployment_id
    _delete_runs(deployment_id)


def receiver(tmp_path: Path, launcher: PrefectLauncher | None = None, **rules: Any) -> TestClient:
    ruleset = load_rules(write_rules(tmp_path / "rules.yaml", **rules), {n: f.fn for n, f in FLOWS.items()})
    app = create_app(rules=ruleset, launcher=launcher or PrefectLauncher(), token=SecretStr(TOKEN), limits=ROOMY)
    return TestClient(app)


def test_no_hostile_request_creates_a_flow_run(clean: UUID, tmp_path: Path) -> None:
    with receiver(tmp_path) as client:
        answers = {case: client.post("/alerts", **kwargs).status_code for case, kwargs, _ in HOSTILE}
    assert answers == {case: status for case, _, status in HOSTILE}
    assert runs(clean) == []


def test_one_alert_one_run_however_often_alertmanager_sends_it(clean: UUID, tmp_path: Path) -> None:
    with receiver(tmp_path) as client:
        first = client.post("/alerts", content=body(notification()), headers=AUTH).json()["decisions"][0]
        repeats = [client.post("/alerts", content=body(notification()), headers=AUTH).json() for _ in range(3)]
        # the same target from another alert occurrence within the cooldown: no second run either
        later = notification(alert() | {"startsAt": "2026-12-03T09:00:00Z", "fingerprint": "1111111111111111"})
        cooled = client.post("/alerts", content=body(later), headers=AUTH).json()["decisions"][0]
        gone = client.post("/alerts", content=body(resolved(notification())), headers=AUTH).json()["decisions"][0]
    assert first["decision"] == "started"
    assert {r["decisions"][0]["decision"] for r in repeats} == {"duplicate"}
    assert {r["decisions"][0]["flow_run_id"] for r in repeats} == {first["flow_run_id"]}
    assert (cooled["decision"], cooled["flow_run_id"]) == ("cooldown", first["flow_run_id"])
    assert gone["decision"] == "resolved"
    [run] = runs(clean)
    assert str(run.id) == first["flow_run_id"] and run.idempotency_key.startswith("alertmanager-")
    assert "alertmanager" in run.tags and "alert-rule:demo-error-rate" in run.tags
    assert run.parameters["request"]["namespace"] == "shop"
    assert run.parameters["controls"]["requested_by"] == "alertmanager receiver rollbook"


def test_without_a_cooldown_a_new_occurrence_gets_its_own_run(clean: UUID, tmp_path: Path) -> None:
    with receiver(tmp_path, cooldown=0) as client:
        client.post("/alerts", content=body(notification()), headers=AUTH)
        later = notification(alert() | {"startsAt": "2026-12-03T09:00:00Z"})
        second = client.post("/alerts", content=body(later), headers=AUTH).json()["decisions"][0]
    assert second["decision"] == "started" and len(runs(clean)) == 2


def test_each_decision_is_a_prefect_event(clean: UUID, tmp_path: Path) -> None:
    fingerprint = "2222222222222222"
    with receiver(tmp_path) as client:
        started = client.post("/alerts", content=body(notification(alert() | {"fingerprint": fingerprint})),
                              headers=AUTH).json()["decisions"][0]  # fmt: skip
    resource = f"alertmanager.alert.{fingerprint}"

    def events() -> list[dict[str, Any]]:
        with get_client(sync_client=True) as client:
            answer = client._client.post(
                "/events/filter",
                json={"filter": {"resource": {"id": [resource]}, "occurred": {"since": "2026-01-01T00:00:00Z"}}},
            )
            return list(answer.json()["events"])

    found = poll(events, lambda found: len(found) >= 1, timeout=30)
    assert [e["event"] for e in found] == ["rollbook.alert.started"]
    assert found[0]["related"][0]["prefect.resource.id"] == f"prefect.flow-run.{started['flow_run_id']}"


def test_prefect_unreachable_answers_503_and_the_retry_finds_the_run(clean: UUID, tmp_path: Path) -> None:
    down = PrefectLauncher(lambda: PrefectClient(api="http://127.0.0.1:9/api"))
    with receiver(tmp_path, launcher=down) as client:
        answer = client.post("/alerts", content=body(notification()), headers=AUTH)
    assert answer.status_code == 503 and "unreachable" in answer.json()["error"]
    assert runs(clean) == []


def test_an_unregistered_deployment_answers_503(clean: UUID, tmp_path: Path) -> None:
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as prefect:  # `rollbook serve` in another test may have registered it
        try:
            prefect.delete_deployment(prefect.read_deployment_by_name("helm-history/helm-history").id)
        except ObjectNotFound:
            pass
    extra = (
        "  - name: other\n    match: {alertname: Other}\n    deployment: helm-history\n"
        "    parameters: {request: {namespace: shop, release: demo}}\n"
    )
    other = notification(alert(alertname="Other"))
    with receiver(tmp_path, extra=extra) as client:
        answer = client.post("/alerts", content=body(other), headers=AUTH)
    assert answer.status_code == 503 and "not registered" in answer.json()["error"]
