"""The schema guard with helm and Alembic, on the sandbox: the guide's example after contract, with the demo schema
(examples/alembic-demo, `users.email` -> `new_email`) really migrated in the sandbox's PostgreSQL and the demo
chart's revisions declaring, through `podAnnotations`, the Alembic revisions their code works with:
revision 1 the pre-expand code (`0001_users`), revision 2 the dual-read code (every revision), revision 3 the
new-only code (expand and contract). Once contract has run, helm-rollback to revision 1 is refused naming the
schema and the compatible revision; the default rollback (to revision 2, the dual-read code) goes ahead."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from helm_helpers import CONTROLS, helm_deploy, history, image, repo, target_fields
from kubernetes import client
from pydantic import SecretStr

from flows._schema_gate import SchemaGuardRefused
from flows.helm_rollback import HelmRollbackRequest, helm_rollback
from rollbook.schema_compat import ANNOTATION
from sandbox import datastores
from sandbox.cluster import Sandbox
from tasks.schema_guard import SchemaGuard
from tasks.schema_migrations import upgrade_schema

DEMO = str(Path(__file__).resolve().parents[2] / "examples" / "alembic-demo")
ROOT, EXPAND, CONTRACT = "0001_users", "0002_expand_new_email", "0003_contract_drop_email"


@pytest.fixture
def dsn(sandbox: Sandbox) -> Iterator[str]:
    """A schema of its own, first on the search_path: Alembic's table and `users` are made there."""
    base = datastores.database_url(sandbox.cfg)
    schema = "guardal_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{base}?options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _migrate(dsn: str, target: str) -> None:
    bounds = {"statement_timeout_seconds": 30, "lock_timeout_seconds": 5, "application_name": "pytest"}
    upgrade_schema.fn(SecretStr(dsn), DEMO, target, **bounds)


def _release(sandbox: Sandbox, chart: Path, namespace: str, tag: str, compatible: list[str]) -> None:
    annotations = json.dumps({ANNOTATION: ",".join(compatible)})
    assert helm_deploy(sandbox, chart, namespace, tag, f"--set-json=podAnnotations={annotations}")


def test_helm_rollback_past_the_alembic_schema_is_refused_and_the_dual_read_revision_is_allowed(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path, dsn: str
) -> None:
    _migrate(dsn, ROOT)
    _release(sandbox, demo_chart, namespace, "1.0.0", [ROOT])  # the pre-expand code
    _migrate(dsn, "expand@head")
    _release(sandbox, demo_chart, namespace, "1.1.0", [ROOT, EXPAND, CONTRACT])  # reads both shapes
    _migrate(dsn, "contract@head")
    _release(sandbox, demo_chart, namespace, "1.2.0", [EXPAND, CONTRACT])  # the new shape only
    assert history(sandbox, namespace) == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    guard = SchemaGuard(kind="alembic", dsn=SecretStr(dsn), script_location=DEMO)
    fields = target_fields(sandbox, namespace, timeout_seconds=60)

    with pytest.raises(SchemaGuardRefused) as refused:
        helm_rollback(HelmRollbackRequest(**fields, revision=1, schema_guard=guard), CONTROLS)
    message = str(refused.value)
    assert "alembic" in message and CONTRACT in message and ROOT in message
    assert "revision 2" in message  # the newest compatible one, offered instead
    assert history(sandbox, namespace)[-1] == (3, "deployed")  # nothing changed
    assert image(apps, namespace) == f"{repo(sandbox)}:1.2.0"

    result = helm_rollback(HelmRollbackRequest(**fields, schema_guard=guard), CONTROLS)
    assert (result.outcome, result.to_revision, result.new_revision) == ("changed", 2, 4)
    assert image(apps, namespace) == f"{repo(sandbox)}:1.1.0"
    assert history(sandbox, namespace)[-1] == (4, "deployed")
    audit = apps.read_namespaced_deployment("demo-demo-app", namespace).metadata.annotations
    assert "compatible" in audit["rollbook.dev/schema-guard"] and CONTRACT in audit["rollbook.dev/schema-guard"]
