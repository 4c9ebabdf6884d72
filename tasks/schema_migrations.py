"""Changing an application database's schema with Alembic, and the expand/contract backfill.

Every change runs in one transaction this module opens and commits only when the whole command succeeded:
Alembic's env.py is handed the connection (`config.attributes["connection"]`, Alembic's documented way to share
one), so `alembic upgrade expand@head` applies all its revisions and their version-table rows, or none of them.
On PostgreSQL DDL is transactional, so a script that fails half-way leaves no column behind. SQLite's driver
commits DDL as it goes: there a failed script may leave part of its change (the error says so).

Every session has bounds: `lock_timeout` (an ALTER TABLE queued behind a long read would make every later query
queue behind it; it gives up instead) and `statement_timeout`, both PostgreSQL's, and `application_name` names
the flow run in pg_stat_activity. Reads use the read-only engine of the status providers (tasks/migrations).
The DSN arrives as a SecretStr and never appears in an error: messages name host:port/database only.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any, Literal

from prefect import task
from pydantic import SecretStr
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from rollbook import redaction
from rollbook.expand_contract import Backfill, SchemaState, backfill_sql, count_sql
from tasks.migrations.base import CONNECT_TIMEOUT_SECONDS, engine_for, where
from tasks.migrations.base import MigrationUnavailable as _Unavailable
from tasks.policies import BACKFILL_BATCH, DATABASE_READ, SCHEMA_CHANGE, SCHEMA_OFFLINE

_AUTH_WORDS = ("password authentication failed", "authentication failed", "no password supplied")
_SHAPE_WORDS = ("no such column", "no such table", "syntax error")
# lock_timeout (55P03), serialization failure, deadlock: the same statement may pass a moment later
_RETRYABLE_STATES = ("55P03", "40001", "40P01")


class SchemaMigrationError(RuntimeError):
    """A schema change or backfill could not be made; `transient` says whether running it again may help."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(redaction.redact(message))
        self.transient = transient

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (str(self), self.transient))


def _rebuild(message: str, transient: bool) -> SchemaMigrationError:
    return SchemaMigrationError(message, transient=transient)


def _first_line(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return " ".join(str(orig).strip().splitlines()[:1]) or type(orig).__name__


def _database_error(engine: Engine, exc: BaseException, doing: str) -> SchemaMigrationError:
    """Connection trouble and lock waits are transient; a wrong password or a refused statement are not."""
    first = _first_line(exc)
    sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "")
    if any(word in first.lower() for word in _AUTH_WORDS + _SHAPE_WORDS):
        transient = False
    elif sqlstate:
        transient = sqlstate.startswith("08") or sqlstate in _RETRYABLE_STATES
    else:
        transient = isinstance(exc, OperationalError)
    return SchemaMigrationError(f"{doing} on {where(engine)}: {first}", transient=transient)


def _reveal(dsn: SecretStr) -> str:
    value = redaction.reveal(dsn)
    if not value:
        raise SchemaMigrationError("no database DSN given", transient=False)
    return value


def writable_engine(
    dsn: SecretStr, *, statement_timeout_seconds: int, lock_timeout_seconds: int, application_name: str
) -> Engine:
    """An unpooled engine that may write, with the session bounds above; postgresql:// uses psycopg (3)."""
    try:
        url = make_url(_reveal(dsn))
    except ArgumentError:
        raise SchemaMigrationError("the database DSN is not a valid URL", transient=False) from None
    connect_args: dict[str, object] = {}
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername.startswith("postgresql"):
        given = url.query.get("options")
        bounds = (
            f"-c statement_timeout={statement_timeout_seconds * 1000} -c lock_timeout={lock_timeout_seconds * 1000}"
        )
        options = " ".join([*([given] if isinstance(given, str) else list(given or [])), bounds])
        url = url.difference_update_query(["options"])
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "options": options,
            "application_name": application_name[:63],
        }
    try:
        return create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (NoSuchModuleError, ImportError) as exc:
        raise SchemaMigrationError(f"no database driver for {url.drivername!r}: {exc}", transient=False) from None


def _read_engine(dsn: SecretStr) -> Engine:
    try:
        return engine_for(_reveal(dsn))
    except _Unavailable as exc:
        raise SchemaMigrationError(str(exc), transient=exc.transient) from None


def scripts(location: str) -> Any:
    """Alembic's ScriptDirectory at `location` (imports the revision files, runs no env.py, connects nowhere)."""
    from alembic.script import ScriptDirectory

    if not os.path.isdir(os.path.join(location, "versions")):
        raise SchemaMigrationError(f"no Alembic script directory at {location} (no versions/ folder)", transient=False)
    try:
        script = ScriptDirectory(location)
        script.get_heads()
    except Exception as exc:  # a revision file that does not import, a cycle, a missing down_revision...
        raise SchemaMigrationError(
            f"cannot read the Alembic scripts at {location}: {_first_line(exc)}", transient=False
        ) from None
    return script


def resolve(script: Any, target: str) -> tuple[str, ...]:
    """The revision ids `target` (`expand@head`, a revision id, `heads`) names; an unknown one is a clear error."""
    try:
        found = tuple(sorted(rev.revision for rev in script.get_revisions(target) if rev is not None))
    except Exception as exc:  # alembic's CommandError / RevisionError: no such revision or branch
        raise SchemaMigrationError(
            f"alembic target {target!r} is not in the scripts at {script.dir}: {_first_line(exc)} "
            f"(branches there: {', '.join(sorted(branch_labels(script))) or 'none'})",
            transient=False,
        ) from None
    if not found:
        raise SchemaMigrationError(f"alembic target {target!r} names no revision in {script.dir}", transient=False)
    return found


def branch_labels(script: Any) -> set[str]:
    return {label for rev in script.walk_revisions() for label in (rev.branch_labels or ())}


def applied_revisions(script: Any, heads: tuple[str, ...]) -> frozenset[str]:
    """The heads and everything they stand on: down revisions and `depends_on` (a branch label or a revision)."""
    seen: set[str] = set()
    todo = list(heads)
    while todo:
        rev = script.get_revision(todo.pop())
        if rev is None or rev.revision in seen:
            continue
        seen.add(rev.revision)
        todo += _names(rev.down_revision)
        for dep in _names(rev.dependencies):
            todo += [r.revision for r in script.get_revisions(dep) if r is not None]
    return frozenset(seen)


def _names(value: str | tuple[str, ...] | list[str] | None) -> list[str]:
    """Alembic keeps one name as a string, several as a tuple."""
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def current_heads(conn: Connection) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


def _alembic_config(location: str, **attributes: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", location.replace("%", "%%"))
    config.attributes.update(attributes)
    return config


@task(**DATABASE_READ)
def read_schema_state(
    dsn: SecretStr, script_location: str, *, expand_target: str, contract_target: str, spec: Backfill
) -> SchemaState:
    """The applied heads, what the two targets resolve to, the backfill table's columns and its counts.
    Read-only; an unknown target or unreadable scripts fail before the database is asked anything."""
    script = scripts(script_location)
    expand, contract = resolve(script, expand_target), resolve(script, contract_target)
    engine = _read_engine(dsn)
    try:
        with engine.connect() as conn:
            heads = current_heads(conn)
            inspector = inspect(conn)
            columns: frozenset[str] = frozenset()
            if inspector.has_table(spec.table_name, schema=spec.schema_name):
                columns = frozenset(c["name"] for c in inspector.get_columns(spec.table_name, schema=spec.schema_name))
            remaining = filled = None
            if {spec.old_column, spec.new_column} <= columns:
                remaining, filled = _counts(conn, spec)
    except SQLAlchemyError as exc:
        raise _database_error(engine, exc, "cannot read the schema state") from None
    finally:
        engine.dispose()
    unknown = [h for h in heads if script.get_revision(h) is None] if heads else []
    if unknown:
        raise SchemaMigrationError(
            f"the database is at revision {', '.join(unknown)}, which the scripts at {script_location} do not have",
            transient=False,
        )
    return SchemaState(
        current=heads,
        applied=applied_revisions(script, heads),
        expand_revisions=expand,
        contract_revisions=contract,
        columns=columns,
        remaining=remaining,
        filled=filled,
    )


def _counts(conn: Connection, spec: Backfill) -> tuple[int, int]:
    row = conn.execute(text(count_sql(spec))).one()
    return int(row[0] or 0), int(row[1] or 0)


@task(**DATABASE_READ)
def count_backfill(dsn: SecretStr, spec: Backfill) -> tuple[int, int]:
    """(rows left to copy, rows already in the new shape), read-only."""
    engine = _read_engine(dsn)
    try:
        with engine.connect() as conn:
            return _counts(conn, spec)
    except SQLAlchemyError as exc:
        raise _database_error(engine, exc, f"cannot count the backfill of {spec.table}") from None
    finally:
        engine.dispose()


@task(**SCHEMA_CHANGE)
def upgrade_schema(
    dsn: SecretStr,
    script_location: str,
    target: str,
    *,
    statement_timeout_seconds: int,
    lock_timeout_seconds: int,
    application_name: str,
) -> dict[str, Any]:
    """`alembic upgrade <target>` in one transaction: all its revisions or none. Safe to retry: upgrading to a
    target already applied does nothing. Returns the heads before and after, and the time it took."""
    bounds = {
        "statement_timeout_seconds": statement_timeout_seconds,
        "lock_timeout_seconds": lock_timeout_seconds,
        "application_name": application_name,
    }
    resolve(scripts(script_location), target)
    return run_alembic(dsn, script_location, "upgrade", target, bounds=bounds)


def run_alembic(
    dsn: SecretStr, script_location: str, verb: Literal["upgrade", "downgrade"], target: str, *, bounds: dict[str, Any]
) -> dict[str, Any]:
    """`alembic <verb> <target>` on one connection, in one transaction we open and commit, with the session
    bounds of `writable_engine`; the heads before and after, and the seconds it took."""
    from alembic import command

    engine = writable_engine(dsn, **bounds)
    started = time.monotonic()
    before: tuple[str, ...] = ()
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            raise _database_error(engine, exc, f"alembic {verb} {target}: cannot connect") from None
        try:
            with conn, conn.begin():
                before = current_heads(conn)
                getattr(command, verb)(_alembic_config(script_location, connection=conn), target)
                after = current_heads(conn)
        except SchemaMigrationError:
            raise
        except Exception as exc:  # a refused statement, a timeout, the script's own error (RuntimeError...)
            raise _failed(engine, f"{verb} {target}", exc, before) from None
    finally:
        engine.dispose()
    return {"before": list(before), "after": list(after), "seconds": round(time.monotonic() - started, 3)}


def _failed(engine: Engine, target: str, exc: BaseException, before: tuple[str, ...]) -> SchemaMigrationError:
    """The transaction was rolled back; say so (and that SQLite may keep part of it), naming the error."""
    kept = (
        "the transaction was rolled back: no part of it is applied (PostgreSQL DDL is transactional)"
        if engine.dialect.name == "postgresql"
        else f"on {engine.dialect.name} DDL is not transactional: part of the change may be applied, check the schema"
    )
    error = _database_error(engine, exc, "") if isinstance(exc, SQLAlchemyError) else None
    return SchemaMigrationError(
        f"alembic {target} failed on {where(engine)} (database was at {', '.join(before) or 'no revision'}): "
        f"{_first_line(exc)}; {kept}",
        transient=bool(error and error.transient),
    )


@task(**SCHEMA_OFFLINE)
def offline_sql(dsn: SecretStr, script_location: str, *, start: str | None, target: str) -> str:
    """The SQL `alembic upgrade [start:]target --sql` prints for the DSN's dialect; no connection is made (the
    URL handed to Alembic is the dialect alone, without host or password)."""
    from alembic import command

    script = scripts(script_location)
    resolve(script, target)
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
        command.upgrade(config, f"{start}:{target}" if start else target, sql=True)
    except Exception as exc:
        raise SchemaMigrationError(
            f"alembic upgrade {target} --sql failed for {script_location}: {_first_line(exc)}", transient=False
        ) from None
    return buffer.getvalue().strip()


@task(**BACKFILL_BATCH)
def backfill_batch(
    dsn: SecretStr,
    spec: Backfill,
    *,
    batch_size: int,
    statement_timeout_seconds: int,
    lock_timeout_seconds: int,
    application_name: str,
) -> int:
    """Copy one batch (see `backfill_sql`) in its own transaction; the rows it copied. A retry after a lost
    answer copies the next rows, never a row twice over a newer value (only `new IS NULL` rows are touched)."""
    engine = writable_engine(
        dsn,
        statement_timeout_seconds=statement_timeout_seconds,
        lock_timeout_seconds=lock_timeout_seconds,
        application_name=application_name,
    )
    try:
        with engine.begin() as conn:
            return int(conn.execute(text(backfill_sql(spec)), {"batch_size": batch_size}).rowcount or 0)
    except SQLAlchemyError as exc:
        raise _database_error(engine, exc, f"backfill batch of {spec.table} failed") from None
    finally:
        engine.dispose()
