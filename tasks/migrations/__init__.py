"""Database-migration status providers, in the plug-in shape: the `MigrationStatusProvider` Protocol
(base.py), the `MigrationKind` Literal, the registry, one module per implementation (golang_migrate.py), and
`MigrationCheck`, the checklist request's part that says which provider reads which database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy import Engine

from rollbook.form_rules import exactly_one, form_rules_schema
from rollbook.plugins import lookup, registry
from rollbook.types import FormOptional
from tasks.migrations.base import (
    MigrationStatus,
    MigrationStatusProvider,
    MigrationUnavailable,
    engine_for,
)
from tasks.migrations.golang_migrate import GolangMigrate

MigrationKind = Literal["golang-migrate"]
ProviderFactory = Callable[[Engine, str | None], MigrationStatusProvider]


def _golang_migrate(engine: Engine, table_name: str | None) -> MigrationStatusProvider:
    return GolangMigrate(engine, table_name=table_name)


PROVIDERS: dict[str, ProviderFactory] = registry(MigrationKind, {"golang-migrate": _golang_migrate})

_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$"


class MigrationCheck(BaseModel):
    """Which tool's table to read, in which database, and the version the release expects to find."""

    # strict: a version is text as the tool wrote it (`3`, a number, is not the version "3")
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, json_schema_extra=form_rules_schema)
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        exactly_one("database_block", "dsn", "migration: give exactly one of database_block or dsn"),
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

    @model_validator(mode="after")
    def _one_database(self) -> Self:
        if bool(self.database_block) == bool(self.dsn and self.dsn.get_secret_value()):
            raise ValueError("migration: give exactly one of database_block or dsn")
        return self


def make_provider(kind: str, engine: Engine, *, table_name: str | None = None) -> MigrationStatusProvider:
    return lookup(PROVIDERS, kind, concern="migration status provider")(engine, table_name)


__all__ = [
    "PROVIDERS",
    "MigrationCheck",
    "MigrationKind",
    "MigrationStatus",
    "MigrationStatusProvider",
    "MigrationUnavailable",
    "engine_for",
    "make_provider",
]
