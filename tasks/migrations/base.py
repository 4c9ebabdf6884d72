"""What every migration-status provider answers, read-only: the versions applied, whether one is half done.

A provider reads the table its migration tool keeps (golang-migrate's `schema_migrations`, Alembic's
`alembic_version`, Flyway's `flyway_schema_history`...) and never writes: the connection is opened read-only
where the database allows it, and no provider runs DDL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from rollbook.schema_compat import version_key as version_key  # pure; kept importable from here

CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000
# Postgres refuses every write in these sessions, so a provider bug cannot change the schema it inspects.
# lock_timeout: a migration that takes its lock between our look at pg_locks and our SELECT makes the read fail
# (and be retried) instead of waiting behind it.
LOCK_TIMEOUT_MS = 3_000
_PG_READ_ONLY = (
    f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}"
)
_SHAPE_WORDS = ("no such column", "no such table")
_AUTH_WORDS = ("password authentication failed", "authentication failed", "access denied", "no password supplied")


Relation = Literal["at", "behind", "ahead", "diverged", "unknown"]


@dataclass(frozen=True)
class ProviderOptions:
    """What a check gives a provider besides the engine: all optional but `expected`."""

    expected: str = ""  # the release's declared version, for providers that judge the relation themselves
    table_name: str | None = None  # the version table, `schema.table` or `table`
    script_location: str | None = None  # Alembic: the app's script directory
    advisory_lock_key: int | None = None  # a bigint advisory lock the deploy tooling holds while migrating


class MigrationStatus(BaseModel):
    """The schema's migration state as its tool recorded it."""

    provider: str
    current: list[str] = Field(description="Applied version(s) at the head; several for branched histories.")
    head: str | None = Field(default=None, description="The newest version the tool knows of, when it can tell.")
    dirty: bool = Field(default=False, description="A migration started and did not finish (left half applied).")
    in_progress: bool = Field(default=False, description="A migration is running right now.")
    table_found: bool = True
    detail: str = Field(default="", description="What was read, for the report's evidence.")
    heads: list[str] = Field(
        default=[], description="Every head of the tool's own scripts, when read (Alembic's script directory)."
    )
    relation: Relation | None = Field(
        default=None,
        description="How the database stands to the release's expected version, when the provider can tell from "
        "more than the version text (the applied set, Alembic's revision graph); None: judged by the text.",
    )
    relation_detail: str = Field(default="", description="Why, in words, when `relation` is not 'at'.")
    dirty_reason: str = Field(default="", description="The tool's own words for a dirty state and its repair.")


class MigrationStatusProvider(Protocol):
    """Reads a database's migration state; `read()` raises MigrationUnavailable when it cannot."""

    kind: str

    def read(self) -> MigrationStatus: ...


class MigrationUnavailable(RuntimeError):
    """The status could not be read: `transient` says whether asking again may help (policies honour it)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def engine_for(dsn: str) -> Engine:
    """A read-only, unpooled engine for `dsn`; postgresql:// and postgres:// use the psycopg (3) driver."""
    try:
        url = make_url(dsn)
    except ArgumentError:
        raise MigrationUnavailable("the database DSN is not a valid URL", transient=False) from None
    connect_args: dict[str, object] = {}
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername.startswith("postgresql"):
        # the DSN's own options (a search_path, say) are kept, and read-only comes last so it always holds
        given = url.query.get("options")
        options = " ".join([*([given] if isinstance(given, str) else list(given or [])), _PG_READ_ONLY])
        url = url.difference_update_query(["options"])
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "options": options}
    try:
        return create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (NoSuchModuleError, ImportError) as exc:
        raise MigrationUnavailable(f"no database driver for {url.drivername!r}: {exc}", transient=False) from None


def where(engine: Engine) -> str:
    """host:port/database of the engine, never its password."""
    url = engine.url
    host = f"{url.host}:{url.port}" if url.port else str(url.host or "")
    return f"{host}/{url.database}" if host else str(url.database or url.drivername)


def unavailable(engine: Engine, exc: SQLAlchemyError) -> MigrationUnavailable:
    """A database error as a clear message: which database, the driver's own first line; auth is permanent."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    first = " ".join(str(orig).strip().splitlines()[:1]) or type(orig).__name__
    # a wrong password, or a table not shaped as the tool makes it (SQLSTATE class 42: undefined column, no
    # privilege...): asking again cannot help
    sqlstate = str(getattr(orig, "sqlstate", "") or "")
    permanent = any(word in first.lower() for word in _AUTH_WORDS + _SHAPE_WORDS) or sqlstate.startswith("42")
    return MigrationUnavailable(f"cannot read migration status from {where(engine)}: {first}", transient=not permanent)


def split_table(name: str) -> tuple[str | None, str]:
    """`schema.table` or `table` as (schema or None, table)."""
    schema, _, table_name = name.rpartition(".")
    return schema or None, table_name


class VersionTableReader:
    """What every provider holds: its engine, the check's options and the version table (the tool's default
    name unless the check names another), split into schema and table."""

    default_table: ClassVar[str]

    def __init__(self, engine: Engine, options: ProviderOptions) -> None:
        self.engine = engine
        self.options = options
        self.schema, self.table_name = split_table(options.table_name or self.default_table)

    @property
    def where(self) -> str:
        """The table as the report names it."""
        return f"{self.schema}.{self.table_name}" if self.schema else self.table_name


# Lock modes that plain reads and writes never take and DDL does: ALTER/DROP TABLE, TRUNCATE, LOCK TABLE
# (AccessExclusive), ADD FOREIGN KEY, CREATE TRIGGER (ShareRowExclusive), CREATE INDEX (Share), REFRESH ...
# CONCURRENTLY (Exclusive). ShareUpdateExclusive is left out: autovacuum takes it all day long.
DDL_LOCK_MODES = ("AccessExclusiveLock", "ExclusiveLock", "ShareRowExclusiveLock", "ShareLock")
_DDL_LOCKS = text(
    "SELECT l.pid, l.mode, l.granted, c.relname FROM pg_locks l "
    "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid() AND n.nspname = :schema "
    "AND l.mode = ANY(:modes) ORDER BY c.relname, l.pid, l.mode"
)
_ADVISORY = text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
    "AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1 ORDER BY pid"
)


def advisory_lock_held(conn: Connection, key: int) -> list[int]:
    """The pids (not ours) holding the bigint advisory lock `key` (pg_advisory_lock(bigint)), PostgreSQL only."""
    high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    return [int(pid) for (pid,) in conn.execute(_ADVISORY, {"high": high, "low": low})]


@dataclass(frozen=True)
class Activity:
    """What shows a migration running now: sentences for the report, and the tables held AccessExclusive (a
    SELECT on one of them would wait for the migration, so a provider does not read it)."""

    found: list[str]
    exclusive: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.found)


def migration_activity(conn: Connection, schema: str | None, lock_keys: dict[str, int]) -> Activity | None:
    """Another session holding (or waiting for) a DDL lock on a table of `schema` (the version table's; the
    session's current schema when None), or one of `lock_keys` (name -> bigint advisory key) held. None where
    the database cannot tell (not PostgreSQL). Reads pg_locks only: no lock is taken, nothing waits."""
    if conn.dialect.name != "postgresql":
        return None
    if schema is None:
        schema = str(conn.execute(text("SELECT current_schema()")).scalar())
    found: list[str] = []
    exclusive: set[str] = set()
    for pid, mode, granted, relname in conn.execute(_DDL_LOCKS, {"schema": schema, "modes": list(DDL_LOCK_MODES)}):
        found.append(f"pid {pid} {'holds' if granted else 'waits for'} {mode} on {schema}.{relname}")
        if mode == "AccessExclusiveLock":  # waiting too: later readers queue behind it
            exclusive.add(str(relname))
    for name, key in lock_keys.items():
        found += [f"pid {pid} holds {name} (advisory lock {key})" for pid in advisory_lock_held(conn, key)]
    return Activity(found, frozenset(exclusive))


def locked_out(table_name: str, where: str, activity: Activity | None) -> str:
    """'' when the version table can be read; else why it is not read now (a migration holds it)."""
    if activity is not None and table_name in activity.exclusive:
        return f"{where} is locked by a running migration: not read, so the version shown may be stale or none"
    return ""


def cannot_tell_running(dialect: str) -> str:
    return f"whether a migration is running cannot be told on {dialect} (pg_locks is PostgreSQL's)"
