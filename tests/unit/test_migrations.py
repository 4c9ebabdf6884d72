"""Migration-status providers and the checklist's judgement of them, on SQLite files (the PostgreSQL reading is
proven on the sandbox in tests/integration/test_checklist_sandbox.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from rollbook.checklist import Status
from tasks.checks.db_migration import check_db_migration, migration_result
from tasks.migrations import PROVIDERS, MigrationCheck, MigrationStatus, MigrationUnavailable, engine_for, make_provider


def golang_db(path: Path, rows: list[tuple[int, bool]] | None) -> str:
    """A SQLite file with golang-migrate's table (or none when `rows` is None); its DSN."""
    with sqlite3.connect(path) as conn:
        if rows is not None:
            conn.execute("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)")
            conn.executemany("INSERT INTO schema_migrations VALUES (?, ?)", rows)
    return f"sqlite:///{path}"


def GM(**fields: object) -> MigrationStatus:  # noqa: N802 - reads like the model in the table below
    return MigrationStatus.model_validate({"provider": "golang-migrate", **fields})


def read(dsn: str, table: str | None = None) -> MigrationStatus:
    engine = engine_for(dsn)
    try:
        return make_provider("golang-migrate", engine, table_name=table).read()
    finally:
        engine.dispose()


def test_golang_migrate_reads_version_and_dirty_flag(tmp_path: Path) -> None:
    clean = read(golang_db(tmp_path / "clean.db", [(20260101120000, False)]))
    assert (clean.current, clean.dirty, clean.table_found) == (["20260101120000"], False, True)
    assert clean.detail == "schema_migrations: version 20260101120000, dirty false"
    dirty = read(golang_db(tmp_path / "dirty.db", [(7, True)]))
    assert (dirty.current, dirty.dirty) == (["7"], True)
    empty = read(golang_db(tmp_path / "empty.db", []))
    assert empty.current == [] and empty.detail == "schema_migrations: empty"
    missing = read(golang_db(tmp_path / "none.db", None))
    assert not missing.table_found and missing.detail == "no table schema_migrations"


def test_golang_migrate_reads_a_renamed_table_and_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE app_migrations (version bigint, dirty boolean)")
        conn.execute("INSERT INTO app_migrations VALUES (3, 0)")
    before = path.read_bytes()
    assert read(f"sqlite:///{path}", "app_migrations").current == ["3"]
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("status", "expected", "verdict", "words"),
    [
        (GM(current=["42"]), "42", Status.PASS, "at version 42, clean"),
        (
            GM(current=["41"]),
            "42",
            Status.FAIL,
            "database behind: at version 41",
        ),
        (
            GM(current=["43"]),
            "42",
            Status.FAIL,
            "database ahead: at version 43",
        ),
        (GM(current=["42"], dirty=True), "42", Status.FAIL, "42 is dirty"),
        (GM(current=["a"], in_progress=True), "a", Status.FAIL, "a migration is running"),
        (GM(current=[]), "1", Status.FAIL, "no migration applied yet (expected version 1)"),
        (
            GM(current=[], table_found=False, detail="no table t"),
            "1",
            Status.FAIL,
            "no table t",
        ),
        (GM(current=["1", "2"]), "2", Status.FAIL, "several versions recorded (1, 2)"),
        (GM(current=["abc"]), "def", Status.FAIL, "at version abc, the release expects def"),
    ],
)
def test_migration_judgement(status: MigrationStatus, expected: str, verdict: Status, words: str) -> None:
    answer = migration_result(status, expected)
    assert answer.status == verdict and words in answer.reason, answer.reason
    assert answer.evidence["expected"] == expected


def test_check_reads_the_configured_database(tmp_path: Path) -> None:
    dsn = golang_db(tmp_path / "app.db", [(5, False)])
    at = check_db_migration.fn(MigrationCheck(kind="golang-migrate", expected_version="5", dsn=SecretStr(dsn)))
    assert at.status == Status.PASS and at.reason == "golang-migrate: at version 5, clean"
    behind = check_db_migration.fn(MigrationCheck(kind="golang-migrate", expected_version="6", dsn=SecretStr(dsn)))
    assert behind.status == Status.FAIL and "behind" in behind.reason
    no_driver = MigrationCheck(kind="golang-migrate", expected_version="5", dsn=SecretStr("nosuchdb://h/x"))
    refused = check_db_migration.fn(no_driver)
    assert refused.status == Status.ERROR and "no database driver for 'nosuchdb'" in refused.reason


def test_migration_config_is_validated() -> None:
    assert sorted(PROVIDERS) == ["golang-migrate"]
    with pytest.raises(ValidationError, match="exactly one of database_block or dsn"):
        MigrationCheck(kind="golang-migrate", expected_version="1")
    with pytest.raises(ValidationError, match="exactly one of database_block or dsn"):
        MigrationCheck(kind="golang-migrate", expected_version="1", database_block="db", dsn=SecretStr("sqlite://"))
    with pytest.raises(ValidationError, match="kind"):
        MigrationCheck(kind="flyway", expected_version="1", database_block="db")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="table"):
        MigrationCheck(kind="golang-migrate", expected_version="1", database_block="db", table="x; drop table y")
    with pytest.raises(ValidationError, match="expected_version"):
        MigrationCheck(kind="golang-migrate", expected_version="", database_block="db")
    config = MigrationCheck(kind="golang-migrate", expected_version="1", dsn=SecretStr("postgresql://u:hunter2@h/db"))
    assert "hunter2" not in config.model_dump_json()


def test_a_dsn_that_is_not_a_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(MigrationUnavailable, match="not a valid URL") as refused:
        engine_for("user:hunter2 at host")
    assert "hunter2" not in str(refused.value) and refused.value.transient is False


def test_check_connects_through_a_saved_database_connection_block(tmp_path: Path) -> None:
    from blocks import DatabaseConnection

    dsn = golang_db(tmp_path / "app.db", [(9, False)])
    DatabaseConnection(dsn=SecretStr(dsn)).save("migration-status-test", overwrite=True)
    config = MigrationCheck(kind="golang-migrate", expected_version="9", database_block="migration-status-test")
    assert "sqlite" not in config.model_dump_json()  # only the block's name travels with the request
    answer = check_db_migration.fn(config)
    assert answer.status == Status.PASS, answer.reason
