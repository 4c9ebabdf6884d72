"""DB migration: the database's schema is at the version the release expects, and no migration is half done.

The provider (tasks/migrations/) reads its tool's version table, read-only; `migration_result` judges what it
read. Without a configured provider the check says so (warn): it never passes what it did not look at.
"""

from __future__ import annotations

import time

from prefect import task

from rollbook.checklist import CheckResult, Status, one_line
from tasks.migrations import (
    PROVIDERS,
    MigrationCheck,
    MigrationStatus,
    MigrationUnavailable,
    database_dsn,
    make_provider,
)
from tasks.migrations.base import engine_for, version_key
from tasks.policies import CHECK_DATABASE_READ


def _versions_differ(current: str, expected: str) -> str:
    """Why `current` is not `expected`: behind or ahead when both are numbers (golang-migrate, Flyway)."""
    try:
        ordered = version_key(current) < version_key(expected)
    except ValueError:
        ordered = None
    if ordered is not None:
        if ordered:
            return f"database behind: at version {current}, the release expects {expected}"
        return (
            f"database ahead: at version {current}, the release expects {expected} "
            "(a newer schema than this release declares)"
        )
    return f"database at version {current}, the release expects {expected}"


def migration_result(status: MigrationStatus, expected: str, seconds: float = 0.0) -> CheckResult:
    """Pass only when exactly one version is recorded, it is `expected`, and nothing is dirty or running; a
    provider that knows more than the version text (the applied set, the scripts' heads and revision graph) says
    how the database stands to `expected` in `relation`, and that is the reason given."""
    evidence = {**status.model_dump(), "expected": expected}
    version = ", ".join(status.current) or "none"
    if status.in_progress:
        reason = (
            f"{status.provider}: a migration is running now (at {version}); deploy after it finished ({status.detail})"
        )
    elif not status.table_found:
        reason = f"{status.provider}: {status.detail}: no migration has run here (expected version {expected})"
    elif status.dirty and status.dirty_reason:
        reason = f"{status.provider}: {status.dirty_reason}"
    elif status.dirty:
        reason = (
            f"{status.provider}: version {version} is dirty: a migration started and did not finish; repair the "
            "schema and clear the flag (`migrate force <version>`) before deploying"
        )
    elif len(status.heads) > 1:
        reason = (
            f"{status.provider}: the migration scripts have several heads ({', '.join(status.heads)}): merge them "
            f"(alembic merge heads) and declare the merge revision; the database is at {version}"
        )
    elif not status.current:
        reason = f"{status.provider}: no migration applied yet (expected version {expected})"
    elif status.relation not in (None, "at"):
        reason = f"{status.provider}: {status.relation_detail}"
    elif status.relation is None and len(status.current) > 1:
        reason = f"{status.provider}: several versions recorded ({version}), expected one: {expected}"
    elif status.relation is None and status.current[0] != expected:
        reason = f"{status.provider}: {_versions_differ(status.current[0], expected)}"
    else:
        reason = f"{status.provider}: at version {expected}, clean"
        return CheckResult(check="db-migration", status=Status.PASS, reason=reason, evidence=evidence, seconds=seconds)
    return CheckResult(
        check="db-migration", status=Status.FAIL, reason=one_line(reason), evidence=evidence, seconds=seconds
    )


def not_configured() -> CheckResult:
    return CheckResult(
        check="db-migration",
        status=Status.WARN,
        reason="not configured: no database migration provider given, migration status was not checked",
        evidence={"available_providers": sorted(PROVIDERS)},
    )


@task(**CHECK_DATABASE_READ)
def check_db_migration(config: MigrationCheck | None) -> CheckResult:
    """The configured provider's reading of the database, judged against the release's expected version.
    A database that cannot be reached is retried; a refusal (wrong password, no driver) answers `error`."""
    if config is None:
        return not_configured()
    started = time.monotonic()
    try:
        status = _read(config)
    except MigrationUnavailable as exc:
        if exc.transient:
            raise
        return CheckResult(check="db-migration", status=Status.ERROR, reason=one_line(str(exc)))
    return migration_result(status, config.expected_version, time.monotonic() - started)


def _read(config: MigrationCheck) -> MigrationStatus:
    engine = engine_for(database_dsn(config))
    try:
        return make_provider(config.kind, engine, options=config.options()).read()
    finally:
        engine.dispose()
