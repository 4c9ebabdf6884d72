"""golang-migrate (github.com/golang-migrate/migrate): its `schema_migrations` table holds one row,
(version bigint, dirty boolean). `dirty` is set before a migration runs and cleared when it succeeded, so a
dirty row means a migration is running or failed half-way; golang-migrate then refuses to go on until someone
runs `migrate force`. The table name is `x-migrations-table` in the DSN, `schema_migrations` by default.
The migration files (and so the head version) are not in the database: the release declares the version it
expects.
"""

from __future__ import annotations

from sqlalchemy import Engine, column, inspect, select, table
from sqlalchemy.exc import SQLAlchemyError

from tasks.migrations.base import MigrationStatus, unavailable

DEFAULT_TABLE = "schema_migrations"


class GolangMigrate:
    kind = "golang-migrate"

    def __init__(self, engine: Engine, *, table_name: str | None = None) -> None:
        self.engine = engine
        schema, _, name = (table_name or DEFAULT_TABLE).rpartition(".")
        self.schema = schema or None
        self.table_name = name

    def read(self) -> MigrationStatus:
        where = f"{self.schema}.{self.table_name}" if self.schema else self.table_name
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table(self.table_name, schema=self.schema):
                    return MigrationStatus(
                        provider=self.kind, current=[], table_found=False, detail=f"no table {where}"
                    )
                versions = table(self.table_name, column("version"), column("dirty"), schema=self.schema)
                rows = conn.execute(select(versions.c.version, versions.c.dirty)).all()
        except SQLAlchemyError as exc:
            raise unavailable(self.engine, exc) from None
        current = [str(int(version)) for version, _ in rows]
        dirty = any(bool(flag) for _, flag in rows)
        detail = f"{where}: " + (", ".join(f"version {v}, dirty {bool(d)}".lower() for v, d in rows) or "empty")
        return MigrationStatus(provider=self.kind, current=current, dirty=dirty, detail=detail)
