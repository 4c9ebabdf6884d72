"""What every migration-status provider answers, read-only: the versions applied, whether one is half done.

A provider reads the table its migration tool keeps (golang-migrate's `schema_migrations`, Alembic's
`alembic_version`, Flyway's `flyway_schema_history`...) and never writes: the connection is opened read-only
where the database allows it, and no provider runs DDL.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000
# Postgres refuses every write in these sessions, so a provider bug cannot change the schema it inspects.
_PG_READ_ONLY = f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
_AUTH_WORDS = ("password authentication failed", "authentication failed", "access denied", "no password supplied")


class MigrationStatus(BaseModel):
    """The schema's migration state as its tool recorded it."""

    provider: str
    current: list[str] = Field(description="Applied version(s) at the head; several for branched histories.")
    head: str | None = Field(default=None, description="The newest version the tool knows of, when it can tell.")
    dirty: bool = Field(default=False, description="A migration started and did not finish (left half applied).")
    in_progress: bool = Field(default=False, description="A migration is running right now.")
    table_found: bool = True
    detail: str = Field(default="", description="What was read, for the report's evidence.")


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
    permanent = any(word in first.lower() for word in _AUTH_WORDS)
    return MigrationUnavailable(f"cannot read migration status from {where(engine)}: {first}", transient=not permanent)
