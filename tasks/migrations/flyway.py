"""Flyway: `flyway_schema_history` holds one row per migration run, in `installed_rank` order. As Flyway creates it
on PostgreSQL (its createMetaDataTable.sql):

    CREATE TABLE "flyway_schema_history" (
        "installed_rank" INT NOT NULL,
        "version" VARCHAR(50),
        "description" VARCHAR(200) NOT NULL,
        "type" VARCHAR(20) NOT NULL,
        "script" VARCHAR(1000) NOT NULL,
        "checksum" INTEGER,
        "installed_by" VARCHAR(100) NOT NULL,
        "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
        "execution_time" INTEGER NOT NULL,
        "success" BOOLEAN NOT NULL
    );
    ALTER TABLE "flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
    CREATE INDEX "flyway_schema_history_s_idx" ON "flyway_schema_history" ("success");

Rules read here:
- current: the highest version among the successfully applied versioned migrations (type SQL, JDBC, BASELINE...;
  version NOT NULL). Repeatable migrations (version NULL) and the `<< Flyway Schema Creation >>` row are not
  versions. An undo (type UNDO_SQL / UNDO_JDBC) or a `repair`-marked DELETE row takes its version out again.
- versions compare as Flyway's MigrationVersion does: dot-separated numbers, trailing zeros ignored (1.1 < 1.10).
- a row with success = false is a failed migration: dirty, with its version (or script, for a repeatable) in the
  detail; Flyway refuses to migrate until `flyway repair` removes it. (Where DDL is transactional, PostgreSQL,
  Flyway rolls a failed migration back with its row, so such rows come from non-transactional migrations.)
- running now (PostgreSQL): another session holding or waiting for a DDL lock on a table of the history
  table's schema (Flyway runs a migration in one transaction, so its locks stay until it ends). Flyway's own
  advisory lock is not looked for: its key is not matched here against a real Flyway.
"""

from __future__ import annotations

from sqlalchemy import column, inspect, select, table
from sqlalchemy.exc import SQLAlchemyError

from tasks.migrations.base import (
    MigrationStatus,
    Relation,
    VersionTableReader,
    cannot_tell_running,
    locked_out,
    migration_activity,
    unavailable,
    version_key,
)

DEFAULT_TABLE = "flyway_schema_history"


class Flyway(VersionTableReader):
    kind = "flyway"
    default_table = DEFAULT_TABLE

    def read(self) -> MigrationStatus:
        where = self.where
        try:
            with self.engine.connect() as conn:
                running = migration_activity(conn, self.schema, {})
                dialect = conn.dialect.name
                if not inspect(conn).has_table(self.table_name, schema=self.schema):
                    notes = [f"no table {where}"] + (
                        [cannot_tell_running(dialect)] if running is None else running.found
                    )
                    return MigrationStatus(
                        provider=self.kind,
                        current=[],
                        in_progress=bool(running),
                        table_found=False,
                        detail="; ".join(notes),
                    )
                blocked = locked_out(self.table_name, where, running)
                if blocked:
                    assert running is not None
                    return MigrationStatus(
                        provider=self.kind,
                        current=[],
                        in_progress=True,
                        detail="; ".join([*running.found, blocked]),
                    )
                history = table(
                    self.table_name,
                    *(column(name) for name in ("installed_rank", "version", "description", "type", "script")),
                    column("success"),
                    schema=self.schema,
                )
                rows = conn.execute(
                    select(
                        history.c.installed_rank,
                        history.c.version,
                        history.c.description,
                        history.c.type,
                        history.c.script,
                        history.c.success,
                    ).order_by(history.c.installed_rank)
                ).all()
        except SQLAlchemyError as exc:
            raise unavailable(self.engine, exc) from None
        applied: dict[tuple[int, ...], str] = {}
        failed: list[str] = []
        odd: list[str] = []
        for rank, version, description, kind, script, success in rows:
            kind = str(kind).upper()
            if not success:
                what = f"version {version}" if version is not None else f"repeatable {script}"
                failed.append(f"{what} ({description}) failed, installed_rank {rank}")
                continue
            if version is None:
                continue
            try:
                key = version_key(str(version))
            except ValueError:
                odd.append(f"version {version!r} at installed_rank {rank} is not a Flyway version, left out")
                continue
            if kind.startswith("UNDO") or kind == "DELETE":
                applied.pop(key, None)
            else:
                applied[key] = str(version)
        current = [applied[max(applied)]] if applied else []
        notes = [f"{where}: {len(rows)} row(s), " + (f"at version {current[0]}" if current else "no version applied")]
        notes += failed + odd
        if running is None:
            notes.append(cannot_tell_running(dialect))
        elif running:
            notes += running.found
        rel, why = self._relation(applied, current, self.options.expected)
        return MigrationStatus(
            provider=self.kind,
            current=current,
            dirty=bool(failed),
            dirty_reason=(
                f"{'; '.join(failed)}: repair the schema and run `flyway repair` before deploying" if failed else ""
            ),
            in_progress=bool(running),
            relation=rel,
            relation_detail=why,
            detail="; ".join(notes),
        )

    @staticmethod
    def _relation(
        applied: dict[tuple[int, ...], str], current: list[str], expected: str
    ) -> tuple[Relation | None, str]:
        if not current or not expected:
            return None, ""
        try:
            want = version_key(expected)
        except ValueError:
            return "unknown", f"the release's version {expected} is not a Flyway version (numbers and dots)"
        at = max(applied)
        if at == want:
            return "at", ""
        if at < want:
            return "behind", f"database behind: at version {current[0]}, the release expects {expected}"
        if want not in applied:
            return "diverged", (
                f"version {expected} was never applied (or was undone), though newer ones were: at {current[0]}"
            )
        return "ahead", (
            f"database ahead: at version {current[0]}, the release expects {expected} "
            "(a newer schema than this release declares)"
        )
