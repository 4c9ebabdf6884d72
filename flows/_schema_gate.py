"""The migration-aware rollback guard as every flow that brings back an older app version applies it.

A flow given `schema_guard` reads the database's schema once (read-only), judges the version it would bring
back by that version's own `rollbook.dev/schema-compatible` declaration (`rollbook.schema_compat`), and:
- compatible, or undeclared while the guard does not require declarations: goes on (undeclared is logged as a
  warning); the verdict is in the plan and in the audit annotations (`rollbook.dev/schema-guard`);
- anything else: refuses before changing anything (SchemaGuardRefused), naming the schema version, the declared
  range and the safe alternative (the newest compatible revision, or rolling forward);
- unless `override_schema_guard`: then it goes on, but always through the approval gate (even when the run's
  controls would not ask), and the override is recorded in the audit annotations.
Without `schema_guard` nothing is read and nothing changes in the flows' behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from prefect import get_run_logger
from pydantic import BaseModel, Field, model_validator

from blocks import KubernetesCluster
from rollbook import revisions
from rollbook.change import ChangeControls
from rollbook.form_rules import given, requires
from rollbook.revisions import JSON, RollbackRefused
from rollbook.schema_compat import (
    SchemaState,
    SchemaVerdict,
    declaration_of_template,
    declarations_of_manifest,
    judge,
    judge_release,
)
from tasks.helm_release import release_status, revision_details
from tasks.schema_guard import SchemaGuard, read_schema_state

SCHEMA_GUARD_KEY = "schema-guard"  # the audit annotation's detail key (change_annotations adds the prefix)
MAX_RECORDED = 500


class SchemaGuardRefused(RollbackRefused):
    """The older version cannot work with the database's current schema; nothing was changed."""


class SchemaGuardField(BaseModel):
    """The request part naming the database whose schema the version brought back must work with."""

    schema_guard: SchemaGuard | None = Field(
        default=None,
        description="Migration-aware guard: the database to read (as the checklist's migration check); a "
        "target whose rollbook.dev/schema-compatible range excludes its schema is refused. Empty: no guard.",
    )


class SchemaGuardFields(SchemaGuardField):
    """`schema_guard` and the explicit, approved way past it."""

    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        requires(given("override_schema_guard"), given("schema_guard"), "override_schema_guard needs schema_guard"),
    )

    override_schema_guard: bool = Field(
        default=False,
        description="Go ahead although the schema guard refuses the target: always asks for approval, and is "
        "recorded on the changed objects.",
    )

    @model_validator(mode="after")
    def _override_needs_guard(self) -> Self:
        if self.override_schema_guard and self.schema_guard is None:
            raise ValueError("override_schema_guard needs schema_guard")
        return self


@dataclass(frozen=True)
class SchemaGate:
    """The database's schema, read once per run, and how to judge a target by it."""

    state: SchemaState
    require_declaration: bool
    override: bool

    def judge_template(self, template: Mapping[str, Any]) -> SchemaVerdict:
        return judge(declaration_of_template(template), self.state, require_declaration=self.require_declaration)

    def judge_manifest(self, docs: Iterable[Mapping[str, Any]]) -> SchemaVerdict:
        declared = declarations_of_manifest(docs)
        return judge_release(declared, self.state, require_declaration=self.require_declaration).verdict


def open_gate(request: SchemaGuardField) -> SchemaGate | None:
    """The gate for this request (reads the database once), None without a schema_guard."""
    guard = request.schema_guard
    if guard is None:
        return None
    state = read_schema_state(guard)
    get_run_logger().info("schema guard: %s database at %s", state.kind, state.shown())
    return SchemaGate(
        state=state,
        require_declaration=guard.require_declaration,
        override=bool(getattr(request, "override_schema_guard", False)),
    )


@dataclass(frozen=True)
class GateDecision:
    """What the flow carries on with: the verdict (None without a guard) and whether it was overridden."""

    verdict: SchemaVerdict | None = None
    overridden: bool = False

    def line(self) -> str:
        """For the plan and the result."""
        if self.verdict is None:
            return ""
        prefix = "OVERRIDDEN (approval required), " if self.overridden else ""
        return prefix + self.verdict.line()

    def controls(self, controls: ChangeControls) -> ChangeControls:
        """An override always goes through the approval gate."""
        if self.overridden and not controls.require_approval:
            return controls.model_copy(update={"require_approval": True})
        return controls

    def details(self) -> dict[str, str]:
        """The audit annotation's detail (without the prefix), {} without a guard."""
        return audit_details(self.line())


def audit_details(line: str) -> dict[str, str]:
    """A verdict line as the `schema-guard` audit detail (bounded), {} for none."""
    if not line:
        return {}
    return {SCHEMA_GUARD_KEY: line if len(line) <= MAX_RECORDED else line[: MAX_RECORDED - 3] + "..."}


NO_GUARD = GateDecision()


def decide(gate: SchemaGate | None, verdict: SchemaVerdict | None, *, what: str, alternative: str) -> GateDecision:
    """Go on, go on overridden, or raise SchemaGuardRefused naming the verdict and `alternative`."""
    if gate is None or verdict is None:
        return NO_GUARD
    log = get_run_logger()
    if verdict.allowed:
        if verdict.verdict == "undeclared":
            log.warning("schema guard: %s: %s", what, verdict.reason)
        return GateDecision(verdict)
    if gate.override:
        log.warning("schema guard OVERRIDDEN for %s (approval required): %s", what, verdict.line())
        return GateDecision(verdict, overridden=True)
    raise SchemaGuardRefused(
        f"refusing {what}: the schema guard says {verdict.line()}. Nothing changed. {alternative} "
        "To go ahead anyway, pass override_schema_guard=true (it always asks for approval and is recorded)."
    )


def revert_side_decision(
    request: SchemaGuardFields, cluster: KubernetesCluster, *, namespace: str, release: str, helm: str, role: str
) -> GateDecision:
    """Canary and blue/green revert by sending traffic back to the release users are on now (`role`: stable,
    blue). That is only a way back if its code still works with the database's schema, so it is judged before
    the run changes anything: its live revision's manifest against the schema read now. Refused, the rollout
    does not start (a failed canary could not be reverted safely), unless overridden with approval."""
    gate = open_gate(request)
    if gate is None:
        return NO_GUARD
    live = release_status(cluster, namespace, release, helm)
    docs = revision_details(cluster, namespace, release, live.revision, helm).manifest
    what = (
        f"to start: the revert path sends traffic back to {role} release {release!r} (revision {live.revision}), "
        "which cannot be shown to work with the database's schema"
    )
    alternative = (
        f"Safe alternative: upgrade {release!r} to a version whose rollbook.dev/schema-compatible range includes "
        f"the {gate.state.kind} schema at {gate.state.shown()} first (so a revert lands on working code), or roll "
        "forward without a progressive rollout."
    )
    return decide(gate, gate.judge_manifest(docs), what=what, alternative=alternative)


def compatible_revision_hint(gate: SchemaGate, deployment: JSON, replica_sets: list[JSON], target: int) -> str:
    """deployment-undo's safe alternative: the newest other older revision whose declaration includes the current
    schema (undeclared ones are not offered), or rolling forward."""
    live = revisions.live_replica_set(deployment, replica_sets)
    for rs in sorted(replica_sets, key=_revision_or_zero, reverse=True):
        rev = _revision_or_zero(rs)
        if rs is live or rev in (0, target):
            continue
        if gate.judge_template((rs.get("spec") or {}).get("template") or {}).verdict == "compatible":
            return (
                f"Safe alternative: revision {rev} declares a range that includes the current schema: "
                f"to_revision={rev}, or last_known_good=true (which skips incompatible revisions)."
            )
    name = revisions.meta(deployment).get("name")
    return (
        f"Safe alternative: roll forward (no older revision of deployment {name!r} declares the "
        f"{gate.state.kind} schema at {gate.state.shown()}): fix and deploy a new revision."
    )


def _revision_or_zero(rs: JSON) -> int:
    try:
        return revisions.revision_of(rs)
    except (ValueError, TypeError):
        return 0
