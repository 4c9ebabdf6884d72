"""Database-migration status providers, in the plug-in shape: the `MigrationStatusProvider` Protocol
(base.py), the `MigrationKind` Literal, the registry, one module per implementation (golang_migrate.py,
alembic_version.py, flyway.py, rails.py), and
`MigrationCheck`, the checklist request's part that says which provider reads which database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy import Engine

from blocks import DatabaseConnection
from rollbook import redaction
from rollbook.form_rules import exactly_one, form_rules_schema, given, requires, when_value
from rollbook.plugins import lookup, registry
from rollbook.types import FormOptional
from tasks.migrations.alembic_version import Alembic
from tasks.migrations.base import (
    MigrationStatus,
    MigrationStatusProvider,
    MigrationUnavailable,
    ProviderOptions,
    engine_for,
)
from tasks.migrations.flyway import Flyway
from tasks.migrations.golang_migrate import GolangMigrate
from tasks.migrations.rails import Rails

MigrationKind = Literal["golang-migrate", "alembic", "flyway", "rails"]
ProviderFactory = Callable[[Engine, ProviderOptions], MigrationStatusProvider]


def _golang_migrate(engine: Engine, options: ProviderOptions) -> MigrationStatusProvider:
    return GolangMigrate(engine, table_name=options.table_name)


PROVIDERS: dict[str, ProviderFactory] = registry(
    MigrationKind, {"golang-migrate": _golang_migrate, "alembic": Alembic, "flyway": Flyway, "rails": Rails}
)

_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"


class MigrationCheck(BaseModel):
    """Which tool's table to read, in which database, and the version the release expects to find."""

    # strict: a version is text as the tool wrote it (`3`, a number, is not the version "3")
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, json_schema_extra=form_rules_schema)
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        exactly_one("database_block", "dsn", "migration: give exactly one of database_block or dsn"),
        requires(given("script_location"), when_value("kind", "alembic"), "migration: script_location is Alembic's"),
        requires(
            given("advisory_lock_key"), when_value("kind", "alembic"), "migration: advisory_lock_key is for Alembic"
        ),
    )

    kind: MigrationKind = Field(description="The migration tool whose version table is read.")
    expected_version: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$", description="The version the release needs."
    )
    database_block: FormOptional[str] = Field(default=None, description="A saved 'Rollbook Database Connection' block.")
    dsn: FormOptional[SecretStr] = Field(default=None, description="A DSN instead of a block (direct runs and tests).")
    table: FormOptional[str] = Field(
        default=None, pattern=_IDENTIFIER, description="Version table, if not the default."
    )
    script_location: FormOptional[str] = Field(
        default=None,
        max_length=4096,
        pattern=r"^/[^\x00-\x1f\x7f]*$",
        description="Alembic: the app's script directory (absolute local path, the folder holding versions/), "
        "to know the heads and tell behind from ahead; env.py is never run.",
    )
    advisory_lock_key: FormOptional[int] = Field(
        default=None,
        ge=-(2**63),
        lt=2**63,
        description="Alembic on PostgreSQL: the pg_advisory_lock(bigint) key your tooling holds while migrating.",
    )

    @model_validator(mode="after")
    def _one_database(self) -> Self:
        if bool(self.database_block) == bool(self.dsn and self.dsn.get_secret_value()):
            raise ValueError("migration: give exactly one of database_block or dsn")
        if self.kind != "alembic":
            for name in ("script_location", "advisory_lock_key"):
                if getattr(self, name) is not None:
                    raise ValueError(f"migration: {name} is for kind alembic, not {self.kind}")
        if self.script_location is not None and "/../" in self.script_location + "/":
            raise ValueError("migration: script_location must not contain '..'")
        return self

    def options(self) -> ProviderOptions:
        return ProviderOptions(
            expected=self.expected_version,
            table_name=self.table,
            script_location=self.script_location,
            advisory_lock_key=self.advisory_lock_key,
        )


def database_dsn(config: MigrationCheck) -> str:
    """The DSN with its password, from the request or its 'Rollbook Database Connection' block, revealed only
    here, where an engine is made from it."""
    if config.dsn is not None:
        return redaction.reveal(config.dsn)
    block = DatabaseConnection.load(str(config.database_block))
    if not isinstance(block, DatabaseConnection):
        raise TypeError(f"block {config.database_block!r} is not a Rollbook Database Connection")
    return block.reveal_dsn()


def make_provider(
    kind: str,
    engine: Engine,
    *,
    table_name: str | None = None,
    options: ProviderOptions | None = None,
) -> MigrationStatusProvider:
    """The provider for `kind`; `options` (expected version, scripts...) or just a table name."""
    factory = lookup(PROVIDERS, kind, concern="migration status provider")
    return factory(engine, options or ProviderOptions(table_name=table_name))


__all__ = [
    "PROVIDERS",
    "MigrationCheck",
    "MigrationKind",
    "MigrationStatus",
    "MigrationStatusProvider",
    "MigrationUnavailable",
    "ProviderOptions",
    "engine_for",
    "make_provider",
]
