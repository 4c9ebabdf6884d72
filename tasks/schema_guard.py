"""The migration-aware rollback guard's side of the database: which database to read, and reading its schema.

`SchemaGuard` is the checklist's `MigrationCheck` (same provider kinds, same `database_block` or `dsn`, same
table and Alembic script options), with `expected_version` left optional (a rollback has no release version to
expect; the guard judges the target's own declaration) and one switch of its own, `require_declaration`.
`read_schema_state` reads the status read-only through the same providers, plus Alembic's revision graph when
`script_location` is given, for `rollbook.schema_compat` to judge.
"""

from __future__ import annotations

from prefect import task
from pydantic import Field

from rollbook.schema_compat import SchemaState
from rollbook.types import FormOptional
from tasks.migrations import MigrationCheck, MigrationUnavailable, database_dsn, make_provider
from tasks.migrations.alembic_version import Scripts
from tasks.migrations.base import ProviderOptions, engine_for
from tasks.policies import DATABASE_READ


class SchemaGuard(MigrationCheck):
    """The database whose schema an older release must still work with (read-only), and how strict to be."""

    expected_version: FormOptional[str] = Field(  # type: ignore[assignment]
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Not used by the guard (the target's declaration is judged); accepted for a shared check.",
    )
    require_declaration: bool = Field(
        default=False,
        description="Refuse a target revision that declares no rollbook.dev/schema-compatible range "
        "(default: allowed with a warning).",
    )

    def options(self) -> ProviderOptions:
        return ProviderOptions(
            expected=self.expected_version or "",
            table_name=self.table,
            script_location=self.script_location,
            advisory_lock_key=self.advisory_lock_key,
        )


@task(**DATABASE_READ)
def read_schema_state(guard: SchemaGuard) -> SchemaState:
    """The database's migration state as the guard judges it; MigrationUnavailable (retried when transient)
    when it cannot be read. Nothing is written: the providers' sessions are read-only."""
    engine = engine_for(database_dsn(guard))
    try:
        status = make_provider(guard.kind, engine, options=guard.options()).read()
    finally:
        engine.dispose()
    parents = Scripts(guard.script_location).parents if guard.script_location else None
    return SchemaState(
        kind=guard.kind,
        current=tuple(status.current),
        dirty=status.dirty,
        in_progress=status.in_progress,
        table_found=status.table_found,
        detail=status.detail,
        parents=parents,
    )


__all__ = ["MigrationUnavailable", "SchemaGuard", "read_schema_state"]
