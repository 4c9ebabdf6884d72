"""migration-failure on the sandbox: the demo schema (examples/alembic-demo) migrated by real Alembic in the
sandbox's PostgreSQL (one schema per test, first on the search_path), and a kwok Deployment whose revisions
declare the schema they read (`rollbook.dev/schema-compatible`).

Revisions: pre-expand code (`0001`), dual-read code (`0001,0002,0003`), new-only code (`0002,0003`) that
crash-loops after the migration. After a failed expand: plan changes nothing; the flow pauses, rolls back to
the dual-read revision, downgrades 0002 -> 0001, and the report holds the version table, a lock another
session holds and an aborted session. After a contract on a Deployment already paused by a person: the app
goes back, the downgrade is refused with the script's own reason, the schema stays."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from kubernetes import client
from pydantic import SecretStr

from flows.deployment_undo import UndoRequest, deployment_undo
from flows.migration_failure import MigrationFailureRequest, migration_failure
from rollbook.change import ChangeControls
from rollbook.migration_failure import RECORD_ANNOTATION
from rollbook.schema_compat import ANNOTATION
from sandbox import datastores
from sandbox.cluster import Sandbox
from sandbox.faults import FAULT_LABEL
from sandbox.registry import SandboxRegistries
from sandbox.services import wait_until
from tasks.schema_guard import SchemaGuard
from tasks.schema_migrations import upgrade_schema

DEMO = str(Path(__file__).resolve().parents[2] / "examples" / "alembic-demo")
BOUNDS: dict[str, Any] = {"statement_timeout_seconds": 30, "lock_timeout_seconds": 5, "application_name": "pytest"}
CONTROLS = ChangeControls(reason="integration test: migration failure", requested_by="pytest")
U, E, C = "0001_users", "0002_expand_new_email", "0003_contract_drop_email"


def run(dsn: str, *statements: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            cur = conn.execute(statement)
            out = cur.fetchall() if cur.description else []
    return out


@pytest.fixture
def base_dsn(sandbox: Sandbox) -> str:
    return datastores.database_url(sandbox.cfg)


@pytest.fixture
def schema(base_dsn: str) -> Iterator[str]:
    name = "mf_" + uuid.uuid4().hex[:10]
    run(base_dsn, f"CREATE SCHEMA {name}")
    yield name
    run(base_dsn, f"DROP SCHEMA {name} CASCADE")


def columns(base_dsn: str, schema: str) -> list[str]:
    found = run(
        base_dsn,
        f"SELECT column_name FROM information_schema.columns WHERE table_schema = '{schema}' "
        "AND table_name = 'users' ORDER BY ordinal_position",
    )
    return [str(r[0]) for r in found]


def versions(base_dsn: str, schema: str) -> list[str]:
    return [str(r[0]) for r in run(base_dsn, f"SELECT version_num FROM {schema}.alembic_version")]


def _release(apps: client.AppsV1Api, namespace: str, image: str, declared: str, *, crash: bool = False) -> None:
    labels = {FAULT_LABEL: "CrashLoopBackOff"} if crash else {FAULT_LABEL: None}
    patch = {
        "spec": {
            "template": {
                "metadata": {"annotations": {ANNOTATION: declared}, "labels": labels},
                "spec": {"containers": [{"name": "demo-app", "image": image}]},
            }
        }
    }
    apps.patch_namespaced_deployment("web", namespace, patch)


def _crash_looping(core: client.CoreV1Api, namespace: str) -> bool:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app=web,{FAULT_LABEL}=CrashLoopBackOff").items
    return any(
        s.state.waiting and s.state.waiting.reason == "CrashLoopBackOff"
        for p in pods
        for s in p.status.container_statuses or []
    )


def test_migration_failure_pauses_rolls_back_downgrades_and_refuses_a_downgrade_that_does_not_exist(
    sandbox: Sandbox, apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, base_dsn: str, schema: str
) -> None:
    dsn = f"{base_dsn}?options={quote(f'-csearch_path={schema}')}"
    secret = SecretStr(dsn)
    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    old, dual, new = (registries.image(v) for v in ("1.0.0", "1.1.0", "1.2.0"))
    guard = SchemaGuard(kind="alembic", dsn=secret, script_location=DEMO)
    where = {"kubeconfig_path": str(sandbox.cfg.kubeconfig), "namespace": namespace, "deployment": "web"}

    def status() -> None:
        sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=90s", "-n", namespace)

    def flow(controls: ChangeControls = CONTROLS, **fields: Any) -> Any:
        request = MigrationFailureRequest(**where, schema_guard=guard, wait_timeout_seconds=90, **fields)
        return migration_failure(request, controls)

    upgrade_schema.fn(secret, DEMO, U, **BOUNDS)
    sandbox.kubectl("create", "deployment", "web", f"--image={old}", "--replicas=2", "-n", namespace)
    status()
    _release(apps, namespace, old, U)  # revision 2: pre-expand code
    status()
    _release(apps, namespace, dual, f"{U},{E},{C}")  # revision 3: reads both shapes
    status()
    # rollbook's own undos leave the completion markers last-known-good needs (as in the schema-guard drill)
    undo = UndoRequest(**where, schema_guard=guard, wait_timeout_seconds=90)
    assert deployment_undo(undo, CONTROLS).to_revision == 2
    again = UndoRequest(**where, schema_guard=guard, wait_timeout_seconds=90, to_revision=3)
    assert deployment_undo(again, CONTROLS).to_revision == 3  # dual-read live as revision 5, marked

    # the failed release: expand applied, the new-only code crash-loops
    upgrade_schema.fn(secret, DEMO, "expand@head", **BOUNDS)
    _release(apps, namespace, new, f"{E},{C}", crash=True)
    wait_until(lambda: _crash_looping(core, namespace), 120, "the new pod to crash-loop")
    before = apps.read_namespaced_deployment("web", namespace).metadata.resource_version

    # plan: every step shown, the downgrade's SQL included; nothing changes
    planned = flow(CONTROLS.model_copy(update={"plan": True}))
    assert planned.outcome == "planned" and [s.status for s in planned.steps] == ["planned"] * 3
    assert planned.rollback_to_revision == 5 and "DROP COLUMN new_email" in planned.steps[2].sql
    assert apps.read_namespaced_deployment("web", namespace).metadata.resource_version == before
    assert versions(base_dsn, schema) == [E] and "new_email" in columns(base_dsn, schema)

    # evidence: another session holds an advisory lock, a third is stuck in an aborted transaction
    holder = psycopg.connect(dsn, autocommit=True)
    aborted = psycopg.connect(dsn)
    try:
        holder.execute("SELECT pg_advisory_lock(4242)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            aborted.execute("SELECT 1/0")
        result = flow()
    finally:
        holder.close()
        aborted.close()
    assert result.outcome == "changed", result.summary
    assert [s.status for s in result.steps] == ["done", "done", "done"]
    assert result.rollback_to_revision == 5 and result.undo["outcome"] == "changed"
    deployment = apps.read_namespaced_deployment("web", namespace)
    assert deployment.spec.template.spec.containers[0].image == dual and not deployment.spec.paused
    notes = deployment.metadata.annotations
    assert notes["rollbook.dev/action"] == "schema-downgrade" and notes["rollbook.dev/schema-to"] == U
    assert E in notes[RECORD_ANNOTATION]
    assert versions(base_dsn, schema) == [U] and "new_email" not in columns(base_dsn, schema)
    assert result.evidence["versions"] == [E] and result.evidence_after["versions"] == [U]
    assert any(
        lock.get("locktype") == "advisory" and lock.get("granted") == "True" for lock in result.evidence["locks"]
    )
    assert any("1/0" in a.get("query", "") for a in result.evidence["aborted"])
    assert any(result.pod_errors.values())  # the crash-looping pods' reasons

    # a re-run finds everything done
    rerun = flow()
    assert rerun.outcome == "unchanged" and versions(base_dsn, schema) == [U]

    # contract this time, and a person already paused the rollout
    upgrade_schema.fn(secret, DEMO, "contract@head", **BOUNDS)
    _release(apps, namespace, new, f"{E},{C}", crash=True)
    wait_until(lambda: _crash_looping(core, namespace), 120, "the new pod to crash-loop")
    sandbox.kubectl("rollout", "pause", "deployment/web", "-n", namespace)
    time.sleep(1)
    refused = flow()
    assert [s.status for s in refused.steps] == ["already", "done", "refused"], refused.summary
    assert "restore from a backup" in refused.steps[2].detail
    deployment = apps.read_namespaced_deployment("web", namespace)
    assert deployment.spec.template.spec.containers[0].image == dual and not deployment.spec.paused
    assert versions(base_dsn, schema) == [C] and "email" not in columns(base_dsn, schema)
