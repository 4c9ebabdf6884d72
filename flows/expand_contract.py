"""The guide's safe database upgrade, expand/contract, for its own example (`users.email` -> `new_email`):

1. expand: `alembic upgrade expand@head` (the new column beside the old one; the running code ignores it);
2. deploy the code that reads both shapes (`new_email or email`), through helm-atomic-upgrade when asked;
3. backfill: copy old to new in bounded batches, each its own transaction, with a progress artifact;
4. observe: for a window, no row is left in the old shape only and the new code stays available;
5. approval: contract cannot be undone, so a person is always asked (no answer: nothing dropped);
6. contract: `alembic upgrade contract@head` (drop the old column).

The phase is read from the database every run (`rollbook.expand_contract`): a run that died mid-backfill is
continued by running the same request again, applied phases are skipped. Plan mode records the SQL each step
would run (Alembic's offline SQL, the backfill statement) and changes nothing. `controls.require_approval` asks
once more, before the first change. A database in a state the procedure never produces is refused untouched.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State

from flows import _expand_contract_steps as steps
from flows._expand_contract_steps import ExpandContractRequest, Run
from rollbook import expand_contract as rules
from rollbook.change import ChangeControls, Outcome, not_approved_state, request_approval
from rollbook.expand_contract import Phase
from rollbook.reports.expand_contract import ExpandContractResult, result_markdown

__all__ = ["ExpandContractRequest", "ExpandContractResult", "SchemaNotReady", "expand_contract"]


class SchemaNotReady(RuntimeError):
    """The database is in a state contract must not follow (inconsistent, or the observe window failed):
    nothing more was changed; the message says what was seen."""


@flow(name="expand-contract")
def expand_contract(
    request: ExpandContractRequest, controls: ChangeControls
) -> ExpandContractResult | State[ExpandContractResult]:
    """Expand, deploy, backfill, observe, approve, contract: from whatever phase the database is in."""
    run = Run(request, controls)
    state = steps.look(run)
    phase, why = rules.phase_of(state, request.backfill)
    before = (phase, list(state.current))
    todo = rules.steps_to_run(phase)
    if phase == "inconsistent":
        _publish(run, before, "unchanged", f"refused: {why}; nothing changed", why)
        raise SchemaNotReady(f"{why}; nothing changed")
    if not todo:
        return _publish(run, before, "unchanged", f"already contracted: {why}; nothing to do", why)
    if controls.plan:
        steps.plan(run, state, todo)
        summary = f"plan only from phase {phase}: {', '.join(todo)}; nothing changed"
        return _publish(run, before, "planned", summary, why)
    if controls.require_approval:
        steps.plan(run, state, todo)
        draft = _result(run, before, "planned", f"from phase {phase}: {', '.join(todo)}", why)
        decision = request_approval(controls, result_markdown(draft, "expand-contract plan"))
        run.steps.clear()
        if not decision.approved:
            refused = _publish(run, before, "not-approved", f"not approved ({decision.comment}); nothing changed", why)
            return not_approved_state(refused, decision)
    try:
        return _change(run, state, todo, before, why)
    except Exception as exc:
        _publish(run, before, "changed" if run.changed else "unchanged", f"failed: {exc}", why)
        raise


def _change(
    run: Run, state: rules.SchemaState, todo: tuple[rules.Step, ...], before: tuple[Phase, list[str]], why: str
) -> ExpandContractResult | State[ExpandContractResult]:
    request = run.request
    if "expand" in todo:
        steps.expand(run)
        state = steps.look(run)
    steps.deploy(run)
    if steps.backfill(run, state):
        summary = "backfill not finished within this run's bounds: run the same request again to continue"
        return _publish(run, before, "changed" if run.changed else "unchanged", summary, why)
    ok, seen = steps.observe(run)
    if not ok:
        _publish(run, before, "changed" if run.changed else "unchanged", f"not contracting: {seen}", why)
        raise SchemaNotReady(f"not contracting: {seen}")
    if not request.contract:
        summary = "expanded and backfilled; contract=false: both columns stay until a run with contract=true"
        return _publish(run, before, "changed" if run.changed else "unchanged", summary, why)
    steps.plan(run, steps.look(run), ("contract",))
    draft = _result(run, before, "planned", f"contract {request.contract_target} (drops the old column)?", why)
    decision = steps.approve_contract(run, result_markdown(draft, "Contract? (cannot be undone)"))
    run.steps = [s for s in run.steps if s.status != "planned"]
    if not decision.approved:
        kept = "contract not approved: the database keeps both columns (safe for old and new code)"
        if run.changed:
            return _publish(run, before, "changed", f"{kept}; run again to contract", why)
        refused = _publish(run, before, "not-approved", f"{kept}; nothing changed", why)
        return not_approved_state(refused, decision)
    steps.contract(run)
    return _publish(run, before, "changed", f"contracted: {request.contract_target} applied", why)


def _result(
    run: Run, before: tuple[Phase, list[str]], outcome: Outcome, summary: str, why: str
) -> ExpandContractResult:
    return ExpandContractResult(
        outcome=outcome,
        summary=summary,
        approval=run.decision.comment if run.decision and run.decision.approved else None,
        database=run.database,
        script_location=run.request.script_location,
        phase_before=before[0],
        phase_after=before[0],
        phase_detail=why,
        heads_before=before[1],
        heads_after=before[1],
        steps=list(run.steps),
        backfill_batches=run.batches,
        backfilled_rows=run.rows,
        deploy=run.deploy_result,
    )


def _publish(
    run: Run, before: tuple[Phase, list[str]], outcome: Outcome, summary: str, why: str
) -> ExpandContractResult:
    """The result with the database as it is now (read again), as the run's markdown artifact."""
    result = _result(run, before, outcome, summary, why)
    try:
        state = steps.look(run)
        after, _ = rules.phase_of(state, run.request.backfill)
        update = {
            "phase_after": after,
            "heads_after": list(state.current),
            "remaining": state.remaining,
            "finished": after == "contracted",
        }
        result = result.model_copy(update=update)
    except Exception as exc:  # the report still goes out, saying the last look failed
        result = result.model_copy(update={"summary": f"{summary} (state after not read: {exc})"})
    create_markdown_artifact(result_markdown(result), key=run.key, description="expand-contract report")
    get_run_logger().info("%s", result.summary)
    return result
