"""Migration-status providers and the checklist's judgement of them, on SQLite files holding each tool's table as
the tool creates it (the PostgreSQL reading, locks included, is proven on the sandbox in
tests/integration/test_migration_status_sandbox.py)."""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from rollbook.checklist import Status
from tasks.checks.db_migration import check_db_migration, migration_result
from tasks.migrations import (
    PROVIDERS,
    MigrationCheck,
    MigrationStatus,
    MigrationUnavailable,
    ProviderOptions,
    engine_for,
    make_provider,
)


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
    with pytest.raises(ValidationError, match="exactly one of database_block or dsn"):
        MigrationCheck(kind="golang-migrate", expected_version="1")
    with pytest.raises(ValidationError, match="exactly one of database_block or dsn"):
        MigrationCheck(kind="golang-migrate", expected_version="1", database_block="db", dsn=SecretStr("sqlite://"))
    with pytest.raises(ValidationError, match="kind"):
        MigrationCheck(kind="liquibase", expected_version="1", database_block="db")  # type: ignore[arg-type]
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


# --- Alembic ---------------------------------------------------------------------------------------------------
# alembic_version as Alembic's MigrationContext creates it (the tests below let Alembic itself create and stamp it):
#   CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL,
#                                 CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))

REVISION_FILE = '''"""{rev}"""
revision = "{rev}"
down_revision = {down}
branch_labels = None
depends_on = None


def upgrade():
    raise AssertionError("a status check never upgrades")


def downgrade():
    raise AssertionError("a status check never downgrades")
'''


def alembic_scripts(path: Path, graph: Mapping[str, object]) -> str:
    """An Alembic script directory (versions/ only: no env.py, so none can run) with `graph` rev -> down."""
    (path / "versions").mkdir(parents=True)
    for rev, down in graph.items():
        (path / "versions" / f"{rev}_step.py").write_text(REVISION_FILE.format(rev=rev, down=repr(down)))
    return str(path)


LINE = {"1a2b3c4d5e6f": None, "2b3c4d5e6f70": "1a2b3c4d5e6f", "3c4d5e6f7081": "2b3c4d5e6f70"}
# a1 <- b2 <- (c3 | d4): two heads; e5 merges them
FORK = {"a1": None, "b2": "a1", "c3": "b2", "d4": "b2"}
MERGED = {**FORK, "e5": ("c3", "d4")}


def alembic_db(path: Path, scripts: str | None, stamp: list[str] | None, table: str = "alembic_version") -> str:
    """A SQLite file whose version table Alembic itself created and stamped (None: no table at all)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{path}")
    if stamp is not None:
        with engine.begin() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": table})
            if stamp and scripts:
                context.stamp(ScriptDirectory(scripts), stamp if len(stamp) > 1 else stamp[0])  # type: ignore[arg-type]
            else:
                context._ensure_version_table()
    engine.dispose()
    return f"sqlite:///{path}"


def alembic_read(dsn: str, expected: str = "", scripts: str | None = None, **more: object) -> MigrationStatus:
    engine = engine_for(dsn)
    try:
        options = ProviderOptions(expected=expected, script_location=scripts, **more)  # type: ignore[arg-type]
        return make_provider("alembic", engine, options=options).read()
    finally:
        engine.dispose()


def test_alembic_reads_the_revisions_alembic_wrote(tmp_path: Path) -> None:
    scripts = alembic_scripts(tmp_path / "app", LINE)
    dsn = alembic_db(tmp_path / "at.db", scripts, ["3c4d5e6f7081"])
    at = alembic_read(dsn, "3c4d5e6f7081", scripts)
    assert (at.current, at.head, at.heads, at.relation, at.in_progress) == (
        ["3c4d5e6f7081"],
        "3c4d5e6f7081",
        ["3c4d5e6f7081"],
        "at",
        False,
    )
    assert "alembic_version: 3c4d5e6f7081" in at.detail
    assert "cannot be told on sqlite" in at.detail  # no guessing about a running migration off PostgreSQL
    assert migration_result(at, "3c4d5e6f7081").status == Status.PASS
    bare = alembic_read(dsn, "3c4d5e6f7081")  # without the scripts: the text alone, and no head
    assert (bare.current, bare.head, bare.relation) == (["3c4d5e6f7081"], None, "at")
    empty = alembic_read(alembic_db(tmp_path / "empty.db", scripts, []), "1a2b3c4d5e6f", scripts)
    assert empty.current == [] and empty.table_found
    assert "no migration applied yet" in migration_result(empty, "1a2b3c4d5e6f").reason
    missing = alembic_read(alembic_db(tmp_path / "none.db", None, None), "1a2b3c4d5e6f", scripts)
    assert not missing.table_found and missing.detail.startswith("no table alembic_version")


@pytest.mark.parametrize(
    ("graph", "stamp", "expected", "relation", "words"),
    [
        (LINE, ["2b3c4d5e6f70"], "3c4d5e6f7081", "behind", "database behind: at revision 2b3c4d5e6f70"),
        (LINE, ["1a2b3c4d5e6f"], "3c4d5e6f7081", "behind", "database behind: at revision 1a2b3c4d5e6f"),
        (LINE, ["3c4d5e6f7081"], "2b3c4d5e6f70", "ahead", "database ahead: at revision 3c4d5e6f7081"),
        (LINE, ["3c4d5e6f7081"], "ffffffffffff", "unknown", "revision ffffffffffff is not in the scripts"),
        (MERGED, ["c3"], "d4", "diverged", "on another branch than the release's d4"),
        (MERGED, ["c3", "d4"], "e5", "behind", "database behind: at revision c3, d4, the release expects e5"),
        (MERGED, ["c3", "d4"], "c3", "diverged", "several revisions applied (c3, d4), a branched history"),
    ],
)
def test_alembic_tells_behind_ahead_and_branches_from_the_scripts(
    tmp_path: Path, graph: Mapping[str, object], stamp: list[str], expected: str, relation: str, words: str
) -> None:
    scripts = alembic_scripts(tmp_path / "app", graph)
    status = alembic_read(alembic_db(tmp_path / "app.db", scripts, stamp), expected, scripts)
    assert status.relation == relation and words in status.relation_detail, status
    answer = migration_result(status, expected)
    assert answer.status == Status.FAIL and words in answer.reason, answer.reason


def test_alembic_scripts_with_several_heads_fail_whatever_the_database_says(tmp_path: Path) -> None:
    scripts = alembic_scripts(tmp_path / "app", FORK)
    status = alembic_read(alembic_db(tmp_path / "app.db", scripts, ["c3"]), "c3", scripts)
    assert status.heads == ["c3", "d4"] and status.head is None and "scripts at" in status.detail
    answer = migration_result(status, "c3")
    assert answer.status == Status.FAIL and "several heads (c3, d4)" in answer.reason, answer.reason


def test_alembic_database_at_a_revision_the_scripts_do_not_have(tmp_path: Path) -> None:
    newer = alembic_scripts(tmp_path / "newer", {**LINE, "4d5e6f708192": "3c4d5e6f7081"})
    older = alembic_scripts(tmp_path / "older", LINE)
    status = alembic_read(alembic_db(tmp_path / "app.db", newer, ["4d5e6f708192"]), "3c4d5e6f7081", older)
    assert status.relation == "unknown" and "which the scripts at" in status.relation_detail


def test_alembic_without_scripts_judges_by_text_and_branches_fail(tmp_path: Path) -> None:
    scripts = alembic_scripts(tmp_path / "app", MERGED)
    two = alembic_read(alembic_db(tmp_path / "two.db", scripts, ["c3", "d4"]), "e5")
    assert two.current == ["c3", "d4"] and two.relation == "diverged"
    assert "merge the branches" in migration_result(two, "e5").reason
    one = alembic_read(alembic_db(tmp_path / "one.db", scripts, ["c3"]), "e5")
    answer = migration_result(one, "e5")
    assert answer.status == Status.FAIL and answer.reason == "alembic: database at version c3, the release expects e5"


def test_alembic_reads_a_schema_qualified_table_and_never_writes(tmp_path: Path) -> None:
    scripts = alembic_scripts(tmp_path / "app", LINE)
    path = tmp_path / "app.db"
    dsn = alembic_db(path, scripts, ["2b3c4d5e6f70"], table="app_versions")
    before = path.read_bytes()
    status = alembic_read(dsn, "2b3c4d5e6f70", scripts, table_name="main.app_versions")
    assert status.current == ["2b3c4d5e6f70"] and status.relation == "at"
    assert path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "app" / "versions").iterdir()) == sorted(
        f"{rev}_step.py" for rev in LINE
    )  # nothing written next to the scripts either


@pytest.mark.filterwarnings("ignore:Revision zz referenced:UserWarning")  # Alembic's own note on the broken graph
def test_alembic_scripts_that_cannot_be_read_are_a_clear_error(tmp_path: Path) -> None:
    dsn = alembic_db(tmp_path / "app.db", None, [])
    with pytest.raises(MigrationUnavailable, match="no Alembic script directory at /nowhere") as nowhere:
        alembic_read(dsn, "a1", "/nowhere")
    assert nowhere.value.transient is False
    broken = alembic_scripts(tmp_path / "broken", {"a1": None, "b2": "zz"})  # b2's parent does not exist
    with pytest.raises(MigrationUnavailable, match="alembic: cannot read the scripts at .*broken"):
        alembic_read(dsn, "a1", broken)
    (tmp_path / "syntax" / "versions").mkdir(parents=True)
    (tmp_path / "syntax" / "versions" / "a1_x.py").write_text("revision = (\n")
    with pytest.raises(MigrationUnavailable, match="alembic: cannot read the scripts"):
        alembic_read(dsn, "a1", str(tmp_path / "syntax"))


# --- Flyway ----------------------------------------------------------------------------------------------------
# Flyway's createMetaDataTable.sql (PostgreSQL), as used below but for installed_on's default (now() is
# CURRENT_TIMESTAMP in SQLite):
#   CREATE TABLE "flyway_schema_history" ("installed_rank" INT NOT NULL, "version" VARCHAR(50),
#     "description" VARCHAR(200) NOT NULL, "type" VARCHAR(20) NOT NULL, "script" VARCHAR(1000) NOT NULL,
#     "checksum" INTEGER, "installed_by" VARCHAR(100) NOT NULL, "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
#     "execution_time" INTEGER NOT NULL, "success" BOOLEAN NOT NULL);
#   ALTER TABLE "flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
#   CREATE INDEX "flyway_schema_history_s_idx" ON "flyway_schema_history" ("success");
FLYWAY_DDL = (
    'CREATE TABLE "flyway_schema_history" ("installed_rank" INT NOT NULL, "version" VARCHAR(50), '
    '"description" VARCHAR(200) NOT NULL, "type" VARCHAR(20) NOT NULL, "script" VARCHAR(1000) NOT NULL, '
    '"checksum" INTEGER, "installed_by" VARCHAR(100) NOT NULL, '
    '"installed_on" TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, "execution_time" INTEGER NOT NULL, '
    '"success" BOOLEAN NOT NULL, CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank"))',
    'CREATE INDEX "flyway_schema_history_s_idx" ON "flyway_schema_history" ("success")',
)
FlywayRow = tuple[int, str | None, str, str, str, bool]
FLYWAY_HISTORY: list[FlywayRow] = [
    (1, "1", "init", "SQL", "V1__init.sql", True),
    (2, "1.1", "add users", "SQL", "V1_1__add_users.sql", True),
    (3, None, "views", "SQL", "R__views.sql", True),  # repeatable: not a version
    (4, "1.2", "add index", "SQL", "V1_2__add_index.sql", True),
    (5, "1.10", "add orders", "JDBC", "db.migration.V1_10__add_orders", True),  # 1.10 > 1.2
]


def flyway_db(path: Path, rows: list[FlywayRow] | None) -> str:
    with sqlite3.connect(path) as conn:
        if rows is not None:
            for statement in FLYWAY_DDL:
                conn.execute(statement)
            conn.executemany(
                'INSERT INTO "flyway_schema_history" (installed_rank, version, description, type, script, '
                "checksum, installed_by, execution_time, success) VALUES (?, ?, ?, ?, ?, 0, 'flyway', 5, ?)",
                rows,
            )
    return f"sqlite:///{path}"


def flyway_read(dsn: str, expected: str = "") -> MigrationStatus:
    engine = engine_for(dsn)
    try:
        return make_provider("flyway", engine, options=ProviderOptions(expected=expected)).read()
    finally:
        engine.dispose()


def test_flyway_current_is_the_highest_successful_versioned_migration(tmp_path: Path) -> None:
    status = flyway_read(flyway_db(tmp_path / "f.db", FLYWAY_HISTORY), "1.10")
    assert (status.current, status.dirty, status.relation) == (["1.10"], False, "at")
    assert status.detail.startswith("flyway_schema_history: 5 row(s), at version 1.10")
    assert migration_result(status, "1.10").status == Status.PASS
    assert migration_result(flyway_read(flyway_db(tmp_path / "z.db", FLYWAY_HISTORY), "1.10.0"), "1.10.0").status == (
        Status.PASS  # Flyway's own equality: trailing zeros do not count
    )
    behind = flyway_read(flyway_db(tmp_path / "b.db", FLYWAY_HISTORY), "2")
    assert behind.relation == "behind"
    assert migration_result(behind, "2").reason == "flyway: database behind: at version 1.10, the release expects 2"
    ahead = flyway_read(flyway_db(tmp_path / "a.db", FLYWAY_HISTORY), "1.1")
    assert ahead.relation == "ahead" and "database ahead: at version 1.10" in migration_result(ahead, "1.1").reason
    skipped = flyway_read(flyway_db(tmp_path / "s.db", FLYWAY_HISTORY), "1.05")
    assert skipped.relation == "diverged" and "1.05 was never applied" in skipped.relation_detail


def test_flyway_baseline_counts_and_an_undo_takes_its_version_out(tmp_path: Path) -> None:
    rows: list[FlywayRow] = [
        (1, "5", "<< Flyway Baseline >>", "BASELINE", "<< Flyway Baseline >>", True),
        (2, "6", "add col", "SQL", "V6__add_col.sql", True),
        (3, "6", "add col", "UNDO_SQL", "U6__add_col.sql", True),
    ]
    assert flyway_read(flyway_db(tmp_path / "u.db", rows), "5").current == ["5"]


def test_flyway_failed_row_is_dirty_with_its_version(tmp_path: Path) -> None:
    rows = [*FLYWAY_HISTORY, (6, "2", "split orders", "SQL", "V2__split_orders.sql", False)]
    status = flyway_read(flyway_db(tmp_path / "f.db", rows), "2")
    assert status.dirty and status.current == ["1.10"]
    assert "version 2 (split orders) failed, installed_rank 6" in status.detail
    answer = migration_result(status, "2")
    assert answer.status == Status.FAIL and "version 2 (split orders) failed" in answer.reason
    assert "flyway repair" in answer.reason
    missing = flyway_read(flyway_db(tmp_path / "none.db", None), "1")
    assert not missing.table_found and missing.detail.startswith("no table flyway_schema_history")


# --- Rails -----------------------------------------------------------------------------------------------------
# ActiveRecord's SchemaMigration table (Rails 5+), on PostgreSQL:
#   CREATE TABLE "schema_migrations" ("version" character varying NOT NULL PRIMARY KEY)
# and on SQLite, as below: CREATE TABLE "schema_migrations" ("version" varchar NOT NULL PRIMARY KEY)


def rails_db(path: Path, versions: list[str] | None) -> str:
    with sqlite3.connect(path) as conn:
        if versions is not None:
            conn.execute('CREATE TABLE "schema_migrations" ("version" varchar NOT NULL PRIMARY KEY)')
            conn.executemany('INSERT INTO "schema_migrations" ("version") VALUES (?)', [(v,) for v in versions])
    return f"sqlite:///{path}"


def rails_read(dsn: str, expected: str = "") -> MigrationStatus:
    engine = engine_for(dsn)
    try:
        return make_provider("rails", engine, options=ProviderOptions(expected=expected)).read()
    finally:
        engine.dispose()


RAILS = ["20250101000000", "20260101120000", "99", "20251231235959"]  # "99" sorts last as text, first as a number


def test_rails_current_is_the_highest_timestamp_by_number(tmp_path: Path) -> None:
    status = rails_read(rails_db(tmp_path / "r.db", RAILS), "20260101120000")
    assert (status.current, status.relation, status.dirty) == (["20260101120000"], "at", False)
    assert status.detail.startswith("schema_migrations: 4 version(s), newest 20260101120000")
    assert migration_result(status, "20260101120000").status == Status.PASS
    behind = rails_read(rails_db(tmp_path / "b.db", RAILS), "20260301000000")
    assert migration_result(behind, "20260301000000").reason == (
        "rails: database behind: at version 20260101120000, the release expects 20260301000000"
    )
    never = rails_read(rails_db(tmp_path / "n.db", RAILS), "20250601000000")
    assert never.relation == "diverged" and "never applied" in migration_result(never, "20250601000000").reason
    ahead = rails_read(rails_db(tmp_path / "a.db", RAILS), "20251231235959")
    assert ahead.relation == "ahead"
    missing = rails_read(rails_db(tmp_path / "none.db", None), "1")
    assert not missing.table_found and missing.detail.startswith("no table schema_migrations")
    empty = rails_read(rails_db(tmp_path / "e.db", []), "1")
    assert empty.current == [] and "no migration applied yet" in migration_result(empty, "1").reason


def test_rails_advisory_lock_id_is_activerecords() -> None:
    from tasks.migrations.rails import advisory_lock_id

    # MIGRATOR_SALT * Zlib.crc32("rollbook"), computed by hand: it fits PostgreSQL's bigint
    assert advisory_lock_id("rollbook") == 2053462845 * zlib.crc32(b"rollbook") < 2**63


# --- the check end to end, and its configuration -------------------------------------------------------------


def test_check_reads_each_new_kind(tmp_path: Path) -> None:
    scripts = alembic_scripts(tmp_path / "app", LINE)
    alembic_dsn = alembic_db(tmp_path / "al.db", scripts, ["2b3c4d5e6f70"])
    config = MigrationCheck(
        kind="alembic", expected_version="3c4d5e6f7081", dsn=SecretStr(alembic_dsn), script_location=scripts
    )
    answer = check_db_migration.fn(config)
    assert answer.status == Status.FAIL and "database behind: at revision 2b3c4d5e6f70" in answer.reason
    assert answer.evidence["heads"] == ["3c4d5e6f7081"]
    flyway_dsn = flyway_db(tmp_path / "fw.db", FLYWAY_HISTORY)
    fly = check_db_migration.fn(MigrationCheck(kind="flyway", expected_version="1.10", dsn=SecretStr(flyway_dsn)))
    assert fly.status == Status.PASS and fly.reason == "flyway: at version 1.10, clean"
    rails_dsn = rails_db(tmp_path / "rl.db", RAILS)
    rails = check_db_migration.fn(
        MigrationCheck(kind="rails", expected_version="30000101000000", dsn=SecretStr(rails_dsn))
    )
    assert rails.status == Status.FAIL and "behind" in rails.reason
    wrong_table = check_db_migration.fn(
        MigrationCheck(kind="flyway", expected_version="1", dsn=SecretStr(rails_dsn), table="schema_migrations")
    )
    assert wrong_table.status == Status.ERROR and "cannot read migration status" in wrong_table.reason


def test_a_failed_db_migration_check_blocks_by_default() -> None:
    from rollbook.checklist import CheckPolicy, decide

    behind = migration_result(
        MigrationStatus(provider="flyway", current=["1"], relation="behind", relation_detail="database behind"), "2"
    )
    running = migration_result(MigrationStatus(provider="alembic", current=["a1"], in_progress=True), "a1")
    for answer in (behind, running):
        verdict = decide([answer], CheckPolicy(), [])
        assert not verdict.ready and verdict.rows[0].outcome == "blocking", verdict.summary


def test_new_kinds_are_configured_and_validated() -> None:
    assert sorted(PROVIDERS) == ["alembic", "flyway", "golang-migrate", "rails"]
    ok = MigrationCheck(
        kind="alembic",
        expected_version="ae1027a6acf",
        dsn=SecretStr("sqlite://"),
        script_location="/srv/app/alembic",
        advisory_lock_key=-42,
    )
    assert ok.options().script_location == "/srv/app/alembic" and ok.options().expected == "ae1027a6acf"
    for bad, words in [
        ({"script_location": "alembic"}, "script_location"),  # relative: the worker's cwd is nobody's guess
        ({"script_location": "/srv/../etc"}, "must not contain '..'"),
        ({"script_location": "/srv/a\nb"}, "script_location"),
        ({"advisory_lock_key": 2**63}, "advisory_lock_key"),
        ({"advisory_lock_key": "42"}, "advisory_lock_key"),
    ]:
        with pytest.raises(ValidationError, match=words):
            MigrationCheck(kind="alembic", expected_version="a1", database_block="db", **bad)  # type: ignore[arg-type]
    for field, value in (("script_location", "/srv/app/alembic"), ("advisory_lock_key", 1)):
        with pytest.raises(ValidationError, match=f"{field} is for kind alembic, not flyway"):
            MigrationCheck(kind="flyway", expected_version="1", database_block="db", **{field: value})  # type: ignore[arg-type]


def test_unknown_provider_is_a_clear_error() -> None:
    from rollbook.plugins import UnknownKind

    with pytest.raises(UnknownKind, match="unknown migration status provider 'liquibase'; known: alembic, flyway"):
        make_provider("liquibase", engine_for("sqlite://"))
