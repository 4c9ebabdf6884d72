"""Which database schema a release works with, and whether an older release may be brought back onto today's.

The guide's critical rule: never roll an application back past a database migration its code cannot read. Each
release therefore declares the schema versions it works with, in an annotation on its pod template (so it travels
with every ReplicaSet revision and every helm release revision's rendered manifest):

    rollbook.dev/schema-compatible: "<declaration>"

With helm, set it through the chart's pod annotations (the demo chart: `podAnnotations`); rollbook reads it from
the manifest stored with each release revision, so `helm rollback` to revision N is judged by what N declared.

The declaration is read by the guard's migration tool (`kind`):
- golang-migrate, Flyway, Rails (ordered versions): a range `MIN..MAX`, both ends inclusive, either end left out
  for "open" (`3..`, `..7`), or one version `V` for exactly `V..V`. A version is numbers separated by `.` or `_`
  (`7`, `1.2.10`, `20240101120000`), compared as numbers (1.2 == 1.2.0 < 1.10, see `version_key`).
- Alembic (a revision graph): a comma-separated list of the revision ids the code works with (`ae1027a6acf,
  27c6a30d7c24`), or a range `DOWN..UP` meaning DOWN, UP and every revision between them in the graph (either end
  open: `DOWN..` is DOWN and all its descendants, `..UP` is UP and all its ancestors). A range needs the scripts
  (the guard's `script_location`) to be resolved; a list does not.
Blanks around the parts are ignored; anything else is an invalid declaration.

Verdicts, given the database's state as its migration tool recorded it:
- compatible: every applied version/revision is inside the declaration;
- incompatible: it is not (the reason names the database's version and the declared range);
- undeclared: the target carries no declaration. Allowed, with a warning, unless the guard says
  `require_declaration` (then refused as unknown would be): releases built before the guard existed must stay
  reachable, and a team can make the declaration mandatory once every release carries it;
- invalid: the declaration cannot be read (or an Alembic range names a revision the scripts do not have): refused;
- unknown: the database cannot be judged (a migration is running, a version is dirty/half applied, no version
  recorded, a version that is not a number): refused, since safety cannot be shown.
Everything refused may be overridden by the caller (with approval); that decision belongs to the flows.
Pure functions, unit-tested in tests/unit/test_schema_compat.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ANNOTATION = "rollbook.dev/schema-compatible"
ORDERED_KINDS = frozenset({"golang-migrate", "flyway", "rails"})
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"})
MAX_DECLARATION = 1000
_VERSION = re.compile(r"^[0-9]+([._][0-9]+)*$")
_REVISION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Verdict = Literal["compatible", "incompatible", "undeclared", "invalid", "unknown"]


class DeclarationInvalid(ValueError):
    """A schema declaration that cannot be read; the message says what is wrong."""


def version_key(version: str) -> tuple[int, ...]:
    """A dotted numeric version (Flyway's `1.2.10`, a timestamp) as comparable numbers, trailing zeros dropped,
    so 1.2 == 1.2.0 < 1.10; ValueError when a part is not a number."""
    parts = [int(part) for part in version.replace("_", ".").split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


@dataclass(frozen=True)
class Declaration:
    """A parsed declaration: a range (`low`/`high`, None = open) or, for Alembic, a list of `revisions`."""

    raw: str
    low: str | None = None
    high: str | None = None
    revisions: tuple[str, ...] = ()

    @property
    def is_range(self) -> bool:
        return not self.revisions

    def shown(self) -> str:
        if self.revisions:
            return ", ".join(self.revisions)
        return f"{self.low or ''}..{self.high or ''}"


def parse_declaration(raw: str, *, kind: str) -> Declaration:
    """The declaration `raw` as `kind`'s versions; DeclarationInvalid naming the problem (see the module)."""
    text = raw.strip()
    if not text:
        raise DeclarationInvalid("the declaration is empty")
    if len(text) > MAX_DECLARATION:
        raise DeclarationInvalid(f"the declaration is longer than {MAX_DECLARATION} characters")
    pattern, what = (
        (_VERSION, "a version (numbers and . or _)") if kind in ORDERED_KINDS else (_REVISION, "a revision id")
    )
    if ".." in text:
        low, _, high = (part.strip() for part in text.partition(".."))
        if not low and not high:
            raise DeclarationInvalid(f"{raw!r}: a range needs at least one end")
        for end in (low, high):
            if end and not pattern.match(end):
                raise DeclarationInvalid(f"{raw!r}: {end!r} is not {what}")
        if kind in ORDERED_KINDS and low and high and version_key(low) > version_key(high):
            raise DeclarationInvalid(f"{raw!r}: the lower end {low} is above the upper end {high}")
        return Declaration(raw=text, low=low or None, high=high or None)
    if kind in ORDERED_KINDS:
        if not pattern.match(text):
            raise DeclarationInvalid(f"{raw!r} is not {what} or a range MIN..MAX")
        return Declaration(raw=text, low=text, high=text)
    ids = [part.strip() for part in text.split(",")]
    bad = [part for part in ids if not pattern.match(part)]
    if bad:
        raise DeclarationInvalid(f"{raw!r}: {bad[0]!r} is not a revision id")
    return Declaration(raw=text, revisions=tuple(dict.fromkeys(ids)))


@dataclass(frozen=True)
class SchemaState:
    """The database's schema as its migration tool recorded it (built by the task that read it)."""

    kind: str
    current: tuple[str, ...]
    dirty: bool = False
    in_progress: bool = False
    table_found: bool = True
    detail: str = ""
    # Alembic: revision -> its down revisions, from the scripts (None when the guard gave no script_location)
    parents: Mapping[str, tuple[str, ...]] | None = None

    def shown(self) -> str:
        return ", ".join(self.current) or "none"


@dataclass(frozen=True)
class SchemaVerdict:
    verdict: Verdict
    reason: str
    declared: str = ""  # the raw declaration, "" when there is none
    allowed: bool = False  # may the rollback go ahead without an override?

    def line(self) -> str:
        return f"{self.verdict}: {self.reason}"


def declaration_of_template(template: Mapping[str, Any]) -> str | None:
    """The declaration on a pod template (its metadata annotations), None when absent."""
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    return None if value is None else str(value)


def declarations_of_manifest(docs: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    """'Deployment/web' -> the declaration on its pod template, for every workload of a rendered manifest."""
    found: dict[str, str | None] = {}
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        spec = doc.get("spec") or {}
        if doc.get("kind") == "CronJob":
            spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
        name = (doc.get("metadata") or {}).get("name", "?")
        found[f"{doc.get('kind')}/{name}"] = declaration_of_template(spec.get("template") or {})
    return found


def _ancestors(parents: Mapping[str, tuple[str, ...]], revision: str) -> set[str]:
    seen: set[str] = set()
    todo = list(parents.get(revision, ()))
    while todo:
        rev = todo.pop()
        if rev not in seen:
            seen.add(rev)
            todo.extend(parents.get(rev, ()))
    return seen


def resolve_revisions(declaration: Declaration, parents: Mapping[str, tuple[str, ...]] | None) -> set[str]:
    """The Alembic revisions a declaration covers; a range is resolved against the graph (DeclarationInvalid
    without one, or when an end is not in it, or DOWN is not an ancestor of UP)."""
    if not declaration.is_range:
        return set(declaration.revisions)
    if parents is None:
        raise DeclarationInvalid(
            f"{declaration.raw!r}: an Alembic range needs the scripts to resolve it (give the guard script_location)"
        )
    for end in (declaration.low, declaration.high):
        if end is not None and end not in parents:
            raise DeclarationInvalid(f"{declaration.raw!r}: revision {end} is not in the scripts")
    low, high = declaration.low, declaration.high
    if low is not None and high is not None and low != high and low not in _ancestors(parents, high):
        raise DeclarationInvalid(f"{declaration.raw!r}: {low} is not an ancestor of {high}")
    covered: set[str] = set()
    for rev in parents:
        above = low is None or rev == low or low in _ancestors(parents, rev)
        below = high is None or rev == high or rev in _ancestors(parents, high)
        if above and below:
            covered.add(rev)
    return covered


def _state_problem(state: SchemaState) -> str:
    if state.in_progress:
        return f"a migration is running now (database at {state.shown()}): the schema is changing"
    if state.dirty:
        return f"version {state.shown()} is dirty: a migration started and did not finish (a half-applied schema)"
    if not state.table_found or not state.current:
        return f"no migration is recorded in the database ({state.detail or 'no version'})"
    if state.kind in ORDERED_KINDS:
        try:
            [version_key(version) for version in state.current]
        except ValueError:
            return f"database version {state.shown()} is not a number"
    return ""


def judge(declared: str | None, state: SchemaState, *, require_declaration: bool = False) -> SchemaVerdict:
    """Can code declaring `declared` work with the database in `state`? (See the module's rules.)"""
    if problem := _state_problem(state):
        return SchemaVerdict("unknown", f"{state.kind}: {problem}", declared or "")
    if declared is None or not declared.strip():
        why = f"no {ANNOTATION} declaration; the database is at {state.shown()}"
        if require_declaration:
            return SchemaVerdict("undeclared", f"{why}, and the guard requires one", "", allowed=False)
        return SchemaVerdict("undeclared", f"{why}: allowed unchecked", "", allowed=True)
    try:
        declaration = parse_declaration(declared, kind=state.kind)
        if state.kind in ORDERED_KINDS:
            return _judge_ordered(declaration, state)
        return _judge_revisions(declaration, state)
    except DeclarationInvalid as exc:
        return SchemaVerdict("invalid", f"{ANNOTATION} is not a valid {state.kind} declaration: {exc}", declared)


def _judge_ordered(declaration: Declaration, state: SchemaState) -> SchemaVerdict:
    version = max(state.current, key=version_key)  # numbers: checked by _state_problem
    at = version_key(version)
    low = version_key(declaration.low) if declaration.low else None
    high = version_key(declaration.high) if declaration.high else None
    inside = (low is None or low <= at) and (high is None or at <= high)
    where = f"the database is at {state.kind} version {version}, the declared range is {declaration.shown()}"
    if inside:
        return SchemaVerdict("compatible", where, declaration.raw, allowed=True)
    side = "newer than" if high is not None and at > high else "older than"
    return SchemaVerdict("incompatible", f"{where}: the schema is {side} the code works with", declaration.raw)


def _judge_revisions(declaration: Declaration, state: SchemaState) -> SchemaVerdict:
    covered = resolve_revisions(declaration, state.parents)
    outside = [rev for rev in state.current if rev not in covered]
    shown = declaration.shown() if declaration.is_range else f"[{declaration.shown()}]"
    where = f"the database is at alembic revision {state.shown()}, the declared revisions are {shown}"
    if not outside:
        return SchemaVerdict("compatible", where, declaration.raw, allowed=True)
    return SchemaVerdict("incompatible", f"{where}: {', '.join(outside)} is not among them", declaration.raw)


@dataclass(frozen=True)
class ReleaseVerdict:
    """One verdict for a release with several workloads: the first refused one, else the first warning."""

    verdict: SchemaVerdict
    workloads: dict[str, str] = field(default_factory=dict)  # workload -> its verdict line


def judge_release(
    declarations: Mapping[str, str | None], state: SchemaState, *, require_declaration: bool = False
) -> ReleaseVerdict:
    """Judge every workload of a release; it is compatible only when every declared one is, and undeclared
    (with its consequences) when none declares anything."""
    verdicts = {w: judge(d, state, require_declaration=require_declaration) for w, d in sorted(declarations.items())}
    lines = {w: v.line() for w, v in verdicts.items()}
    if not verdicts:
        return ReleaseVerdict(judge(None, state, require_declaration=require_declaration), lines)
    refused = [(w, v) for w, v in verdicts.items() if not v.allowed and v.verdict != "undeclared"]
    declared = [(w, v) for w, v in verdicts.items() if v.verdict != "undeclared"]
    if refused:
        name, worst = refused[0]
    elif declared:
        name, worst = declared[0]
    else:
        name, worst = next(iter(verdicts.items()))
    return ReleaseVerdict(SchemaVerdict(worst.verdict, f"{name}: {worst.reason}", worst.declared, worst.allowed), lines)
