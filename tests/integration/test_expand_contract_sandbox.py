"""expand-contract on the sandbox's PostgreSQL with the demo schema (examples/alembic-demo), the guide's own
example `users.email` -> `new_email`: plan mode, a crash mid-backfill resumed, contract refused and then approved
through the real Prefect pause, and the bad inputs: a failing script and a contract over rows not backfilled
leave no partial schema change (PostgreSQL DDL is transactional), a lock held elsewhere bounds the DDL's wait,
a wrong password (never shown) and an unreachable database. One schema per test (search_path in the DSN)."""

from __future__ import annotations

import importlib
import logging
import runpy
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from helm_helpers import resume, run_in_thread, wait_paused
from pydantic import SecretStr
from sqlalchemy import create_engine

from flows.expand_contract import ExpandContractRequest, expand_contract
from rollbook.change import ChangeControls, subflow_result
from rollbook.expand_contract import Backfill
from sandbox import datastores
from sandbox.cluster import Sandbox
from tasks.schema_migrations import SchemaMigrationError, read_schema_state, upgrade_schema

steps = importlib.import_module("flows._expand_contract_steps")
DEMO = str(Path(__file__).resolve().parents[2] / "examples" / "alembic-demo")
BACKFILL = {"table": "users", "key_column": "id", "old_column": "email", "new_column": "new_email"}
BOUNDS: dict[str, Any] = {"statement_timeout_seconds": 30, "lock_timeout_seconds": 2, "application_name": "pytest"}
CONTROLS = ChangeControls(reason="rename users.email (guide example)", requested_by="pytest")
E, C = "0002_expand_new_email", "0003_contract_drop_email"


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
    name = "ec_" + uuid.uuid4().hex[:10]
    run(base_dsn, f"CREATE SCHEMA {name}")
    yield name
    run(base_dsn, f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def dsn(base_dsn: str, schema: str) -> str:
    """The test's schema first on the search_path: Alembic's table and `users` are made there."""
    return f"{base_dsn}?options={quote(f'-csearch_path={schema}')}"


def columns(base_dsn: str, schema: str) -> list[str]:
    found = run(
        base_dsn,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = '"
        + schema
        + "' AND table_name = 'users' ORDER BY ordinal_position",
    )
    return [str(r[0]) for r in found]


def versions(base_dsn: str, schema: str) -> list[str]:
    return [str(r[0]) for r in run(base_dsn, f"SELECT version_num FROM {schema}.alembic_version")]


def seeded(dsn: str, rows: int) -> SecretStr:
    """The demo at its root revision with `rows` users in the old shape."""
    secret = SecretStr(dsn)
    upgrade_schema.fn(secret, DEMO, "0001_users", **BOUNDS)
    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        assert runpy.run_path(f"{DEMO}/seed.py")["seed"](engine, rows) == rows
    finally:
        engine.dispose()
    return secret


def request(dsn: SecretStr, **more: Any) -> ExpandContractRequest:
    fields = {"dsn": dsn, "script_location": DEMO, "backfill": BACKFILL, "batch_size": 500, "observe_seconds": 2}
    return ExpandContractRequest.model_validate({**fields, "observe_interval_seconds": 1, **more})


def test_plan_shows_postgres_sql_and_changes_nothing(dsn: str, base_dsn: str, schema: str) -> None:
    secret = seeded(dsn, 10)
    result = subflow_result(expand_contract(request(secret), CONTROLS.model_copy(update={"plan": True})))
    planned = {s.step: s.sql for s in result.steps}
    assert result.outcome == "planned" and result.phase_before == "not-expanded"
    assert "ALTER TABLE users ADD COLUMN new_email VARCHAR(255);" in planned["expand"]
    assert "ALTER TABLE users DROP COLUMN email;" in planned["contract"]
    assert "ALTER TABLE users ALTER COLUMN new_email SET NOT NULL;" in planned["contract"]
    assert "LIMIT 500" in planned["backfill"]
    assert columns(base_dsn, schema) == ["id", "name", "email"] and versions(base_dsn, schema) == ["0001_users"]


def test_guide_example_crash_mid_backfill_refused_then_approved_contract(
    dsn: str, base_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = seeded(dsn, 2500)
    real = steps.backfill_batch
    calls = {"n": 0}

    def crashing(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed mid-backfill")
        copied: int = real(*args, **kwargs)
        return copied

    monkeypatch.setattr(steps, "backfill_batch", crashing)
    with pytest.raises(RuntimeError, match="worker killed"):
        expand_contract(request(secret), CONTROLS)
    assert versions(base_dsn, schema) == [E] and columns(base_dsn, schema) == ["id", "name", "email", "new_email"]
    assert run(base_dsn, f"SELECT count(new_email) FROM {schema}.users") == [(1000,)]
    monkeypatch.setattr(steps, "backfill_batch", real)

    controls = CONTROLS.model_copy(update={"approval_poll_seconds": 1, "approval_timeout_seconds": 120})
    thread, out = run_in_thread(lambda: subflow_result(expand_contract(request(secret), controls)))
    resume(wait_paused(120).id, {"approved": False, "approver": "pytest", "comment": "not yet"})
    thread.join(180)
    assert "error" not in out, out.get("error")
    refused = out["result"]
    assert refused.phase_before == "expanded" and refused.phase_after == "backfilled", refused.summary
    assert (refused.backfilled_rows, refused.backfill_batches) == (1500, 3)  # resumed: no row copied twice
    assert "contract not approved" in refused.summary
    assert columns(base_dsn, schema) == ["id", "name", "email", "new_email"] and versions(base_dsn, schema) == [E]

    thread, out = run_in_thread(lambda: subflow_result(expand_contract(request(secret), controls)))
    resume(wait_paused(120).id, {"approved": True, "approver": "pytest", "comment": "dual-read code everywhere"})
    thread.join(180)
    assert "error" not in out, out.get("error")
    done = out["result"]
    assert done.outcome == "changed" and done.finished and done.approval == "dual-read code everywhere"
    assert [s.step for s in done.steps] == ["deploy", "backfill", "observe", "approve", "contract"]
    assert columns(base_dsn, schema) == ["id", "name", "new_email"] and versions(base_dsn, schema) == [C]
    assert run(base_dsn, f"SELECT count(*) FROM {schema}.users WHERE new_email LIKE 'user%@example.test'") == [(2500,)]
    assert run(
        base_dsn,
        "SELECT is_nullable FROM information_schema.columns WHERE table_schema = '"
        + schema
        + "' AND column_name = 'new_email'",
    ) == [("NO",)]


def test_a_failing_script_leaves_no_partial_schema_change(dsn: str, base_dsn: str, schema: str, tmp_path: Path) -> None:
    secret = seeded(dsn, 5)
    broken = tmp_path / "broken"
    shutil.copytree(DEMO, broken)
    script = broken / "versions" / "0002_expand_new_email.py"
    added = '    op.add_column("users", sa.Column("new_email", sa.String(255), nullable=True))'
    script.write_text(script.read_text().replace(added, added + '\n    op.execute("UPDATE no_such_table SET x = 1")'))
    with pytest.raises(SchemaMigrationError) as failed:
        upgrade_schema.fn(secret, str(broken), "expand@head", **BOUNDS)
    message = str(failed.value)
    assert 'relation "no_such_table" does not exist' in message and "rolled back" in message, message
    assert not failed.value.transient
    # the ADD COLUMN ran before the error, in the same transaction: it is gone, and no version was recorded
    assert columns(base_dsn, schema) == ["id", "name", "email"] and versions(base_dsn, schema) == ["0001_users"]


def test_contract_over_rows_not_backfilled_drops_nothing(dsn: str, base_dsn: str, schema: str) -> None:
    secret = seeded(dsn, 5)
    upgrade_schema.fn(secret, DEMO, "expand@head", **BOUNDS)
    with pytest.raises(SchemaMigrationError) as failed:
        upgrade_schema.fn(secret, DEMO, "contract@head", **BOUNDS)
    assert "new_email" in str(failed.value) and "rolled back" in str(failed.value), failed.value
    assert columns(base_dsn, schema) == ["id", "name", "email", "new_email"] and versions(base_dsn, schema) == [E]


def test_a_lock_held_elsewhere_bounds_the_ddl_wait(dsn: str, base_dsn: str, schema: str) -> None:
    secret = seeded(dsn, 5)
    with psycopg.connect(base_dsn) as reader:
        reader.execute(f"SELECT * FROM {schema}.users")  # an open transaction holding ACCESS SHARE
        with pytest.raises(SchemaMigrationError) as waited:
            upgrade_schema.fn(secret, DEMO, "expand@head", **BOUNDS)
        reader.rollback()
    assert "lock timeout" in str(waited.value) and waited.value.transient, waited.value
    assert columns(base_dsn, schema) == ["id", "name", "email"]
    assert upgrade_schema.fn(secret, DEMO, "expand@head", **BOUNDS)["after"] == [E]  # the retry then passes


def test_wrong_password_unreachable_and_unknown_label(
    sandbox: Sandbox, dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    port = sandbox.cfg.port("postgres")
    bad = SecretStr(f"postgresql://{datastores.DB_ROLE}:{wrong}@127.0.0.1:{port}/{datastores.DB_NAME}")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SchemaMigrationError) as refused:
        expand_contract(request(bad), CONTROLS)
    assert "password authentication failed" in str(refused.value) and not refused.value.transient
    assert wrong not in str(refused.value) and wrong not in caplog.text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    gone = SecretStr(f"postgresql://rollbook:{wrong}@127.0.0.1:{free}/rollbook")
    with pytest.raises(SchemaMigrationError) as unreachable:
        read_schema_state.fn(
            gone, DEMO, expand_target="expand@head", contract_target="contract@head", spec=Backfill(**BACKFILL)
        )
    assert unreachable.value.transient and f"127.0.0.1:{free}/rollbook" in str(unreachable.value)
    assert wrong not in str(unreachable.value)
    secret = seeded(dsn, 1)
    with pytest.raises(SchemaMigrationError, match="'expnd@head' is not in the scripts"):
        expand_contract(request(secret, expand_target="expnd@head"), CONTROLS)
