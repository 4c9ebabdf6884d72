"""The schema guard in each flow that brings back an older app version, on the test Prefect server, faked at the
task boundary (the Deployment and its ReplicaSets, helm's history and manifests, the database's schema kept in
memory): refusals naming the schema and the safe alternative, last-known-good skipping incompatible revisions,
overrides forced through approval and recorded, plan mode showing the verdict. The sandbox drill is
tests/integration/test_schema_guard_sandbox.py."""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from flows import _schema_gate
from flows._schema_gate import SchemaGuardRefused
from rollbook import revisions as r
from rollbook.change import ChangeControls, Decision
from rollbook.helm_releases import RevisionInfo
from rollbook.schema_compat import ANNOTATION, SchemaState
from tasks.helm_release import ReleaseStatus, RevisionDetails
from tasks.schema_guard import SchemaGuard

undo_module = importlib.import_module("flows.deployment_undo")
helm_module = importlib.import_module("flows.helm_rollback")
canary_module = importlib.import_module("flows.canary_rollout")

CONTROLS = ChangeControls(reason="bad release 4", requested_by="pytest")
GUARD = SchemaGuard(kind="golang-migrate", dsn=SecretStr("postgresql://app:pw@db/app"))
UID = "dep-uid"


def _template(image: str, declared: str | None, hash_label: str = "") -> dict[str, Any]:
    labels = {"app": "web", **({r.POD_TEMPLATE_HASH_LABEL: hash_label} if hash_label else {})}
    meta: dict[str, Any] = {"labels": labels}
    if declared is not None:
        meta["annotations"] = {ANNOTATION: declared}
    return {"metadata": meta, "spec": {"containers": [{"name": "app", "image": image}]}}


def _rs(revision: int, declared: str | None) -> dict[str, Any]:
    name = f"web-{revision}"
    return {
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "creationTimestamp": f"2026-01-01T00:00:0{revision}Z",
            "annotations": {r.REVISION_ANNOTATION: str(revision), r.ROLLOUT_COMPLETE_ANNOTATION: f"uid-{name} t"},
            "ownerReferences": [{"uid": UID, "controller": True, "kind": "Deployment"}],
        },
        "spec": {"replicas": 0, "template": _template(f"app:{revision}", declared, f"h{revision}")},
        "status": {},
    }


# The guide's example after contract: 1 pre-expand code, 2 reads both shapes, 3 pre-expand code again (rolled
# out before the contract), 4 new-only code, live and broken. The schema is at golang-migrate version 7.
DECLARED = {1: "1..5", 2: "5..7", 3: "1..5", 4: "7.."}


class FakeKube:
    def __init__(self, declared: dict[int, str | None]) -> None:
        self.replica_sets = [_rs(rev, d) for rev, d in declared.items()]
        live = max(declared)
        self.deployment = {
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "prod",
                "uid": UID,
                "generation": 5,
                "resourceVersion": "100",
                "annotations": {r.REVISION_ANNOTATION: str(live)},
            },
            "spec": {
                "replicas": 3,
                "template": _template(f"app:{live}", declared[live]),
                "selector": {"matchLabels": {"app": "web"}},
            },
            "status": {"observedGeneration": 5, "updatedReplicas": 0},  # the live rollout is stuck
        }
        self.patches: list[dict[str, Any]] = []
        self.approvals: list[ChangeControls] = []


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    fake = FakeKube(DECLARED)
    monkeypatch.setattr(undo_module, "resolve_cluster", lambda *_: SimpleNamespace(namespace="prod"))
    monkeypatch.setattr(
        undo_module, "read_deployment_and_replica_sets", lambda *_: (fake.deployment, fake.replica_sets)
    )

    def patch(_c: Any, _ns: str, _name: str, template: Any, annotations: dict[str, str], *_: Any) -> None:
        fake.patches.append({"template": template, "annotations": annotations})

    monkeypatch.setattr(undo_module, "patch_deployment_rollback", patch)
    status = {"done": True, "failed": False, "seconds": 1, "revision": 5, "message": "done"}
    waiter = SimpleNamespace(with_options=lambda **_: lambda *_: status)
    monkeypatch.setattr(undo_module, "wait_for_rollout_task", waiter)
    monkeypatch.setattr(undo_module, "mark_rollout_complete", lambda *_, **__: SimpleNamespace(is_failed=lambda: False))
    _approve(monkeypatch, undo_module, fake, approved=True)
    _schema(monkeypatch, "7")
    return fake


def _approve(monkeypatch: pytest.MonkeyPatch, module: Any, fake: Any, *, approved: bool) -> None:
    def request_approval(controls: ChangeControls, _markdown: str) -> Decision:
        fake.approvals.append(controls)
        if not controls.require_approval:
            return Decision(approved=True, approver=controls.requested_by, comment="approval not required")
        return Decision(approved=approved, approver="alice", comment="ok" if approved else "no")

    monkeypatch.setattr(module, "request_approval", request_approval)


def _schema(monkeypatch: pytest.MonkeyPatch, *current: str, **extra: Any) -> list[SchemaGuard]:
    reads: list[SchemaGuard] = []

    def read(guard: SchemaGuard) -> SchemaState:
        reads.append(guard)
        return SchemaState(kind=guard.kind, current=current, **extra)

    monkeypatch.setattr(_schema_gate, "read_schema_state", read)
    return reads


def _undo(controls: ChangeControls = CONTROLS, **fields: Any) -> Any:
    request = undo_module.UndoRequest(namespace="prod", deployment="web", schema_guard=GUARD, **fields)
    return undo_module.deployment_undo(request=request, controls=controls)


def test_undo_past_the_schema_is_refused_naming_the_schema_and_the_newest_compatible_revision(kube: FakeKube) -> None:
    with pytest.raises(SchemaGuardRefused) as refused:
        _undo()  # previous: revision 3, pre-expand code
    message = str(refused.value)
    assert "revision 3" in message and "golang-migrate version 7" in message and "1..5" in message
    assert "to_revision=2" in message and "last_known_good=true" in message and "override_schema_guard" in message
    assert "Nothing changed" in message and kube.patches == [] and kube.approvals == []


def test_with_no_compatible_revision_the_alternative_is_to_roll_forward(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    _schema(monkeypatch, "9")  # past every range but the live one's
    with pytest.raises(SchemaGuardRefused, match="roll forward"):
        _undo(to_revision=2)
    assert kube.patches == []


def test_undo_to_a_compatible_revision_goes_ahead_and_records_the_verdict(kube: FakeKube) -> None:
    result = _undo(to_revision=2)
    assert result.outcome == "changed" and result.to_revision == 2
    assert result.schema_guard.startswith("compatible: ") and "5..7" in result.schema_guard
    [patch] = kube.patches
    assert patch["annotations"]["rollbook.dev/schema-guard"] == result.schema_guard
    assert kube.approvals[0].require_approval is False  # a compatible target adds no gate


def test_last_known_good_skips_incompatible_revisions(kube: FakeKube) -> None:
    result = _undo(last_known_good=True)
    assert result.outcome == "changed" and result.to_revision == 2
    rows = {row["revision"]: row for row in result.candidates}
    assert rows[3]["schema"].startswith("incompatible: ") and "chosen" not in rows[3]
    assert rows[2]["chosen"] is True and rows[2]["schema"].startswith("compatible: ")
    assert kube.patches[0]["template"]["spec"]["containers"][0]["image"] == "app:2"


def test_last_known_good_finds_nothing_when_the_schema_is_past_every_range(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    _schema(monkeypatch, "6")  # only 2 (5..7) would do: make it the live one
    fake = FakeKube({1: "1..5", 2: "..4", 3: "9.."})
    monkeypatch.setattr(
        undo_module, "read_deployment_and_replica_sets", lambda *_: (fake.deployment, fake.replica_sets)
    )
    with pytest.raises(ValueError, match="compatible with the database schema .*golang-migrate at 6") as none:
        _undo(last_known_good=True)
    assert "revision 2: incompatible: " in str(none.value)  # why the newest candidate was skipped
    assert fake.patches == [] and kube.patches == []


def test_an_override_always_asks_for_approval_and_is_recorded(kube: FakeKube) -> None:
    result = _undo(to_revision=3, override_schema_guard=True)
    assert result.outcome == "changed" and result.to_revision == 3
    assert [c.require_approval for c in kube.approvals] == [True]  # the run's controls did not ask
    recorded = kube.patches[0]["annotations"]["rollbook.dev/schema-guard"]
    assert recorded.startswith("OVERRIDDEN (approval required), incompatible: ") and "1..5" in recorded


def test_an_override_that_is_not_approved_changes_nothing(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    _approve(monkeypatch, undo_module, kube, approved=False)
    result = _undo(to_revision=3, override_schema_guard=True)
    assert result.outcome == "not-approved" and kube.patches == []


def test_plan_mode_shows_the_verdict_and_changes_nothing(kube: FakeKube) -> None:
    result = _undo(CONTROLS.model_copy(update={"plan": True}), to_revision=3, override_schema_guard=True)
    assert result.outcome == "planned" and result.schema_guard.startswith("OVERRIDDEN")
    assert kube.patches == [] and kube.approvals == []


def test_undeclared_targets_pass_with_a_warning_unless_the_guard_requires_a_declaration(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeKube({1: None, 2: "7.."})
    monkeypatch.setattr(
        undo_module, "read_deployment_and_replica_sets", lambda *_: (fake.deployment, fake.replica_sets)
    )
    monkeypatch.setattr(undo_module, "patch_deployment_rollback", lambda *a: fake.patches.append({"a": a[4]}))
    strict = GUARD.model_copy(update={"require_declaration": True})
    with pytest.raises(SchemaGuardRefused, match="requires one"):
        undo_module.deployment_undo(
            request=undo_module.UndoRequest(namespace="prod", deployment="web", schema_guard=strict), controls=CONTROLS
        )
    assert fake.patches == []
    result = _undo()
    assert result.outcome == "changed" and result.schema_guard.startswith("undeclared: ")


def test_a_dirty_database_refuses_even_a_declared_target(kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    _schema(monkeypatch, "7", dirty=True)
    with pytest.raises(SchemaGuardRefused, match="dirty"):
        _undo(to_revision=2)
    assert kube.patches == []


def test_without_a_guard_nothing_is_read_and_nothing_is_refused(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _schema(monkeypatch, "7")
    request = undo_module.UndoRequest(namespace="prod", deployment="web")
    result = undo_module.deployment_undo(request=request, controls=CONTROLS)
    assert result.outcome == "changed" and result.to_revision == 3 and result.schema_guard == ""
    assert reads == [] and "rollbook.dev/schema-guard" not in kube.patches[0]["annotations"]


def test_the_guard_fields_are_validated() -> None:
    with pytest.raises(ValidationError, match="override_schema_guard needs schema_guard"):
        undo_module.UndoRequest(deployment="web", override_schema_guard=True)
    with pytest.raises(ValidationError, match="database_block or dsn"):
        SchemaGuard(kind="flyway")
    assert SchemaGuard(kind="flyway", database_block="db").options().expected == ""


# -- helm-rollback ------------------------------------------------------------------------------------------------


def _manifest(declared: str | None) -> list[dict[str, Any]]:
    return [{"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": _template("app:x", declared)}}]


class FakeHelm:
    def __init__(self) -> None:
        self.history = [RevisionInfo(revision=n, status="superseded") for n in (1, 2, 3)]
        self.history.append(RevisionInfo(revision=4, status="deployed"))
        self.approvals: list[ChangeControls] = []
        self.rolled_back: list[int] = []


@pytest.fixture
def helm(monkeypatch: pytest.MonkeyPatch) -> FakeHelm:
    fake = FakeHelm()
    monkeypatch.setattr(helm_module, "resolve_cluster", lambda *_: SimpleNamespace(namespace="prod"))
    monkeypatch.setattr(helm_module, "release_history", lambda *_, **__: fake.history)

    def details(_c: Any, _ns: str, _name: str, revision: int, _helm: str = "helm") -> RevisionDetails:
        return RevisionDetails(revision=revision, chart="demo-1", values={}, manifest=_manifest(DECLARED[revision]))

    monkeypatch.setattr(helm_module, "revision_details", details)
    monkeypatch.setattr(helm_module, "rollback_release", lambda *a, **_: fake.rolled_back.append(a[3]))
    _approve(monkeypatch, helm_module, fake, approved=False)
    _schema(monkeypatch, "7")
    return fake


def _helm_rollback(controls: ChangeControls = CONTROLS, **fields: Any) -> Any:
    request = helm_module.HelmRollbackRequest(namespace="prod", release="web", schema_guard=GUARD, **fields)
    return helm_module.helm_rollback(request=request, controls=controls)


def test_helm_rollback_past_the_schema_is_refused_naming_the_compatible_revision(helm: FakeHelm) -> None:
    with pytest.raises(SchemaGuardRefused) as refused:
        _helm_rollback()  # previous good: revision 3, declaring 1..5 in its stored manifest
    message = str(refused.value)
    assert "revision 3" in message and "Deployment/web" in message and "golang-migrate version 7" in message
    assert "revision=2" in message and helm.rolled_back == [] and helm.approvals == []


def test_helm_plan_shows_the_verdict(helm: FakeHelm) -> None:
    result = _helm_rollback(CONTROLS.model_copy(update={"plan": True}), revision=2)
    assert (
        result.outcome == "planned" and result.schema_guard.startswith("compatible: ") and "5..7" in result.schema_guard
    )


def test_a_helm_override_is_forced_through_approval(helm: FakeHelm) -> None:
    result = _helm_rollback(revision=3, override_schema_guard=True)
    assert result.outcome == "not-approved" and helm.rolled_back == []
    assert [c.require_approval for c in helm.approvals] == [True]
    assert result.schema_guard.startswith("OVERRIDDEN")


def test_the_helm_audit_annotations_carry_the_verdict() -> None:
    result = helm_module.HelmRollbackResult(
        outcome="changed", summary="s", release="web", namespace="prod", from_revision=4, to_revision=3
    ).model_copy(update={"schema_guard": "OVERRIDDEN (approval required), incompatible: x"})
    notes = helm_module._annotations(CONTROLS, result, "succeeded")
    assert notes["rollbook.dev/schema-guard"] == "OVERRIDDEN (approval required), incompatible: x"
    plain = helm_module._annotations(CONTROLS, result.model_copy(update={"schema_guard": ""}), "succeeded")
    assert "rollbook.dev/schema-guard" not in plain


# -- canary / blue-green: the side a revert returns to --------------------------------------------------------------


@pytest.fixture
def stable(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"declared": "1..5", "routes": []}
    monkeypatch.setattr(
        _schema_gate,
        "release_status",
        lambda *_: ReleaseStatus(release="web", namespace="prod", revision=4, status="deployed"),
    )
    monkeypatch.setattr(
        _schema_gate,
        "revision_details",
        lambda *_: RevisionDetails(revision=4, chart="demo-1", values={}, manifest=_manifest(state["declared"])),
    )
    routing = importlib.import_module("tasks.progressive").ReleaseRouting
    monkeypatch.setattr(canary_module, "resolve_cluster", lambda *_: SimpleNamespace(namespace="prod"))
    monkeypatch.setattr(canary_module, "resolve_prometheus", lambda *_: None)
    monkeypatch.setattr(canary_module, "check_prometheus", lambda *_: None)
    monkeypatch.setattr(
        canary_module,
        "release_routing",
        lambda _c, _ns, release: routing(release=release, ingress=f"{release}-ing", service=release, version="2.0"),
    )

    def make_router(*_: Any, **kwargs: Any) -> Any:
        state["routes"].append(kwargs["change"])
        return SimpleNamespace(canary_name="web-canary")

    monkeypatch.setattr(canary_module, "make_router", make_router)
    monkeypatch.setattr(canary_module, "read_weight", lambda *_: 0)
    _schema(monkeypatch, "7")
    return state


def _canary(controls: ChangeControls = CONTROLS, **fields: Any) -> Any:
    request = canary_module.CanaryRequest(
        namespace="prod",
        stable_release="web",
        canary_release="web-canary",
        chart="charts/demo-app",
        prometheus_url="http://127.0.0.1:9090",
        run_checklist=False,
        schema_guard=GUARD,
        **fields,
    )
    return canary_module.canary_rollout(request=request, controls=controls)


def test_a_canary_whose_stable_side_cannot_read_the_schema_does_not_start(stable: dict[str, Any]) -> None:
    with pytest.raises(SchemaGuardRefused) as refused:
        _canary()
    message = str(refused.value)
    assert "stable release 'web' (revision 4)" in message and "golang-migrate version 7" in message
    assert "1..5" in message and "upgrade 'web'" in message
    assert stable["routes"] == []  # refused before the router was even built


def test_a_canary_plan_shows_the_stable_sides_verdict(stable: dict[str, Any]) -> None:
    stable["declared"] = "5.."
    result = _canary(CONTROLS.model_copy(update={"plan": True}))
    assert result.outcome == "planned" and "schema guard (the revert target): compatible: " in result.plan
    assert stable["routes"][0]["rollbook.dev/schema-guard"].startswith("compatible: ")


def test_a_canary_override_is_recorded_and_planned_behind_approval(stable: dict[str, Any]) -> None:
    result = _canary(CONTROLS.model_copy(update={"plan": True}), override_schema_guard=True)
    assert "schema guard (the revert target): OVERRIDDEN" in result.plan
    assert "approval of this plan" in result.plan  # the override added the gate
    assert stable["routes"][0]["rollbook.dev/schema-guard"].startswith("OVERRIDDEN")


def test_a_blue_green_whose_blue_cannot_read_the_schema_installs_nothing(
    stable: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    bg = importlib.import_module("flows.blue_green")
    progressive = importlib.import_module("tasks.progressive")
    installs: list[Any] = []

    def routing(_c: Any, _ns: str, release: str) -> Any:
        if release == "web-green":
            raise progressive.RoutingNotFound("no green yet")
        return progressive.ReleaseRouting(release=release, ingress="web-ing", service=release, version="1.0")

    monkeypatch.setattr(bg, "resolve_cluster", lambda *_: SimpleNamespace(namespace="prod"))
    monkeypatch.setattr(bg, "release_routing", routing)
    monkeypatch.setattr(bg, "live_values", lambda *_: ({"image": {"tag": "1.0"}}, 4))
    monkeypatch.setattr(bg, "interrupted_green", lambda *_, **__: None)
    monkeypatch.setattr(bg, "install_green", lambda *a, **k: installs.append(k))
    monkeypatch.setattr(bg, "resolve_prometheus", lambda *_: None)
    monkeypatch.setattr(bg, "check_prometheus", lambda *_: None)
    request = bg.BlueGreenRequest(
        namespace="prod",
        blue_release="web",
        green_release="web-green",
        chart="charts/demo-app",
        version="2.0",
        prometheus_url="http://127.0.0.1:9090",
        run_checklist=False,
        schema_guard=GUARD,
    )
    with pytest.raises(SchemaGuardRefused, match="blue release 'web' \\(revision 4\\).*golang-migrate version 7"):
        bg.blue_green(request=request, controls=CONTROLS)
    assert installs == []
    stable["declared"] = "5..8"
    planned = bg.blue_green(request=request, controls=CONTROLS.model_copy(update={"plan": True}))
    assert planned.outcome == "planned" and "schema guard (the revert target): compatible: " in planned.plan
    assert installs == []
