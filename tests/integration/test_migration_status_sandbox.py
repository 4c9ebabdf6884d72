"""The golang-migrate status provider and the checklist's DB-migration check on the sandbox's PostgreSQL:
real tables, as golang-migrate creates them (version bigint primary key, dirty boolean), one schema per test."""

from __future__ import annotations

import socket
import uuid
import zlib
from collections.abc import Iterator

import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from rollbook.checklist import Status
from sandbox import datastores
from sandbox.cluster import Sandbox
from tasks.checks.db_migration import check_db_migration
from tasks.migrations import MigrationCheck, MigrationUnavailable, engine_for


@pytest.fixture
def dsn(sandbox: Sandbox) -> str:
    return datastores.database_url(sandbox.cfg)


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    name = "mig_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def golang_migrate_at(dsn: str, schema: str, version: int, *, dirty: bool) -> None:
    """The table as golang-migrate's postgres driver creates and sets it (one row, replaced on every step)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (version bigint NOT NULL PRIMARY KEY, "
            "dirty boolean NOT NULL)"
        )
        conn.execute(f"TRUNCATE {schema}.schema_migrations")
        conn.execute(f"INSERT INTO {schema}.schema_migrations (version, dirty) VALUES (%s, %s)", (version, dirty))


def check(dsn: str, schema: str, expected: str) -> tuple[Status, str]:
    config = MigrationCheck(
        kind="golang-migrate", expected_version=expected, dsn=SecretStr(dsn), table=f"{schema}.schema_migrations"
    )
    answer = check_db_migration.fn(config)
    return answer.status, answer.reason


def test_at_version_behind_ahead_dirty_and_missing(dsn: str, schema: str) -> None:
    assert check(dsn, schema, "20260101120000") == (
        Status.FAIL,
        f"golang-migrate: no table {schema}.schema_migrations: no migration has run here "
        "(expected version 20260101120000)",
    )
    golang_migrate_at(dsn, schema, 20260101120000, dirty=False)
    assert check(dsn, schema, "20260101120000") == (Status.PASS, "golang-migrate: at version 20260101120000, clean")
    status, reason = check(dsn, schema, "20260201000000")
    assert status == Status.FAIL
    assert reason == "golang-migrate: database behind: at version 20260101120000, the release expects 20260201000000"
    status, reason = check(dsn, schema, "20251201000000")
    assert status == Status.FAIL and reason.startswith("golang-migrate: database ahead: at version 20260101120000")
    golang_migrate_at(dsn, schema, 20260201000000, dirty=True)  # the next migration started and did not finish
    status, reason = check(dsn, schema, "20260201000000")
    assert status == Status.FAIL and "version 20260201000000 is dirty" in reason and "migrate force" in reason


def test_a_migration_holding_golang_migrates_lock_is_in_progress(dsn: str, schema: str) -> None:
    """golang-migrate takes pg_advisory_lock(GenerateAdvisoryLockId(database, schema, table)) for its whole run;
    another session holding that key means a migration is running, even while the row is still clean."""
    golang_migrate_at(dsn, schema, 7, dirty=False)
    key = (zlib.crc32(f"{schema}\x00schema_migrations\x00{datastores.DB_NAME}".encode()) * 1486364155) % 2**32
    with psycopg.connect(dsn, autocommit=True) as migrating:
        migrating.execute("SELECT pg_advisory_lock(%s)", (key,))
        status, reason = check(dsn, schema, "7")
        assert status == Status.FAIL and reason.startswith("golang-migrate: a migration is running now (at 7)"), reason
        migrating.execute("SELECT pg_advisory_unlock(%s)", (key,))
    assert check(dsn, schema, "7") == (Status.PASS, "golang-migrate: at version 7, clean")


def test_the_default_table_is_found_through_the_search_path(dsn: str, schema: str) -> None:
    golang_migrate_at(dsn, schema, 7, dirty=False)
    scoped = dsn + f"?options=-csearch_path%3D{schema}"
    answer = check_db_migration.fn(MigrationCheck(kind="golang-migrate", expected_version="7", dsn=SecretStr(scoped)))
    assert answer.status == Status.PASS, answer.reason


@pytest.mark.parametrize("options", ["", "?options=-cdefault_transaction_read_only%3Doff"])
def test_the_provider_session_is_read_only(dsn: str, schema: str, options: str) -> None:
    """Even a DSN asking for a writable session gets a read-only one: rollbook's setting comes last."""
    engine = engine_for(dsn + options)
    try:
        with engine.connect() as conn, pytest.raises(SQLAlchemyError, match="read-only transaction"):
            conn.execute(text(f"CREATE TABLE {schema}.should_not_exist (a int)"))
    finally:
        engine.dispose()
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)).fetchone()
    assert found == (0,)


def test_wrong_password_is_an_error_that_never_shows_it(sandbox: Sandbox, schema: str) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    dsn = f"postgresql://{datastores.DB_ROLE}:{wrong}@127.0.0.1:{sandbox.cfg.port('postgres')}/{datastores.DB_NAME}"
    status, reason = check(dsn, schema, "1")
    assert status == Status.ERROR and "password authentication failed" in reason, reason
    assert wrong not in reason


def test_unreachable_database_is_transient_and_named(schema: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MigrationUnavailable) as refused:
        check(f"postgresql://rollbook:secret@127.0.0.1:{port}/rollbook", schema, "1")
    assert refused.value.transient  # the task's DATABASE_READ policy retries it
    assert str(refused.value).startswith(f"cannot read migration status from 127.0.0.1:{port}/rollbook: ")
    assert "secret" not in str(refused.value)
