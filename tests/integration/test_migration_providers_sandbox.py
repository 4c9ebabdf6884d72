"""The Alembic, Flyway and Rails status providers and the DB-migration check on the sandbox's PostgreSQL: each
tool's version table as the tool creates it, one schema per test (the fixtures of
test_migration_status_sandbox.py, repeated here), and a migration in progress shown by a second session holding
locks."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from rollbook.checklist import CheckPolicy, Status, decide
from sandbox import datastores
from sandbox.cluster import Sandbox
from tasks.checks.db_migration import check_db_migration
from tasks.migrations import MigrationCheck, MigrationUnavailable
from tasks.migrations.rails import advisory_lock_id

ALEMBIC_DDL = (
    "CREATE TABLE {schema}.alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)
FLYWAY_DDL = (
    'CREATE TABLE {schema}."flyway_schema_history" ("installed_rank" INT NOT NULL, "version" VARCHAR(50), '
    '"description" VARCHAR(200) NOT NULL, "type" VARCHAR(20) NOT NULL, "script" VARCHAR(1000) NOT NULL, '
    '"checksum" INTEGER, "installed_by" VARCHAR(100) NOT NULL, "installed_on" TIMESTAMP NOT NULL DEFAULT now(), '
    '"execution_time" INTEGER NOT NULL, "success" BOOLEAN NOT NULL)',
    'ALTER TABLE {schema}."flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" '
    'PRIMARY KEY ("installed_rank")',
    'CREATE INDEX "flyway_schema_history_s_idx" ON {schema}."flyway_schema_history" ("success")',
)
RAILS_DDL = 'CREATE TABLE {schema}."schema_migrations" ("version" character varying NOT NULL PRIMARY KEY)'

REVISION_FILE = 'revision = "{rev}"\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n'
LINE = {"1a2b3c4d5e6f": None, "2b3c4d5e6f70": "1a2b3c4d5e6f", "3c4d5e6f7081": "2b3c4d5e6f70"}


def run(dsn: str, *statements: str, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params or None)


def check(dsn: str, kind: str, expected: str, schema: str, table: str, **more: object) -> tuple[Status, str]:
    config = MigrationCheck.model_validate(
        {"kind": kind, "expected_version": expected, "dsn": SecretStr(dsn), "table": f"{schema}.{table}", **more}
    )
    answer = check_db_migration.fn(config)
    return answer.status, answer.reason


@contextmanager
def ddl_in_another_session(dsn: str, target: str) -> Iterator[None]:
    """A long migration: another session's open transaction holding ACCESS EXCLUSIVE on `target`."""
    with psycopg.connect(dsn) as migrating:
        migrating.execute(f"LOCK TABLE {target} IN ACCESS EXCLUSIVE MODE")
        yield
        migrating.rollback()


@pytest.fixture
def dsn(sandbox: Sandbox) -> str:
    return datastores.database_url(sandbox.cfg)


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    name = "mig_" + uuid.uuid4().hex[:10]
    run(dsn, f"CREATE SCHEMA {name}")
    yield name
    run(dsn, f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def scripts(tmp_path: Path) -> str:
    (tmp_path / "versions").mkdir()
    for rev, down in LINE.items():
        (tmp_path / "versions" / f"{rev}_step.py").write_text(REVISION_FILE.format(rev=rev, down=repr(down)))
    return str(tmp_path)


def test_alembic_at_behind_missing_and_a_long_ddl(dsn: str, schema: str, scripts: str) -> None:
    alembic = {"script_location": scripts}
    status, reason = check(dsn, "alembic", "3c4d5e6f7081", schema, "alembic_version", **alembic)
    assert status == Status.FAIL and f"no table {schema}.alembic_version" in reason, reason
    run(dsn, ALEMBIC_DDL.format(schema=schema), f"INSERT INTO {schema}.alembic_version VALUES ('3c4d5e6f7081')")
    assert check(dsn, "alembic", "3c4d5e6f7081", schema, "alembic_version", **alembic) == (
        Status.PASS,
        "alembic: at version 3c4d5e6f7081, clean",
    )
    run(dsn, f"UPDATE {schema}.alembic_version SET version_num = '2b3c4d5e6f70'")
    status, reason = check(dsn, "alembic", "3c4d5e6f7081", schema, "alembic_version", **alembic)
    assert status == Status.FAIL and "database behind: at revision 2b3c4d5e6f70" in reason, reason
    run(
        dsn,
        f"CREATE TABLE {schema}.orders (id int)",
        f"UPDATE {schema}.alembic_version SET version_num = '3c4d5e6f7081'",
    )
    with ddl_in_another_session(dsn, f"{schema}.orders"):
        status, reason = check(dsn, "alembic", "3c4d5e6f7081", schema, "alembic_version", **alembic)
        assert status == Status.FAIL and "alembic: a migration is running now (at 3c4d5e6f7081)" in reason, reason
        assert f"AccessExclusiveLock on {schema}.orders" in reason
        answer = check_db_migration.fn(
            MigrationCheck(
                kind="alembic", expected_version="3c4d5e6f7081", dsn=SecretStr(dsn), table=f"{schema}.alembic_version"
            )
        )
        assert not decide([answer], CheckPolicy(), []).ready  # blocking by default
    assert check(dsn, "alembic", "3c4d5e6f7081", schema, "alembic_version", **alembic)[0] == Status.PASS


def test_alembic_own_table_and_a_ddl_waiting_behind_a_reader(dsn: str, schema: str, scripts: str) -> None:
    """The version table as Alembic itself creates and stamps it on PostgreSQL; then an ALTER TABLE queued behind
    a long read (it waits for ACCESS EXCLUSIVE, and every later query would queue behind it) is in progress too."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        context = MigrationContext.configure(conn, opts={"version_table_schema": schema})
        context.stamp(ScriptDirectory(scripts), "2b3c4d5e6f70")
    engine.dispose()
    alembic = {"script_location": scripts}
    status, reason = check(dsn, "alembic", "3c4d5e6f7081", schema, "alembic_version", **alembic)
    assert status == Status.FAIL and "database behind: at revision 2b3c4d5e6f70" in reason, reason
    run(dsn, f"CREATE TABLE {schema}.orders (id int)")
    with psycopg.connect(dsn) as reader, psycopg.connect(dsn, autocommit=True) as migrating:
        reader.execute(f"SELECT * FROM {schema}.orders")  # an open transaction holding ACCESS SHARE
        pid = migrating.info.backend_pid
        alter = threading.Thread(target=migrating.execute, args=(f"ALTER TABLE {schema}.orders ADD COLUMN x int",))
        alter.start()
        try:
            for _ in range(50):
                with psycopg.connect(dsn, autocommit=True) as probe:
                    waiting = probe.execute(
                        "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)
                    ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.1)
            status, reason = check(dsn, "alembic", "2b3c4d5e6f70", schema, "alembic_version", **alembic)
            assert status == Status.FAIL and f"pid {pid} waits for AccessExclusiveLock on {schema}.orders" in reason
        finally:
            reader.rollback()
            alter.join(timeout=10)
    assert check(dsn, "alembic", "2b3c4d5e6f70", schema, "alembic_version", **alembic)[0] == Status.PASS


@pytest.mark.parametrize("kind", ["alembic", "flyway", "rails"])
def test_wrong_password_and_unreachable_for_each_kind(sandbox: Sandbox, schema: str, kind: str) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    bad = f"postgresql://{datastores.DB_ROLE}:{wrong}@127.0.0.1:{sandbox.cfg.port('postgres')}/{datastores.DB_NAME}"
    status, reason = check(bad, kind, "1", schema, "t")
    assert status == Status.ERROR and "password authentication failed" in reason and wrong not in reason, reason
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MigrationUnavailable) as refused:
        check(f"postgresql://rollbook:{wrong}@127.0.0.1:{port}/rollbook", kind, "1", schema, "t")
    assert refused.value.transient and wrong not in str(refused.value)


def test_alembic_configured_advisory_lock_is_in_progress(dsn: str, schema: str) -> None:
    run(dsn, ALEMBIC_DDL.format(schema=schema), f"INSERT INTO {schema}.alembic_version VALUES ('a1')")
    key = -(2**40) - 7  # negative and above 32 bits: both halves of the key must match
    with psycopg.connect(dsn, autocommit=True) as tooling:
        tooling.execute("SELECT pg_advisory_lock(%s)", (key,))
        status, reason = check(dsn, "alembic", "a1", schema, "alembic_version", advisory_lock_key=key)
        assert status == Status.FAIL and f"advisory lock {key}" in reason, reason
        assert check(dsn, "alembic", "a1", schema, "alembic_version", advisory_lock_key=key + 1)[0] == Status.PASS
        tooling.execute("SELECT pg_advisory_unlock(%s)", (key,))
    assert check(dsn, "alembic", "a1", schema, "alembic_version", advisory_lock_key=key)[0] == Status.PASS


def test_flyway_at_behind_failed_missing_and_a_long_ddl(dsn: str, schema: str) -> None:
    status, reason = check(dsn, "flyway", "1.1", schema, "flyway_schema_history")
    assert status == Status.FAIL and "no table" in reason, reason
    run(dsn, *(statement.format(schema=schema) for statement in FLYWAY_DDL))
    insert = (
        f'INSERT INTO {schema}."flyway_schema_history" (installed_rank, version, description, type, script, '
        "checksum, installed_by, execution_time, success) VALUES (%s, %s, %s, %s, %s, 0, 'flyway', 5, %s)"
    )
    for row in [
        (1, "1", "init", "SQL", "V1__init.sql", True),
        (2, None, "views", "SQL", "R__views.sql", True),
        (3, "1.1", "add users", "SQL", "V1_1__add_users.sql", True),
    ]:
        run(dsn, insert, params=row)
    assert check(dsn, "flyway", "1.1", schema, "flyway_schema_history") == (
        Status.PASS,
        "flyway: at version 1.1, clean",
    )
    status, reason = check(dsn, "flyway", "1.2", schema, "flyway_schema_history")
    assert reason == "flyway: database behind: at version 1.1, the release expects 1.2"
    with ddl_in_another_session(dsn, f'{schema}."flyway_schema_history"'):
        status, reason = check(dsn, "flyway", "1.1", schema, "flyway_schema_history")
        assert status == Status.FAIL and "a migration is running now" in reason, reason
    run(dsn, insert, params=(4, "1.2", "split", "SQL", "V1_2__split.sql", False))
    status, reason = check(dsn, "flyway", "1.2", schema, "flyway_schema_history")
    assert status == Status.FAIL and "version 1.2 (split) failed, installed_rank 4" in reason, reason


def test_rails_at_behind_missing_and_activerecords_lock(dsn: str, schema: str) -> None:
    status, reason = check(dsn, "rails", "20260101120000", schema, "schema_migrations")
    assert status == Status.FAIL and "no table" in reason, reason
    run(dsn, RAILS_DDL.format(schema=schema))
    for version in ("20250101000000", "20260101120000", "99"):
        run(dsn, f'INSERT INTO {schema}."schema_migrations" VALUES (%s)', params=(version,))
    assert check(dsn, "rails", "20260101120000", schema, "schema_migrations") == (
        Status.PASS,
        "rails: at version 20260101120000, clean",
    )
    status, reason = check(dsn, "rails", "20260301000000", schema, "schema_migrations")
    assert reason == "rails: database behind: at version 20260101120000, the release expects 20260301000000"
    with psycopg.connect(dsn, autocommit=True) as migrating:
        database = migrating.execute("SELECT current_database()").fetchone()
        assert database is not None
        key = advisory_lock_id(str(database[0]))
        migrating.execute("SELECT pg_advisory_lock(%s)", (key,))
        status, reason = check(dsn, "rails", "20260101120000", schema, "schema_migrations")
        assert status == Status.FAIL and "ActiveRecord's migration lock" in reason, reason
        migrating.execute("SELECT pg_advisory_unlock(%s)", (key,))
    with ddl_in_another_session(dsn, f'{schema}."schema_migrations"'):
        assert check(dsn, "rails", "20260101120000", schema, "schema_migrations")[0] == Status.FAIL


def test_a_table_of_another_tool_is_an_error_not_a_retry(dsn: str, schema: str) -> None:
    run(dsn, RAILS_DDL.format(schema=schema))
    status, reason = check(dsn, "flyway", "1", schema, "schema_migrations")
    assert status == Status.ERROR and "installed_rank" in reason, reason
