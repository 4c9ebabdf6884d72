"""golang-migrate (github.com/golang-migrate/migrate): its `schema_migrations` table holds one row,
(version bigint, dirty boolean). `dirty` is set before a migration runs and cleared when it succeeded, so a
dirty row means a migration is running or failed half-way; golang-migrate then refuses to go on until someone
runs `migrate force`. The table name is `x-migrations-table` in the DSN, `schema_migrations` by default.
The migration files (and so the head version) are not in the database: the release declares the version it
expects.

On PostgreSQL, golang-migrate holds an advisory lock for the whole run (database/postgres Lock():
`pg_advisory_lock(GenerateAdvisoryLockId(database, schema, table))`), so a lock with that key held by any
session in `pg_locks` means a migration is running right now, even before it marks the row dirty.
"""

from __future__ import annotations

import zlib

from sqlalchemy import Connection, Engine, column, inspect, select, table, text
from sqlalchemy.exc import SQLAlchemyError

from tasks.migrations.base import MigrationStatus, unavailable

DEFAULT_TABLE = "schema_migrations"
ADVISORY_LOCK_SALT = 1486364155  # database/util.go advisoryLockIDSalt
_LOCK_HELD = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND classid::bigint = 0 AND objid::bigint = :key AND objsubid = 1"
)


def advisory_lock_id(database: str, schema: str, table_name: str) -> int:
    """golang-migrate's GenerateAdvisoryLockId(database, schema, table): CRC-32 (IEEE) of the additional names
    and then the database name joined by NUL, times the salt, as a uint32."""
    joined = "\x00".join([schema, table_name, database]).encode()
    return (zlib.crc32(joined) * ADVISORY_LOCK_SALT) & 0xFFFFFFFF


class GolangMigrate:
    kind = "golang-migrate"

    def __init__(self, engine: Engine, *, table_name: str | None = None) -> None:
        self.engine = engine
        schema, _, name = (table_name or DEFAULT_TABLE).rpartition(".")
        self.schema = schema or None
        self.table_name = name

    def _locked(self, conn: Connection) -> bool:
        """Whether golang-migrate's advisory lock for this table is held (PostgreSQL only; False elsewhere)."""
        if conn.dialect.name != "postgresql":
            return False
        database, current = conn.execute(text("SELECT current_database(), current_schema()")).one()
        key = advisory_lock_id(str(database), self.schema or str(current), self.table_name)
        return bool(conn.execute(_LOCK_HELD, {"key": key}).scalar())

    def read(self) -> MigrationStatus:
        where = f"{self.schema}.{self.table_name}" if self.schema else self.table_name
        try:
            with self.engine.connect() as conn:
                running = self._locked(conn)
                if not inspect(conn).has_table(self.table_name, schema=self.schema):
                    missing = f"no table {where}"
                    return MigrationStatus(
                        provider=self.kind, current=[], in_progress=running, table_found=False, detail=missing
                    )
                versions = table(self.table_name, column("version"), column("dirty"), schema=self.schema)
                rows = conn.execute(select(versions.c.version, versions.c.dirty)).all()
        except SQLAlchemyError as exc:
            raise unavailable(self.engine, exc) from None
        current = [str(int(version)) for version, _ in rows]
        dirty = any(bool(flag) for _, flag in rows)
        detail = f"{where}: " + (", ".join(f"version {v}, dirty {bool(d)}".lower() for v, d in rows) or "empty")
        if running:
            detail += "; golang-migrate's advisory lock is held"
        return MigrationStatus(provider=self.kind, current=current, dirty=dirty, in_progress=running, detail=detail)
