"""The migration-aware rollback guard on the sandbox: a real Deployment's revisions (kwok) declaring their schema
ranges, and golang-migrate's real version table in the sandbox's PostgreSQL (one schema per test).

The guide's example after contract: revision 4 runs the dual-read code (`3..7`), revision 5 the pre-expand code
(`1..5`, marked rolled out by rollbook), revision 6 the new-only code (`7..`) crash-looping; the schema moved to
version 7. An undo to the pre-expand code is refused naming the schema; last-known-good skips it and picks the
dual-read revision; an override with approval rolls back anyway and is annotated."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.flow_runs import resume_flow_run
from pydantic import SecretStr

from flows._schema_gate import SchemaGuardRefused
from flows.deployment_undo import UndoRequest, deployment_undo
from flows.last_known_good import LastKnownGoodRequest, last_known_good
from rollbook.change import ChangeControls
from rollbook.schema_compat import ANNOTATION
from sandbox import datastores
from sandbox.cluster import Sandbox
from sandbox.faults import FAULT_LABEL
from sandbox.registry import SandboxRegistries
from sandbox.services import wait_until
from tasks.schema_guard import SchemaGuard

CONTROLS = ChangeControls(reason="integration test: schema guard", requested_by="pytest")
GUARD_ANNOTATION = "rollbook.dev/schema-guard"


def golang_migrate_at(dsn: str, schema: str, version: int) -> None:
    """The table as golang-migrate's postgres driver creates and sets it (one row, replaced on every step)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (version bigint NOT NULL PRIMARY KEY, "
            "dirty boolean NOT NULL)"
        )
        conn.execute(f"TRUNCATE {schema}.schema_migrations")
        conn.execute(f"INSERT INTO {schema}.schema_migrations (version, dirty) VALUES (%s, false)", (version,))


@pytest.fixture
def dsn(sandbox: Sandbox) -> str:
    return datastores.database_url(sandbox.cfg)


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    name = "guard_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def _release(apps: client.AppsV1Api, namespace: str, image: str, declared: str, *, crash: bool = False) -> None:
    """A new revision: the image and its schema declaration on the pod template (crash: it crash-loops)."""
    labels = {FAULT_LABEL: "CrashLoopBackOff"} if crash else {}
    patch = {
        "spec": {
            "template": {
                "metadata": {"annotations": {ANNOTATION: declared}, "labels": labels},
                "spec": {"containers": [{"name": "demo-app", "image": image}]},
            }
        }
    }
    apps.patch_namespaced_deployment("web", namespace, patch)


def _status(sandbox: Sandbox, namespace: str) -> None:
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=90s", "-n", namespace)


def _live(apps: client.AppsV1Api, namespace: str) -> tuple[str, dict[str, str]]:
    deployment = apps.read_namespaced_deployment("web", namespace)
    return deployment.spec.template.spec.containers[0].image, dict(deployment.metadata.annotations or {})


def _paused_ids() -> set[Any]:
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            )
        )
    return {r.id for r in runs}


def _wait_paused(known: set[Any], timeout: float = 60) -> FlowRun:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with get_client(sync_client=True) as prefect:
            runs = prefect.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
        fresh = [r for r in runs if r.id not in known]
        if fresh:
            return fresh[0]
        time.sleep(0.3)
    raise TimeoutError("no paused flow run appeared")


def _resume_approved(run: FlowRun) -> None:
    last: Exception | None = None
    for _ in range(20):  # the input schema is saved just after the run turns PAUSED: a resume can race it
        try:
            resume_flow_run(run.id, run_input={"approved": True, "approver": "dba", "comment": "data is backfilled"})
            return
        except RuntimeError as exc:
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"could not resume {run.id}: {last}")


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_rollbacks_past_the_schema_are_refused_last_known_good_picks_the_compatible_one_override_is_approved(
    sandbox: Sandbox, apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, dsn: str, schema: str
) -> None:
    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    old, dual, new = (registries.image(v) for v in ("1.0.0", "1.1.0", "1.2.0"))
    guard = SchemaGuard(kind="golang-migrate", dsn=SecretStr(dsn), table=f"{schema}.schema_migrations")
    where = {"kubeconfig_path": str(sandbox.cfg.kubeconfig), "namespace": namespace, "deployment": "web"}

    def undo(controls: ChangeControls = CONTROLS, **fields: Any) -> Any:
        request = UndoRequest(**where, schema_guard=guard, wait_timeout_seconds=90, **fields)
        return deployment_undo(request, controls)

    golang_migrate_at(dsn, schema, 3)  # before the expand
    sandbox.kubectl("create", "deployment", "web", f"--image={old}", "--replicas=2", "-n", namespace)
    _status(sandbox, namespace)
    _release(apps, namespace, old, "1..5")  # revision 2: pre-expand code, declared
    _status(sandbox, namespace)
    _release(apps, namespace, dual, "3..7")  # revision 3: reads both shapes
    _status(sandbox, namespace)
    # rollbook's own rollbacks (compatible at version 3) leave the completion markers last-known-good needs
    assert undo().to_revision == 2  # pre-expand code again, as revision 4
    assert undo(to_revision=3).to_revision == 3  # dual-read, as revision 5
    assert undo(to_revision=4).to_revision == 4  # pre-expand, as revision 6, marked rolled out
    image, notes = _live(apps, namespace)
    assert image == old and notes[GUARD_ANNOTATION].startswith("compatible: ") and "1..5" in notes[GUARD_ANNOTATION]

    golang_migrate_at(dsn, schema, 7)  # expand, backfill, contract: the old column is gone
    _release(apps, namespace, new, "7..", crash=True)  # revision 7: new-only code, crash-looping

    def crash_looping() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app=web,{FAULT_LABEL}=CrashLoopBackOff").items
        return any(
            s.state.waiting and s.state.waiting.reason == "CrashLoopBackOff"
            for p in pods
            for s in p.status.container_statuses or []
        )

    wait_until(crash_looping, 120, "the new pod to crash-loop")
    before = apps.read_namespaced_deployment("web", namespace).metadata.resource_version

    # 1. the plain undo (previous: revision 6, the pre-expand code) is refused naming the schema
    with pytest.raises(SchemaGuardRefused) as refused:
        undo()
    message = str(refused.value)
    assert "revision 6" in message and "golang-migrate version 7" in message and "1..5" in message
    assert "to_revision=5" in message and "Nothing changed" in message
    assert apps.read_namespaced_deployment("web", namespace).metadata.resource_version == before
    assert _live(apps, namespace)[0] == new

    # 2. last-known-good skips the incompatible revision 6 and picks the dual-read revision 5
    report = last_known_good(LastKnownGoodRequest(**where, schema_guard=guard))
    assert report["revision"] == 5 and report["images"] == [dual]
    rows = {row["revision"]: row for row in report["candidates"]}
    assert rows[6]["schema"].startswith("incompatible: ") and "chosen" not in rows[6]
    result = undo(last_known_good=True)
    assert result.outcome == "changed" and result.to_revision == 5 and result.rollout["done"]
    image, notes = _live(apps, namespace)
    assert image == dual and notes[GUARD_ANNOTATION].startswith("compatible: ")

    # 3. an override asks for approval although the controls do not, and is recorded
    controls = CONTROLS.model_copy(update={"approval_poll_seconds": 1})
    known = _paused_ids()
    thread, out = _in_thread(lambda: undo(controls, to_revision=6, override_schema_guard=True))
    run = _wait_paused(known)
    assert _live(apps, namespace)[0] == dual  # nothing changes while the run waits
    _resume_approved(run)
    thread.join(180)
    assert "error" not in out, out.get("error")
    assert out["result"].outcome == "changed" and out["result"].to_revision == 6
    image, notes = _live(apps, namespace)
    assert image == old
    assert notes[GUARD_ANNOTATION].startswith("OVERRIDDEN (approval required), incompatible: ")
    assert "golang-migrate version 7" in notes[GUARD_ANNOTATION]
    assert notes["rollbook.dev/approved-by"] == "dba"
