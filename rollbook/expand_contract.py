"""Expand/contract, the guide's safe database upgrade: which phase a database is in, read from its real state.

The guide's example renames `users.email` to `new_email` in three phases: expand (add the new column beside the
old one), copy the data, contract (drop the old column, only after the code reading the new one runs
everywhere). With Alembic the two schema changes are two branches, labelled `expand` and `contract`
(OpenStack Neutron's layout): `alembic upgrade expand@head`, later `alembic upgrade contract@head`.

The phase is never remembered by rollbook: it is read from the database each run, so a run that died anywhere
(mid-backfill included) is continued by running the same request again.

- not-expanded: some expand revision is not applied yet;
- expanded: expand applied, rows still hold the old value only (`new IS NULL AND old IS NOT NULL`);
- backfilled: expand applied, no row left to copy; only the approval gate and contract remain;
- contracted: the contract target is applied; nothing is left to do;
- inconsistent: a state the procedure never produces (contract applied without expand, or the expand branch
  applied while the new column is missing): a person must look, nothing is changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Phase = Literal["not-expanded", "expanded", "backfilled", "contracted", "inconsistent"]
Step = Literal["expand", "deploy", "backfill", "observe", "approve", "contract"]
STEPS: tuple[Step, ...] = ("expand", "deploy", "backfill", "observe", "approve", "contract")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# an Alembic target as `alembic upgrade` takes it: a revision id, `heads`, `<branch>@head`, `<branch>@<rev>`
TARGET_PATTERN = r"^[A-Za-z0-9_.-]{1,64}(@[A-Za-z0-9_.+-]{1,64})?$"


def quoted(name: str) -> str:
    """`schema.table` or `column` as double-quoted identifiers (ANSI: PostgreSQL and SQLite). Only names that
    match the identifier rule get here, so no quote can be inside one."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(_IDENTIFIER.match(part) for part in parts):
        raise ValueError(f"not an SQL identifier: {name!r}")
    return ".".join(f'"{part}"' for part in parts)


class Backfill(BaseModel):
    """The copy between the two shapes: which table, its key, the old and the new column."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    table: str = Field(
        max_length=127, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$",
        description="The table, `table` or `schema.table`.",
    )  # fmt: skip
    key_column: str = Field(max_length=63, pattern=_IDENTIFIER.pattern, description="A unique, ordered key.")
    old_column: str = Field(max_length=63, pattern=_IDENTIFIER.pattern, description="The column being replaced.")
    new_column: str = Field(max_length=63, pattern=_IDENTIFIER.pattern, description="The column replacing it.")

    @model_validator(mode="after")
    def _three_columns(self) -> Self:
        if len({self.key_column, self.old_column, self.new_column}) != 3:
            raise ValueError("key_column, old_column and new_column must be three different columns")
        return self

    @property
    def table_name(self) -> str:
        return self.table.rpartition(".")[2]

    @property
    def schema_name(self) -> str | None:
        return self.table.rpartition(".")[0] or None


def backfill_sql(spec: Backfill) -> str:
    """One bounded batch: the first `:batch_size` rows (by key) still holding only the old value get it copied.
    Each batch is its own short transaction, so row locks are held briefly, and a batch repeated after a crash
    finds only the rows still to do (`new IS NULL`): the backfill resumes without remembering anything."""
    t, k, old, new = quoted(spec.table), quoted(spec.key_column), quoted(spec.old_column), quoted(spec.new_column)
    return (
        f"UPDATE {t} SET {new} = {old} WHERE {k} IN "
        f"(SELECT {k} FROM {t} WHERE {new} IS NULL AND {old} IS NOT NULL ORDER BY {k} LIMIT :batch_size)"
    )


def count_sql(spec: Backfill) -> str:
    """Rows left to copy, and rows already in the new shape."""
    t, old, new = quoted(spec.table), quoted(spec.old_column), quoted(spec.new_column)
    return (
        f"SELECT COUNT(CASE WHEN {new} IS NULL AND {old} IS NOT NULL THEN 1 END), "
        f"COUNT(CASE WHEN {new} IS NOT NULL THEN 1 END) FROM {t}"
    )


@dataclass(frozen=True)
class SchemaState:
    """What one look at the database found."""

    current: tuple[str, ...]  # alembic_version's rows (the applied heads)
    applied: frozenset[str]  # every revision applied: the heads and all they stand on (down revisions, depends_on)
    expand_revisions: tuple[str, ...]  # the revisions `expand_target` resolves to
    contract_revisions: tuple[str, ...]
    columns: frozenset[str] = field(default_factory=frozenset)  # the backfill table's columns ('' when no table)
    remaining: int | None = None  # rows left to copy; None when the two columns do not both exist
    filled: int | None = None  # rows holding the new value

    @property
    def expand_applied(self) -> bool:
        return all(rev in self.applied for rev in self.expand_revisions)

    @property
    def contract_applied(self) -> bool:
        return all(rev in self.applied for rev in self.contract_revisions)


def phase_of(state: SchemaState, spec: Backfill) -> tuple[Phase, str]:
    """The phase, and in words why (the report's evidence)."""
    heads = ", ".join(state.current) or "no revision"
    if state.contract_applied:
        if not state.expand_applied:
            return "inconsistent", (
                f"the contract revision(s) {', '.join(state.contract_revisions)} are applied but not the expand "
                f"revision(s) {', '.join(state.expand_revisions)} (database at {heads}): the scripts' contract "
                "branch must depend on the expand branch; look before changing anything"
            )
        return "contracted", f"database at {heads}: expand and contract both applied"
    if not state.expand_applied:
        return "not-expanded", f"database at {heads}: expand revision(s) {', '.join(state.expand_revisions)} to apply"
    if spec.new_column not in state.columns or spec.old_column not in state.columns or state.remaining is None:
        missing = [c for c in (spec.old_column, spec.new_column) if c not in state.columns]
        return "inconsistent", (
            f"database at {heads} (expand applied) but {spec.table} has no column {', '.join(missing) or '?'}: "
            "the backfill cannot be judged; look before changing anything"
        )
    if state.remaining:
        return "expanded", f"database at {heads}: expand applied, {state.remaining} row(s) left to backfill"
    return "backfilled", f"database at {heads}: expand applied, every row backfilled ({state.filled} in the new shape)"


def steps_to_run(phase: Phase) -> tuple[Step, ...]:
    """The steps still to do from `phase`, in order. Deploy is never skipped before the gate: the deploy flow
    recognises a release already live (a re-run changes nothing there) and the new code must run before the
    old column goes, whatever the database says."""
    if phase in ("contracted", "inconsistent"):
        return ()
    if phase == "not-expanded":
        return STEPS
    return STEPS[1:]


def progress_percent(filled: int, remaining: int) -> float:
    """The backfill's progress for the artifact: rows in the new shape over all rows holding a value."""
    total = filled + remaining
    return 100.0 if total == 0 else round(100.0 * filled / total, 1)


@dataclass(frozen=True)
class Sample:
    """One look during the observe window."""

    seconds: float
    remaining: int
    pods_ready: bool | None  # None: no deploy to watch


def observe_verdict(samples: list[Sample]) -> tuple[bool, str]:
    """Contract may be asked for only when, all through the window, the new code stayed available and at its end
    no row is left in the old shape only (rows appearing meanwhile mean old code still writes `old` alone)."""
    if not samples:
        return False, "nothing observed"
    down = [s for s in samples if s.pods_ready is False]
    last = samples[-1]
    if down:
        return False, (
            f"the new code was not available in {len(down)} of {len(samples)} look(s) "
            f"(first at {down[0].seconds:.0f}s): contract would leave no code able to fall back"
        )
    if last.remaining:
        return False, (
            f"{last.remaining} row(s) hold the old value only at the end of the window: something still writes "
            "the old shape alone; find it, then run again (the backfill continues)"
        )
    watched = " and the new code stayed available" if last.pods_ready else ""
    return True, f"{len(samples)} look(s) over {last.seconds:.0f}s: no row left to backfill{watched}"
