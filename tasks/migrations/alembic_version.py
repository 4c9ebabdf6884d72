"""Alembic: the database's `alembic_version` table holds one row per applied head (`version_num`, the revision
id; several rows when branches are applied side by side). The table as Alembic creates it (MigrationContext,
`_version` table, on PostgreSQL):

    CREATE TABLE alembic_version (
        version_num VARCHAR(32) NOT NULL,
        CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
    )

Heads come from the app's script directory (`script_location`): `alembic.script.ScriptDirectory` reads the
revision files of `versions/` and builds the revision graph. That imports each revision file (its top level:
`revision = ...`, imports, function definitions) but never runs env.py, never connects, never upgrades.

How the check judges (the release declares one revision id, `expected_version`):
- at it: the table's rows are exactly that revision;
- several rows (branches applied side by side): never "at" one revision; the release must merge its branches
  (`alembic merge heads`) and declare the merge revision. Behind when every applied row is an ancestor of the
  expected revision (upgrading to it gets there), else diverged;
- the scripts have several heads: fails whatever the rows say (`alembic upgrade head` refuses them);
- with the scripts, behind/ahead/another branch is told from the revision graph; a revision the scripts do not
  have (database or release) is said so; without them only equal/not equal is known.
Running now, on PostgreSQL: another session holds or waits for a DDL lock on a table of the version table's
schema (Alembic runs each migration in a transaction, so a long ALTER holds its AccessExclusive lock to the end),
or the configured advisory lock key (deploy tooling that wraps `alembic upgrade` in pg_advisory_lock) is held.
Elsewhere it cannot be told, and the detail says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from sqlalchemy import Connection, column, inspect, select, table
from sqlalchemy.exc import SQLAlchemyError

from tasks.migrations.base import (
    Activity,
    MigrationStatus,
    MigrationUnavailable,
    Relation,
    VersionTableReader,
    cannot_tell_running,
    locked_out,
    migration_activity,
    unavailable,
)

DEFAULT_TABLE = "alembic_version"


class Scripts:
    """The revision graph of an Alembic script directory: heads, and each revision's ancestors."""

    def __init__(self, location: str) -> None:
        from alembic.script import ScriptDirectory  # imported here: only this provider needs Alembic

        if not os.path.isdir(os.path.join(location, "versions")):
            raise MigrationUnavailable(
                f"alembic: no Alembic script directory at {location} (no versions/ folder)", transient=False
            )
        try:
            script = ScriptDirectory(location)
            self.heads = sorted(script.get_heads())
            self.parents: dict[str, tuple[str, ...]] = {}
            for revision in script.walk_revisions():
                down = revision.down_revision
                self.parents[revision.revision] = (
                    () if down is None else (down,) if isinstance(down, str) else tuple(down)
                )
        except MigrationUnavailable:
            raise
        except Exception as exc:  # a revision file that does not import, a cycle, a missing down_revision...
            first = " ".join(str(exc).strip().splitlines()[:1]) or type(exc).__name__
            raise MigrationUnavailable(
                f"alembic: cannot read the scripts at {location}: {first}", transient=False
            ) from None
        self.location = location

    def ancestors(self, revision: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.parents.get(revision, ()))
        while todo:
            rev = todo.pop()
            if rev not in seen:
                seen.add(rev)
                todo.extend(self.parents.get(rev, ()))
        return seen


def relation(current: list[str], expected: str, scripts: Scripts | None) -> tuple[Relation | None, str]:
    """How the applied revisions stand to `expected` (see the module's rules); None when only text is known."""
    if current == [expected]:
        return "at", ""
    if not current:
        return None, ""
    shown = ", ".join(current)
    if scripts is None:
        if len(current) > 1:
            return "diverged", (
                f"several revisions applied ({shown}), a branched history; the release expects the single "
                f"revision {expected}: merge the branches (alembic merge heads) and declare the merge revision"
            )
        return None, ""
    if expected not in scripts.parents:
        return "unknown", f"the release's revision {expected} is not in the scripts at {scripts.location}"
    strangers = [rev for rev in current if rev not in scripts.parents]
    if strangers:
        return "unknown", (
            f"database at revision {', '.join(strangers)}, which the scripts at {scripts.location} do not have "
            f"(a newer release's migration, or another app's database); the release expects {expected}"
        )
    below = scripts.ancestors(expected)
    if all(rev in below for rev in current):
        return "behind", f"database behind: at revision {shown}, the release expects {expected}"
    if len(current) > 1:
        return "diverged", (
            f"several revisions applied ({shown}), a branched history; the release expects the single revision "
            f"{expected}: merge the branches (alembic merge heads) and declare the merge revision"
        )
    if expected in scripts.ancestors(current[0]):
        return "ahead", (
            f"database ahead: at revision {shown}, which comes after the release's {expected} "
            "(a newer schema than this release declares)"
        )
    return "diverged", f"database at revision {shown}, on another branch than the release's {expected}"


class Alembic(VersionTableReader):
    kind = "alembic"
    default_table = DEFAULT_TABLE

    def _running(self, conn: Connection) -> Activity | None:
        keys = (
            {}
            if self.options.advisory_lock_key is None
            else {"the configured migration lock": self.options.advisory_lock_key}
        )
        return migration_activity(conn, self.schema, keys)

    def read(self) -> MigrationStatus:
        scripts = Scripts(self.options.script_location) if self.options.script_location else None
        where = self.where
        try:
            with self.engine.connect() as conn:
                running = self._running(conn)
                found = inspect(conn).has_table(self.table_name, schema=self.schema)
                rows: Iterable[tuple[object]] = ()
                blocked = locked_out(self.table_name, where, running)
                if found and not blocked:
                    versions = table(self.table_name, column("version_num"), schema=self.schema)
                    rows = conn.execute(select(versions.c.version_num)).all()
                dialect = conn.dialect.name
        except SQLAlchemyError as exc:
            raise unavailable(self.engine, exc) from None
        current = sorted(str(version) for (version,) in rows)
        notes = [f"{where}: " + (", ".join(current) or "empty") if found else f"no table {where}"]
        heads = scripts.heads if scripts else []
        if scripts:
            notes.append(
                f"scripts at {scripts.location}: head{'s' if len(heads) > 1 else ''} {', '.join(heads) or 'none'}"
            )
        if running is None:
            notes.append(cannot_tell_running(dialect))
        elif running:
            notes += running.found
        if blocked:
            notes.append(blocked)
        rel, why = relation(current, self.options.expected, scripts) if found else (None, "")
        return MigrationStatus(
            provider=self.kind,
            current=current,
            head=heads[0] if len(heads) == 1 else None,
            heads=heads,
            in_progress=bool(running),
            table_found=found,
            relation=rel,
            relation_detail=why,
            detail="; ".join(notes),
        )
