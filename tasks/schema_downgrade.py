"""Reversing an Alembic migration after a failed release, and the database evidence a migration failure needs.

`downgrade_schema` runs `alembic downgrade <target>` in one transaction opened and committed here, with the same
session bounds as the upgrades (tasks/schema_migrations: lock_timeout, statement_timeout, application_name), so
a downgrade that fails half-way leaves nothing behind on PostgreSQL. `offline_downgrade_sql` is the plan: the
SQL `alembic downgrade start:target --sql` prints, with no connection; a migration whose `downgrade()` refuses
(raises, as the demo's contract step does: its data is gone) fails here with the script's own words, which is
how the flow learns that a migration has no downgrade before anything changes.

`read_evidence` is read-only: the version table's rows, every lock held or waited for by another session with
what that session runs (pg_locks joined to pg_stat_activity), and the sessions whose transaction failed and is
still open ("idle in transaction (aborted)"). PostgreSQL keeps no table of past errors; those sessions and the
pods' own reasons (read by the flow) are the recent errors the report shows.
"""

from __future__ import annotations

import io
from typing import Any

from prefect import task
from pydantic import SecretStr
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from rollbook import redaction
from tasks.migrations import MigrationCheck, database_dsn
from tasks.migrations.base import split_table, where
from tasks.policies import DATABASE_READ, SCHEMA_CHANGE, SCHEMA_OFFLINE
from tasks.schema_migrations import (
    SchemaMigrationError,
    _alembic_config,
    _database_error,
    _first_line,
    _names,
    _read_engine,
    _reveal,
    current_heads,
    run_alembic,
    scripts,
)

_LOCKS = text(
    "SELECT l.pid, l.locktype, l.mode, l.granted, COALESCE(c.relname, '') AS relation, a.state, "
    "a.application_name, a.wait_event_type, a.wait_event, "
    "EXTRACT(EPOCH FROM (now() - a.xact_start))::int AS xact_seconds, LEFT(a.query, 200) AS query "
    "FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation "
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.pid <> pg_backend_pid() AND l.locktype IN ('relation', 'advisory', 'transactionid') "
    "AND (c.oid IS NULL OR c.relnamespace <> 'pg_catalog'::regnamespace) "
    "AND COALESCE(a.datname, current_database()) = current_database() "
    "ORDER BY l.granted DESC, l.pid, relation, l.mode LIMIT 100"
)
_ABORTED = text(
    "SELECT pid, application_name, EXTRACT(EPOCH FROM (now() - state_change))::int AS seconds, "
    "LEFT(query, 200) AS query "
    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND state = 'idle in transaction (aborted)' ORDER BY state_change LIMIT 20"
)


def previous_heads(script_location: str, heads: tuple[str, ...]) -> tuple[str, ...]:
    """Where Alembic's own `-1` goes from `heads`: their down revisions. A `depends_on` on another branch is not
    one of them (Alembic refuses it as a downgrade destination): for the demo's contract `0003` (down 0001,
    depends on 0002) it is `0001`, and `alembic downgrade 0001` unapplies 0002 with it."""
    script = scripts(script_location)
    found: set[str] = set()
    for head in heads:
        rev = script.get_revision(head)
        if rev is not None:
            found |= set(_names(rev.down_revision))
    return tuple(sorted(found))


@task(**DATABASE_READ)
def read_alembic_heads(dsn: SecretStr) -> tuple[str, ...]:
    """The Alembic heads recorded in the database (read-only)."""
    engine = _read_engine(dsn)
    try:
        with engine.connect() as conn:
            return current_heads(conn)
    except SQLAlchemyError as exc:
        raise _database_error(engine, exc, "cannot read the alembic version") from None
    finally:
        engine.dispose()


@task(**SCHEMA_OFFLINE)
def offline_downgrade_sql(dsn: SecretStr, script_location: str, *, start: str, target: str) -> str:
    """The SQL `alembic downgrade start:target --sql` prints for the DSN's dialect (no connection). A script
    whose downgrade refuses raises SchemaMigrationError with its own message."""
    from alembic import command

    scripts(script_location)
    try:
        url = make_url(_reveal(dsn))
    except ArgumentError:
        raise SchemaMigrationError("the database DSN is not a valid URL", transient=False) from None
    driver = "postgresql+psycopg" if url.drivername in ("postgresql", "postgres") else url.drivername
    buffer = io.StringIO()
    config = _alembic_config(script_location)
    config.set_main_option("sqlalchemy.url", f"{driver}://")
    config.output_buffer = buffer
    try:
        command.downgrade(config, f"{start}:{target}", sql=True)
    except Exception as exc:  # the script's own refusal (RuntimeError...), or an unknown revision
        raise SchemaMigrationError(
            f"alembic downgrade {start}:{target} cannot be written for {script_location}: {_first_line(exc)}",
            transient=False,
        ) from None
    return buffer.getvalue().strip()


@task(**SCHEMA_CHANGE)
def downgrade_schema(
    dsn: SecretStr,
    script_location: str,
    target: str,
    *,
    statement_timeout_seconds: int,
    lock_timeout_seconds: int,
    application_name: str,
) -> dict[str, Any]:
    """`alembic downgrade <target>` in one transaction. Safe to retry: at the target already, it does nothing."""
    scripts(script_location)
    bounds = {
        "statement_timeout_seconds": statement_timeout_seconds,
        "lock_timeout_seconds": lock_timeout_seconds,
        "application_name": application_name,
    }
    return run_alembic(dsn, script_location, "downgrade", target, bounds=bounds)


@task(**DATABASE_READ)
def read_evidence(dsn: SecretStr, version_table: str = "alembic_version") -> dict[str, Any]:
    """The version table's rows, locks held and waited for (with the sessions' queries), aborted transactions.
    Read-only; what PostgreSQL alone can tell is marked as such on other databases."""
    engine = _read_engine(dsn)
    schema, table = split_table(version_table)
    evidence: dict[str, Any] = {"where": where(engine), "versions": [], "locks": [], "aborted": [], "notes": []}
    try:
        with engine.connect() as conn:
            if inspect(conn).has_table(table, schema=schema):
                name = f'"{schema}"."{table}"' if schema else f'"{table}"'
                rows = conn.execute(text(f"SELECT version_num FROM {name} ORDER BY version_num"))  # noqa: S608
                evidence["versions"] = [str(r[0]) for r in rows]
            else:
                evidence["notes"].append(f"no version table {version_table}")
            if conn.dialect.name == "postgresql":
                evidence["locks"] = [_row(r._mapping) for r in conn.execute(_LOCKS)]
                evidence["aborted"] = [_row(r._mapping) for r in conn.execute(_ABORTED)]
            else:
                evidence["notes"].append(
                    f"locks and sessions are PostgreSQL's (pg_locks): not read on {conn.dialect.name}"
                )
    except SQLAlchemyError as exc:
        raise _database_error(engine, exc, "cannot read the migration evidence") from None
    finally:
        engine.dispose()
    return evidence


def _row(mapping: Any) -> dict[str, str]:
    return {str(k): redaction.redact(str(v)) for k, v in dict(mapping).items() if v is not None}


def guard_dsn(guard: MigrationCheck) -> SecretStr:
    """The DSN of a schema guard (its own, or its block's), kept secret."""
    return SecretStr(database_dsn(guard))
