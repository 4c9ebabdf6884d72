"""Rails (ActiveRecord): `schema_migrations` holds one row per applied migration, its version the timestamp
prefix of the migration file (`20260101120000_add_users.rb`). As ActiveRecord's SchemaMigration creates it on
PostgreSQL (Rails 5 and later):

    CREATE TABLE "schema_migrations" ("version" character varying NOT NULL PRIMARY KEY)

Rules read here:
- current: the highest version by number (they are timestamps; compared as integers, not as text);
- the applied set is the whole table, so a release version that was never applied while newer ones were (a
  migration merged late, skipped by `db:migrate`) is told apart from "ahead";
- no dirty flag: on PostgreSQL a migration and its row commit together, so a failed one leaves no row;
- running now (PostgreSQL): ActiveRecord::Migrator holds the advisory lock
  `MIGRATOR_SALT * Zlib.crc32(current_database)` (salt 2053462845) for the whole `db:migrate`; that key
  held by another session, or a DDL lock on a table of the version table's schema, is a migration running.
The table has golang-migrate's name but not its shape (no `dirty` column): choose the kind that wrote it.
"""

from __future__ import annotations

import zlib

from sqlalchemy import column, inspect, select, table, text
from sqlalchemy.exc import SQLAlchemyError

from tasks.migrations.base import (
    MigrationStatus,
    Relation,
    VersionTableReader,
    cannot_tell_running,
    locked_out,
    migration_activity,
    unavailable,
)

DEFAULT_TABLE = "schema_migrations"
MIGRATOR_SALT = 2053462845  # activerecord/lib/active_record/migration.rb, ActiveRecord::Migrator


def advisory_lock_id(database: str) -> int:
    """ActiveRecord::Migrator#generate_migrator_advisory_lock_id for a database name."""
    return MIGRATOR_SALT * zlib.crc32(database.encode())


class Rails(VersionTableReader):
    kind = "rails"
    default_table = DEFAULT_TABLE

    def read(self) -> MigrationStatus:
        where = self.where
        try:
            with self.engine.connect() as conn:
                dialect = conn.dialect.name
                keys: dict[str, int] = {}
                if dialect == "postgresql":
                    database = str(conn.execute(text("SELECT current_database()")).scalar())
                    keys["ActiveRecord's migration lock"] = advisory_lock_id(database)
                running = migration_activity(conn, self.schema, keys)
                found = inspect(conn).has_table(self.table_name, schema=self.schema)
                rows = []
                blocked = locked_out(self.table_name, where, running)
                if found and not blocked:
                    versions = table(self.table_name, column("version"), schema=self.schema)
                    rows = [str(version) for (version,) in conn.execute(select(versions.c.version))]
        except SQLAlchemyError as exc:
            raise unavailable(self.engine, exc) from None
        numbers = {int(v): v for v in rows if v.strip().isdigit()}
        odd = sorted(v for v in rows if not v.strip().isdigit())
        current = [numbers[max(numbers)].strip()] if numbers else []
        if not found:
            notes = [f"no table {where}"]
        else:
            notes = [f"{where}: {len(rows)} version(s), " + (f"newest {current[0]}" if current else "none")]
        if odd:
            notes.append(f"not a Rails version, left out: {', '.join(odd)}")
        if running is None:
            notes.append(cannot_tell_running(dialect))
        elif running:
            notes += running.found
        if blocked:
            notes.append(blocked)
        rel, why = self._relation(set(numbers), current, self.options.expected)
        return MigrationStatus(
            provider=self.kind,
            current=current,
            in_progress=bool(running),
            table_found=found,
            relation=rel,
            relation_detail=why,
            detail="; ".join(notes),
        )

    @staticmethod
    def _relation(applied: set[int], current: list[str], expected: str) -> tuple[Relation | None, str]:
        if not current or not expected:
            return None, ""
        if not expected.isdigit():
            return "unknown", f"the release's version {expected} is not a Rails migration version (a timestamp)"
        want, at = int(expected), max(applied)
        if at == want:
            return "at", ""
        if at < want:
            return "behind", f"database behind: at version {current[0]}, the release expects {expected}"
        if want not in applied:
            return "diverged", (
                f"migration {expected} was never applied, though newer ones were (newest {current[0]}): "
                "run db:migrate, which applies the missing one"
            )
        return "ahead", (
            f"database ahead: at version {current[0]}, the release expects {expected} "
            "(a newer schema than this release declares)"
        )
