"""Change control shared by every flow that changes a cluster: plan mode, approval gate, audit annotations.

A flow takes `ChangeControls` as part of its parameters, so the Prefect UI shows the same three switches on
every destructive runbook, and every object a flow changes carries the same annotations saying who asked,
why, and which flow run did it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from prefect import get_run_logger, pause_flow_run
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rollbook import redaction
from rollbook.types import AuditText

ANNOTATION_PREFIX = "rollbook.dev/"


class ChangeControls(BaseModel):
    """Who asks for the change and how carefully to make it."""

    # strict: `plan` and `require_approval` are booleans and the timeouts numbers, never text that looks like one
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # stripped and never blank (AuditText): they are written on every object the run changes
    reason: AuditText = Field(
        min_length=3, max_length=500, description="Why this change is made; recorded on every object."
    )
    requested_by: AuditText = Field(min_length=1, max_length=100, description="Who asked for it (name or handle).")
    plan: bool = Field(default=False, description="Dry run: report exactly what would change and change nothing.")
    require_approval: bool = Field(default=False, description="Pause for a human to approve before changing anything.")
    approval_timeout_seconds: int = Field(
        default=3600, ge=10, le=7 * 24 * 3600, description="How long to wait for approval; no answer means no change."
    )
    approval_poll_seconds: int = Field(default=10, ge=1, le=60, description="How often the paused run checks.")


# How a changing flow ended when it returns (a flow that fails raises instead, with the evidence):
# changed: it made its change; unchanged: the cluster already was as asked (a re-run after success included);
# planned: plan mode, nothing changed; not-approved: rejected or timed out at a gate, nothing changed;
# reverted: it started, its own checks failed and it put things back as they were.
Outcome = Literal["changed", "unchanged", "planned", "not-approved", "reverted"]


class ChangeResult(BaseModel):
    """What every flow that changes a cluster returns; each flow adds its own evidence fields to a subclass."""

    outcome: Outcome
    summary: str = Field(description="One line a person reads first: what happened, to what, and why.")
    approval: str | None = Field(default=None, description="The approver's answer, when a gate was passed.")

    @property
    def changed(self) -> bool:
        return self.outcome == "changed"

    @model_validator(mode="wrap")
    @classmethod
    def _scrubbed(cls, data: Any, handler: Any) -> Any:
        """A result is persisted and shown in the UI: evidence that quotes an error (a DSN in a driver's
        message) must not carry a secret there, so every string in it goes through the one masking path."""
        return handler(redaction.redact_value(data) if isinstance(data, dict) else data)


class Decision(RunInput):
    """The form an approver fills in when resuming a paused run."""

    approved: bool
    comment: str = ""


def await_answer(form: type[RunInput], *, timeout_seconds: int, poll_seconds: int) -> Any | None:
    """The one place a flow pauses for a person: the typed answer, or None when nobody answered in time.

    Every gate (the plan approval below, the canary's per-step approve/reject/hold) pauses through here, so a
    paused run looks and times out the same way whichever runbook asks."""
    try:
        return pause_flow_run(wait_for_input=form, timeout=timeout_seconds, poll_interval=poll_seconds)
    except FlowPauseTimeout:
        return None


def request_approval(controls: ChangeControls, summary_markdown: str) -> Decision:
    """Pause until someone approves or rejects; a timeout counts as a rejection, so silence never changes a cluster."""
    if not controls.require_approval:
        return Decision(approved=True, comment="approval not required")
    form = Decision.with_initial_data(description=summary_markdown, approved=False)
    decision = await_answer(
        form, timeout_seconds=controls.approval_timeout_seconds, poll_seconds=controls.approval_poll_seconds
    )
    if decision is None:
        get_run_logger().warning("no approval within %ss: nothing changed", controls.approval_timeout_seconds)
        return Decision(approved=False, comment=f"timed out after {controls.approval_timeout_seconds}s")
    get_run_logger().info("approval answered: approved=%s comment=%r", decision.approved, decision.comment)
    assert isinstance(decision, Decision)
    return decision


def change_annotations(controls: ChangeControls, action: str, **details: str) -> dict[str, str]:
    """Annotations for an object this flow run changes; `details` are action-specific (e.g. to-revision)."""
    values = {
        "action": action,
        "reason": controls.reason,
        "requested-by": controls.requested_by,
        "flow-run-id": str(flow_run.id or ""),
        "flow-run-name": str(flow_run.name or ""),
        "changed-at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **details,
    }
    return {ANNOTATION_PREFIX + key: value for key, value in values.items()}
