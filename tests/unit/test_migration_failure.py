"""migration-failure on SQLite files with the demo schema (examples/alembic-demo, real Alembic: the downgrade,
its offline SQL, the contract step whose downgrade refuses) and a Deployment faked at the task boundary (its
ReplicaSets, pause/resume and annotation patches, the undo sub-flow's patch and wait). The sandbox drill on
PostgreSQL and kwok is tests/integration/test_migration_failure_sandbox.py."""

from __future__ import annotations

import copy
import importlib
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from rollbook import migration_failure as rules
from rollbook import revisions as r
from rollbook.change import ChangeControls, Decision
from rollbook.schema_compat import ANNOTATION, SchemaVerdict
from tasks.schema_downgrade import (
    downgrade_schema,
    offline_downgrade_sql,
    previous_heads,
    read_alembic_heads,
    read_evidence,
)
from tasks.schema_guard import SchemaGuard
from tasks.schema_migrations import SchemaMigrationError, upgrade_schema

flow_module = importlib.import_module("flows.migration_failure")
undo_module = importlib.import_module("flows.deployment_undo")
DEMO = str(Path(__file__).resolve().parents[2] / "examples" / "alembic-demo")
BOUNDS: dict[str, Any] = {"statement_timeout_seconds": 5, "lock_timeout_seconds": 5, "application_name": "pytest"}
CONTROLS = ChangeControls(reason="migration 0002 broke web", requested_by="pytest")
U, E, C = "0001_users", "0002_expand_new_email", "0003_contract_drop_email"
UID = "dep-uid"


@pytest.fixture
def dsn(tmp_path: Path) -> SecretStr:
    return SecretStr(f"sqlite:///{tmp_path / 'app.db'}")


def at(dsn: SecretStr, target: str) -> SecretStr:
    upgrade_schema.fn(dsn, DEMO, target, **BOUNDS)
    return dsn


def columns(dsn: SecretStr) -> list[str]:
    with sqlite3.connect(dsn.get_secret_value().removeprefix("sqlite:///")) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(users)")]


# --- tasks, on SQLite with the demo's scripts ---


def test_the_previous_head_is_alembic_s_minus_one() -> None:
    assert previous_heads(DEMO, (E,)) == (U,)
    assert previous_heads(DEMO, (C,)) == (U,)  # its down revision; its depends_on (expand) is another branch
    assert previous_heads(DEMO, (U,)) == ()


def test_offline_downgrade_sql_shows_the_reversal_and_touches_nothing(dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    sql = offline_downgrade_sql.fn(dsn, DEMO, start=E, target=U)
    assert "DROP COLUMN new_email" in sql and U in sql
    assert read_alembic_heads.fn(dsn) == (E,) and "new_email" in columns(dsn)


def test_a_migration_whose_downgrade_refuses_is_found_out_offline(dsn: SecretStr) -> None:
    at(dsn, "contract@head")
    with pytest.raises(SchemaMigrationError, match="cannot be undone, restore from a backup") as refused:
        offline_downgrade_sql.fn(dsn, DEMO, start=C, target=U)
    assert refused.value.transient is False
    assert read_alembic_heads.fn(dsn) == (C,)


def test_downgrade_reverses_the_expand_and_a_retry_changes_nothing(dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    done = downgrade_schema.fn(dsn, DEMO, U, **BOUNDS)
    assert done["before"] == [E] and done["after"] == [U] and "new_email" not in columns(dsn)
    again = downgrade_schema.fn(dsn, DEMO, U, **BOUNDS)
    assert again["before"] == again["after"] == [U]


def test_evidence_on_sqlite_has_the_version_table_and_says_locks_are_postgresql_s(dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    evidence = read_evidence.fn(dsn)
    assert evidence["versions"] == [E] and evidence["locks"] == []
    assert any("pg_locks" in note for note in evidence["notes"])
    assert "pw" not in str(evidence)


# --- the rules ---


def _verdict(kind: str) -> SchemaVerdict:
    return SchemaVerdict(verdict=kind, reason="why", allowed=kind == "compatible")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"wanted": False}, "skipped", "downgrade=false"),
        ({"heads_now": (U,), "target": (U,)}, "done", "at 0001_users already"),
        ({"heads_now": (), "failed_heads": ()}, "refused", "nothing to reverse"),
        ({"heads_now": (E, C)}, "refused", "2 heads"),
        ({"target": ()}, "refused", "give downgrade_to"),
        ({"app_verdict": _verdict("incompatible")}, "refused", "would break the code now running"),
        ({"app_verdict": _verdict("undeclared")}, "refused", "does not declare schema 0001_users"),
        ({}, "todo", "alembic downgrade 0002_expand_new_email -> 0001_users"),
    ],
)
def test_plan_downgrade(fields: dict[str, Any], status: str, words: str) -> None:
    base: dict[str, Any] = {
        "wanted": True,
        "heads_now": (E,),
        "failed_heads": (E,),
        "target": (U,),
        "app_verdict": _verdict("compatible"),
    }
    plan = rules.plan_downgrade(**{**base, **fields})
    assert plan.status == status and words in plan.reason


def test_a_record_is_honoured_only_while_it_describes_the_database() -> None:
    record = rules.FailureRecord(failed_heads=(E,), downgrade_to=U)
    notes = {rules.RECORD_ANNOTATION: record.dumps()}
    assert rules.read_record(notes, (E,)) == record  # failed, not yet downgraded
    assert rules.read_record(notes, (U,)) == record  # downgraded already: not walked back again
    assert rules.read_record(notes, (C,)) is None  # an older incident's
    assert rules.read_record({rules.RECORD_ANNOTATION: "{not json"}, (E,)) is None


# --- the flow, with the Deployment faked at the task boundary ---


def _template(image: str, declared: str | None, hash_label: str = "") -> dict[str, Any]:
    labels = {"app": "web", **({r.POD_TEMPLATE_HASH_LABEL: hash_label} if hash_label else {})}
    meta: dict[str, Any] = {"labels": labels, "annotations": {ANNOTATION: declared} if declared else {}}
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


class FakeKube:
    """One Deployment and its ReplicaSets; every write recorded in order, the undo's patch applied."""

    def __init__(self, declared: dict[int, str | None]) -> None:
        self.replica_sets = [_rs(rev, d) for rev, d in declared.items()]
        live = max(declared)
        self.deployment: dict[str, Any] = {
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
            "status": {"observedGeneration": 5, "updatedReplicas": 0},
        }
        self.writes: list[tuple[str, Any]] = []
        self.approvals: list[ChangeControls] = []

    def read(self, *_: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return copy.deepcopy(self.deployment), copy.deepcopy(self.replica_sets)

    def paused(self, _c: Any, _ns: str, _name: str, *, paused: bool, annotations: dict[str, str]) -> None:
        self.writes.append(("paused" if paused else "resumed", dict(annotations)))
        self.deployment["spec"]["paused"] = paused
        self.deployment["metadata"]["annotations"].update(annotations)

    def annotate(self, _c: Any, _ns: str, _name: str, annotations: dict[str, str]) -> None:
        self.writes.append(("annotated", dict(annotations)))
        self.deployment["metadata"]["annotations"].update(annotations)

    def rollback(self, _c: Any, _ns: str, _name: str, template: Any, annotations: dict[str, str], *_: Any) -> None:
        assert not self.deployment["spec"].get("paused"), "deployment-undo must not patch a paused Deployment"
        self.writes.append(("rollback", template["spec"]["containers"][0]["image"]))
        self.deployment["spec"]["template"] = copy.deepcopy(template)
        self.deployment["metadata"]["annotations"] = dict(annotations)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.writes]


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    # 1: pre-expand code; 2: reads both shapes; 3: new-only code, live and crashing after the migration
    fake = FakeKube({1: U, 2: f"{U},{E},{C}", 3: f"{E},{C}"})
    cluster = SimpleNamespace(namespace="prod")
    for module in (flow_module, undo_module):
        monkeypatch.setattr(module, "resolve_cluster", lambda *_: cluster)
        monkeypatch.setattr(module, "read_deployment_and_replica_sets", fake.read)
    monkeypatch.setattr(flow_module, "deployment_pod_problems", lambda *_: {"web-3-x": ["CrashLoopBackOff"]})
    monkeypatch.setattr(flow_module, "set_deployment_paused", fake.paused)
    monkeypatch.setattr(flow_module, "annotate_deployment", fake.annotate)
    monkeypatch.setattr(undo_module, "patch_deployment_rollback", fake.rollback)
    status = {"done": True, "failed": False, "seconds": 1, "revision": 4, "message": "done"}
    monkeypatch.setattr(
        undo_module, "wait_for_rollout_task", SimpleNamespace(with_options=lambda **_: lambda *_: status)
    )
    monkeypatch.setattr(undo_module, "mark_rollout_complete", lambda *_, **__: SimpleNamespace(is_failed=lambda: False))

    def approve(controls: ChangeControls, _markdown: str) -> Decision:
        fake.approvals.append(controls)
        if not controls.require_approval:
            return Decision(approved=True, approver=controls.requested_by, comment="approval not required")
        return Decision(approved=fake_answer["approved"], approver="dba", comment="go")

    fake_answer = {"approved": True}
    fake.answer = fake_answer  # type: ignore[attr-defined]
    for module in (flow_module, undo_module):
        monkeypatch.setattr(module, "request_approval", approve)
    return fake


def _run(dsn: SecretStr, controls: ChangeControls = CONTROLS, **fields: Any) -> Any:
    guard = SchemaGuard(kind="alembic", dsn=dsn, script_location=DEMO)
    request = flow_module.MigrationFailureRequest(namespace="prod", deployment="web", schema_guard=guard, **fields)
    return flow_module.migration_failure(request=request, controls=controls)


def test_after_a_failed_expand_it_pauses_rolls_back_to_dual_read_code_and_downgrades(
    kube: FakeKube, dsn: SecretStr
) -> None:
    at(dsn, "expand@head")
    result = _run(dsn)
    assert result.outcome == "changed" and result.rollback_to_revision == 2
    assert kube.kinds() == ["paused", "resumed", "rollback", "annotated", "annotated"]
    paused = kube.writes[0][1]
    assert paused["rollbook.dev/action"] == "pause" and paused["rollbook.dev/reason"] == CONTROLS.reason
    assert rules.read_record(paused, (E,)) == rules.FailureRecord(failed_heads=(E,), downgrade_to=U)
    assert kube.writes[2] == ("rollback", "app:2")
    downgraded = kube.writes[4][1]
    assert downgraded["rollbook.dev/schema-from"] == E and downgraded["rollbook.dev/schema-to"] == U
    assert read_alembic_heads.fn(dsn) == (U,) and "new_email" not in columns(dsn)
    assert [s.status for s in result.steps] == ["done", "done", "done"]
    assert result.evidence["versions"] == [E] and result.evidence_after["versions"] == [U]
    assert result.heads_before == [E] and result.heads_after == [U]
    assert result.pod_errors == {"web-3-x": ["CrashLoopBackOff"]}
    assert "DROP COLUMN new_email" in result.steps[2].sql


def test_a_re_run_continues_from_the_real_state_and_changes_nothing_more(kube: FakeKube, dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    _run(dsn)
    writes = len(kube.writes)
    again = _run(dsn)
    assert again.outcome == "unchanged" and read_alembic_heads.fn(dsn) == (U,)  # not walked back to base
    assert [s.status for s in again.steps] == ["already", "already", "already"]
    assert kube.kinds()[writes:] == ["annotated"]  # the record only, no pause, no rollback
    assert "users" in [t for t in _tables(dsn)]


def _tables(dsn: SecretStr) -> list[str]:
    with sqlite3.connect(dsn.get_secret_value().removeprefix("sqlite:///")) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]


def test_a_re_run_after_a_crash_once_paused_does_not_pause_again(
    kube: FakeKube, dsn: SecretStr, monkeypatch: pytest.MonkeyPatch
) -> None:
    at(dsn, "expand@head")
    monkeypatch.setattr(flow_module, "deployment_undo", _crash)
    with pytest.raises(RuntimeError, match="worker killed"):
        _run(dsn)
    assert kube.kinds() == ["paused", "resumed"] and read_alembic_heads.fn(dsn) == (E,)
    kube.deployment["spec"]["paused"] = True  # say the person paused it again meanwhile
    monkeypatch.setattr(flow_module, "deployment_undo", undo_module.deployment_undo)
    result = _run(dsn)
    assert result.steps[0].status == "already" and result.steps[0].detail == "paused already"
    assert result.rollback_to_revision == 2 and read_alembic_heads.fn(dsn) == (U,)


def _crash(*_: Any) -> Any:
    raise RuntimeError("worker killed")


def test_after_contract_the_downgrade_is_refused_with_the_script_s_reason(kube: FakeKube, dsn: SecretStr) -> None:
    at(dsn, "contract@head")
    result = _run(dsn)
    assert result.outcome == "changed" and result.rollback_to_revision == 2  # the app still goes back
    assert [s.status for s in result.steps] == ["done", "done", "refused"]
    assert "no usable downgrade" in result.steps[2].detail and "restore from a backup" in result.steps[2].detail
    assert read_alembic_heads.fn(dsn) == (C,) and "email" not in columns(dsn)
    assert "schema-downgrade" not in str(kube.writes)


def test_plan_mode_shows_every_step_with_the_downgrade_sql_and_changes_nothing(kube: FakeKube, dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    result = _run(dsn, CONTROLS.model_copy(update={"plan": True}))
    assert result.outcome == "planned" and "nothing changed" in result.summary
    assert [s.status for s in result.steps] == ["planned", "planned", "planned"]
    assert "DROP COLUMN new_email" in result.steps[2].sql and "revision 2" in result.steps[1].detail
    assert kube.writes == [] and kube.approvals == [] and read_alembic_heads.fn(dsn) == (E,)


def test_not_approved_changes_nothing(kube: FakeKube, dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    kube.answer["approved"] = False  # type: ignore[attr-defined]
    state = flow_module.migration_failure(
        request=flow_module.MigrationFailureRequest(
            namespace="prod",
            deployment="web",
            schema_guard=SchemaGuard(kind="alembic", dsn=dsn, script_location=DEMO),
        ),
        controls=CONTROLS.model_copy(update={"require_approval": True}),
        return_state=True,
    )
    assert state.name == "NotApproved" and kube.writes == [] and read_alembic_heads.fn(dsn) == (E,)
    assert [c.require_approval for c in kube.approvals] == [True]  # asked once, by this run


def test_approved_once_the_undo_sub_flow_is_not_asked_again(kube: FakeKube, dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    result = _run(dsn, CONTROLS.model_copy(update={"require_approval": True}))
    assert result.outcome == "changed" and result.approval == "go"
    assert [c.require_approval for c in kube.approvals] == [True, False]


def test_the_restored_revision_must_declare_the_downgrade_target(kube: FakeKube, dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    kube.replica_sets[1]["spec"]["template"]["metadata"]["annotations"][ANNOTATION] = f"{E},{C}"  # no 0001
    result = _run(dsn)
    assert result.rollback_to_revision == 2 and result.steps[2].status == "refused"
    assert "would break the code now running" in result.steps[2].detail and read_alembic_heads.fn(dsn) == (E,)


def test_no_revision_reads_the_schema_refuses_before_anything_changes(kube: FakeKube, dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    for rs in kube.replica_sets[:2]:
        rs["spec"]["template"]["metadata"]["annotations"][ANNOTATION] = U
    with pytest.raises(flow_module.RollbackImpossible, match="roll forward"):
        _run(dsn)
    assert kube.writes == [] and read_alembic_heads.fn(dsn) == (E,)


def test_downgrade_false_keeps_the_schema(kube: FakeKube, dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    result = _run(dsn, downgrade=False)
    assert result.steps[2].status == "skipped" and read_alembic_heads.fn(dsn) == (E,)


def test_an_explicit_downgrade_to_is_used(kube: FakeKube, dsn: SecretStr) -> None:
    at(dsn, "expand@head")
    result = _run(dsn, downgrade_to=E)  # the schema is to stay where it is: nothing to downgrade
    assert result.downgrade_to == E and result.steps[2].status == "already" and read_alembic_heads.fn(dsn) == (E,)
    assert result.rollback_to_revision == 2


def test_the_request_needs_an_alembic_database_with_its_scripts(dsn: SecretStr) -> None:
    with pytest.raises(ValidationError, match="kind=alembic"):
        flow_module.MigrationFailureRequest(
            deployment="web", schema_guard=SchemaGuard(kind="golang-migrate", dsn=SecretStr("postgresql://h/d"))
        )


def test_the_report_shows_steps_sql_locks_aborted_sessions_and_pod_errors() -> None:
    from rollbook.reports.migration_failure import MigrationFailureResult, StepRecord, result_markdown

    lock = {"pid": "7", "locktype": "advisory", "mode": "ExclusiveLock", "granted": "True", "query": "SELECT a|b"}
    result = MigrationFailureResult(
        outcome="changed",
        summary="done",
        namespace="prod",
        deployment="web",
        database="db:5432/app",
        heads_before=[E],
        heads_after=[U],
        steps=[StepRecord(step="downgrade", status="done", detail="x", sql="ALTER TABLE users DROP COLUMN new_email")],
        evidence={"where": "db:5432/app", "versions": [E], "locks": [lock], "aborted": [{"pid": "9", "query": "1/0"}]},
        pod_errors={"web-3-x": ["CrashLoopBackOff"]},
    )
    text = result_markdown(result)
    assert "| 7 | advisory | ExclusiveLock | True |" in text and "SELECT a\\|b" in text
    assert "|---|---|---|---|---|---|---|---|---|" in text and "pid 9" in text
    assert "DROP COLUMN new_email" in text and "web-3-x: CrashLoopBackOff" in text
    assert "0002_expand_new_email → 0001_users" in text
