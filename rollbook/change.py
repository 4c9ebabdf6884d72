"""Change control shared by every flow that changes a cluster: plan mode, approval gate, audit annotations.

A flow takes `ChangeControls` as part of its parameters, so the Prefect UI shows the same three switches on
every destructive runbook, and every object a flow changes carries the same annotations saying who asked,
why, and which flow run did it.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import threading
import time
from typing import Any, ClassVar, Literal, Self, TypeVar

from prefect import get_run_logger, pause_flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, State
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from rollbook import redaction
from rollbook.form_rules import form_rules_schema, given, requires
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
    """The form an approver fills in when resuming a paused run: the answer, who gives it, and why.

    Approving needs a name (the form refuses it without, before the run resumes): it is recorded on the run
    (a tag and an artifact) and on every object the run then changes (`change_annotations`)."""

    model_config = ConfigDict(json_schema_extra=form_rules_schema)
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        requires(given("approved"), given("approver"), "approving needs your name in approver"),
    )

    approved: bool
    approver: str = Field(default="", max_length=100, description="Your name or handle; recorded on the run.")
    comment: str = Field(default="", max_length=500, description="Why; recorded with your name.")
    # private, so neither the form nor a resumer can set it: only `timed_out_after` says nobody answered
    _timed_out: bool = PrivateAttr(default=False)

    @classmethod
    def timed_out_after(cls, seconds: int) -> Self:
        """The answer silence gives: not approved, by nobody."""
        decision = cls(approved=False, comment=f"timed out after {seconds}s")
        decision._timed_out = True
        return decision

    @property
    def timed_out(self) -> bool:
        return self._timed_out

    @model_validator(mode="after")
    def _named_approval(self) -> Self:
        if self.approved and not self.approver.strip():
            raise ValueError("approving needs your name in approver")
        return self


# The own deadline of a pause: the server's is this much later, so the run answers its timeout itself (like a
# rejection: run NotApproved, nothing changed) instead of the server failing it ("paused and never resumed").
PAUSE_GRACE_SECONDS = 120
# Answers given in this process, by flow run: change_annotations writes the approver on what the run changes.
_ANSWERS: dict[str, dict[str, str]] = {}


def await_answer(
    form: type[RunInput], *, timeout_seconds: int, poll_seconds: int, plan_markdown: str = ""
) -> Any | None:
    """The one place a flow pauses for a person: the typed answer, or None when nobody answered in time.

    Every gate (the plan approval below, the canary's per-step approve/reject/hold) pauses through here, so a
    paused run looks and times out the same way whichever runbook asks: the plan is logged and published as an
    artifact of the paused run first (the run's page and logs show it, not only the resume dialog), and at the
    deadline the run resumes itself with the form's defaults, so a timeout ends like a rejection."""
    if plan_markdown:
        get_run_logger().info("waiting up to %ss for an answer to:\n%s", timeout_seconds, plan_markdown)
        create_markdown_artifact(
            f"# Waiting for an answer (up to {timeout_seconds} s)\n\n{plan_markdown}", description="awaiting answer"
        )
    deadline = _SelfResume(form)
    timer = threading.Timer(timeout_seconds, contextvars.copy_context().run, args=(deadline.resume,))
    timer.daemon = True
    timer.start()
    try:
        answer = pause_flow_run(
            wait_for_input=form, timeout=timeout_seconds + PAUSE_GRACE_SECONDS, poll_interval=poll_seconds
        )
    except FlowPauseTimeout:
        return None
    finally:
        timer.cancel()
    return None if deadline.fired else answer


class _SelfResume:
    """Resumes this paused run with the form's defaults at its deadline, unless a person answered first."""

    def __init__(self, form: type[RunInput]) -> None:
        self.defaults = {
            name: field.get_default(call_default_factory=True)
            for name, field in form.model_fields.items()
            if not field.is_required()
        }
        self.flow_run_id = flow_run.id
        self.fired = False

    def resume(self, attempts: int = 5) -> None:
        """A few tries (the input schema is saved just after the run pauses; the API may blink); a run that is
        no longer paused was answered by a person. If all fail, the server's own (later) deadline ends it."""
        for attempt in range(attempts):
            try:
                with get_client(sync_client=True) as client:
                    run = client.read_flow_run(self.flow_run_id)
                    if not (run.state and run.state.is_paused()):
                        return
                    result = client.resume_flow_run(self.flow_run_id, run_input=self.defaults)
            except Exception:
                result = None
            if result is not None and result.status == SetStateStatus.ACCEPT:
                self.fired = True
                return
            time.sleep(1 + attempt)


def request_approval(controls: ChangeControls, summary_markdown: str) -> Decision:
    """Pause until someone approves or rejects; a timeout counts as a rejection, so silence never changes a cluster.

    Whatever the answer, it is recorded on the run: a tag (`approved-by:NAME`, `rejected-by:NAME`,
    `approval-timed-out`) and an artifact with the answer, the name, the comment and the time."""
    if not controls.require_approval:
        return Decision(approved=True, approver=controls.requested_by, comment="approval not required")
    form = Decision.with_initial_data(description=summary_markdown, approved=False)
    decision = await_answer(
        form,
        timeout_seconds=controls.approval_timeout_seconds,
        poll_seconds=controls.approval_poll_seconds,
        plan_markdown=summary_markdown,
    )
    if decision is None:
        get_run_logger().warning("no approval within %ss: nothing changed", controls.approval_timeout_seconds)
        decision = Decision.timed_out_after(controls.approval_timeout_seconds)
        record_answer("approval-timed-out", decision.comment, approver="", approved=False)
        return decision
    assert isinstance(decision, Decision)
    get_run_logger().info(
        "approval answered by %r: approved=%s comment=%r%s",
        decision.approver,
        decision.approved,
        decision.comment,
        "" if decision.approved else ": nothing changed",
    )
    verb = "approved-by" if decision.approved else "rejected-by"
    record_answer(
        f"{verb}:{decision.approver or 'unnamed'}",
        decision.comment,
        approver=decision.approver,
        approved=decision.approved,
    )
    return decision


R = TypeVar("R", bound=ChangeResult)
# The name of the state a run ends in when its plan was rejected or nobody answered in time: a Completed state
# (nothing failed, nothing changed), named so the UI, the run list and `return_state` callers tell it apart.
NOT_APPROVED = "NotApproved"


def not_approved_state(result: R, decision: Decision) -> State[R]:
    """How every changing flow ends when its gate said no: `return not_approved_state(result, decision)`.

    A rejection and a timeout end alike (the issue asked for one state kind for both): Completed, named
    NotApproved, with a message saying who rejected (or that nobody answered), the comment and that nothing
    changed. The result stays the state's data, so a flow called directly still returns its typed result
    (Prefect returns a returned state's data) with outcome `not-approved`."""
    if decision.approved or result.outcome != "not-approved":
        raise ValueError(f"not_approved_state needs a refusal and a not-approved result, got {result.outcome!r}")
    return Completed(name=NOT_APPROVED, message=not_approved_message(decision), data=result)


def not_approved_message(decision: Decision) -> str:
    """One line for the run's state: who said no and why, or that nobody answered; always 'nothing changed'."""
    if decision.timed_out:
        why = f"nobody answered ({decision.comment})"
    else:
        why = f"rejected by {decision.approver or '(unnamed)'} ({decision.comment or 'no comment'})"
    return redaction.redact(f"Not approved: {why}; nothing changed")


def subflow_result(value: R | State[R]) -> R:
    """The result of a changing flow called from another flow. Prefect returns the data of a state the flow
    returned (`not_approved_state`), so at run time this is the value itself; the flows' annotations say they
    may return that state, and this tells mypy what the caller really gets."""
    return value.result() if isinstance(value, State) else value


def record_answer(tag: str, comment: str, *, approver: str, approved: bool) -> None:
    """The answer on the run (tag + artifact) and for this run's change annotations."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    run_id = flow_run.id
    if run_id:
        _ANSWERS[str(run_id)] = {"approved-by" if approved else "answered-by": approver, "approval-comment": comment}
        with get_client(sync_client=True) as client:
            tags = list(client.read_flow_run(run_id).tags or [])
            client.update_flow_run(run_id, tags=[*tags, tag[:100]])
    answer = "approved" if approved else "not approved: nothing changed"
    create_markdown_artifact(
        f"# Approval: {answer}\n\n| | |\n|---|---|\n| by | {approver or '(nobody)'} |\n"
        f"| comment | {comment or '(none)'} |\n| at | {when} |",
        description=f"approval answer ({tag})",
    )


def change_annotations(controls: ChangeControls, action: str, **details: str) -> dict[str, str]:
    """Annotations for an object this flow run changes; `details` are action-specific (e.g. to-revision)."""
    values = {
        "action": action,
        "reason": controls.reason,
        "requested-by": controls.requested_by,
        "flow-run-id": str(flow_run.id or ""),
        "flow-run-name": str(flow_run.name or ""),
        "changed-at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **_ANSWERS.get(str(flow_run.id or ""), {}),
        **details,
    }
    return {ANNOTATION_PREFIX + key: value for key, value in values.items()}
