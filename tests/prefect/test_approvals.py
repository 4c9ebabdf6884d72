"""Approvals you can audit, on a real Prefect server: the plan is shown before the pause, the answer is recorded
on the run and in the change annotations, a named approval is required, and a timeout ends like a rejection:
both in the same state, Completed and named NotApproved, saying who said no (or that nobody answered) and that
nothing changed.

The flow under test is the gate itself (`request_approval`, `not_approved_state` when refused, then
`change_annotations` for what it would change): the flows on the sandbox use exactly these three calls.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from prefect.states import State

from rollbook.change import (
    NOT_APPROVED,
    ChangeControls,
    ChangeResult,
    change_annotations,
    not_approved_state,
    request_approval,
)
from rollbook.cli import main

PLAN = "## Plan\n\nroll web back from revision 3 to revision 2"


class GateResult(ChangeResult):
    decision: dict[str, Any]
    annotations: dict[str, str]


@flow
def gated(controls: ChangeControls) -> GateResult | State[GateResult]:
    decision = request_approval(controls, PLAN)
    annotations = change_annotations(controls, "undo")
    if not decision.approved:
        refused = GateResult(
            outcome="not-approved", summary="nothing changed", decision=decision.model_dump(), annotations=annotations
        )
        return not_approved_state(refused, decision)
    return GateResult(outcome="changed", summary="undone", decision=decision.model_dump(), annotations=annotations)


def controls(timeout: int = 60) -> ChangeControls:
    return ChangeControls(
        reason="audit the gate",
        requested_by="requester",
        require_approval=True,
        approval_timeout_seconds=timeout,
        approval_poll_seconds=1,
    )


@contextmanager
def running(gate: ChangeControls, *, return_state: bool = True) -> Iterator[dict[str, Any]]:
    """Run the gated flow in a thread (it blocks while paused); yields its run (once it exists) and then its
    final state (`return_state`, as `rollbook run` calls a flow) or its result (a direct call, as a subflow)."""
    name = f"gated-{uuid.uuid4().hex[:8]}"
    box: dict[str, Any] = {}

    def target() -> None:
        named = gated.with_options(flow_run_name=name)
        if return_state:
            box["state"] = named(gate, return_state=True)
        else:
            box["result"] = named(gate)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(target,), daemon=True)
    thread.start()
    box["id"] = _wait(lambda: _run_id(name), "the flow run to exist")
    try:
        yield box
    finally:
        thread.join(timeout=120)
    assert not thread.is_alive(), "the gated flow never finished"


def _wait(fetch: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _run_id(name: str) -> UUID | None:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    return runs[0].id if runs else None


def _paused(run_id: UUID) -> bool:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        keyset = run.state.state_details.run_input_keyset if run.state else None
        if not (run.state and run.state.type == StateType.PAUSED and keyset):
            return False
        try:  # the input schema is saved just after the run turns PAUSED
            client.read_flow_run_input(run_id, keyset["schema"])
        except Exception:
            return False
    return True


def _answer(run_id: UUID, run_input: dict[str, Any]) -> None:
    _wait(lambda: _paused(run_id), "the run to pause for input")
    resume_flow_run(run_id, run_input=run_input)


def _artifacts(run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return [str(a.data) for a in found]


def _tags(run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as client:
        return list(client.read_flow_run(run_id).tags or [])


def test_plan_is_shown_before_the_pause_and_the_approver_is_recorded(
    read_logs: Callable[[UUID, Callable[[list[str]], bool]], list[str]],
) -> None:
    with running(controls()) as run:
        _wait(lambda: _paused(run["id"]), "the run to pause")
        assert any(PLAN in text for text in _artifacts(run["id"])), "no plan artifact on the paused run"
        logs = read_logs(run["id"], lambda messages: any(PLAN in m for m in messages))
        assert any(PLAN in m for m in logs), "the plan is not in the paused run's logs"
        _answer(run["id"], {"approved": True, "approver": "alice", "comment": "looks right"})
    assert (run["state"].type, run["state"].name) == (StateType.COMPLETED, "Completed")  # approved: as before
    result = run["state"].result()
    assert result.outcome == "changed"
    assert result.annotations["rollbook.dev/approved-by"] == "alice"
    assert result.annotations["rollbook.dev/approval-comment"] == "looks right"
    assert "approved-by:alice" in _tags(run["id"])
    assert any("| by | alice |" in text and "looks right" in text for text in _artifacts(run["id"]))


def test_an_approval_without_a_name_is_refused_and_the_run_stays_paused() -> None:
    with running(controls()) as run:
        _wait(lambda: _paused(run["id"]), "the run to pause")
        with pytest.raises(RuntimeError):
            resume_flow_run(run["id"], run_input={"approved": True, "comment": "anonymous"})
        assert _paused(run["id"])
        _answer(run["id"], {"approved": False, "approver": "bob", "comment": "not today"})
    assert (run["state"].name, run["state"].result().outcome) == (NOT_APPROVED, "not-approved")


def _final_state(run_id: UUID) -> State[Any]:
    """The run's final state as the server recorded it (what the UI and the run list show)."""
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    assert state is not None
    return state


def test_reject_and_timeout_end_in_the_same_state_saying_nothing_changed(
    read_logs: Callable[[UUID, Callable[[list[str]], bool]], list[str]],
) -> None:
    # the rejected run is called directly (as a subflow is): it still returns the typed result
    with running(controls(), return_state=False) as rejected:
        _answer(rejected["id"], {"approved": False, "approver": "bob", "comment": "not during the freeze"})
    with running(controls(timeout=10)) as timed_out:
        pass  # nobody answers
    assert isinstance(rejected["result"], GateResult) and rejected["result"].outcome == "not-approved"
    local = timed_out["state"]  # what a `return_state=True` caller (`rollbook run`) sees
    assert (local.type, local.name) == (StateType.COMPLETED, NOT_APPROVED), (
        f"{local.type} {local.name}: {local.message}"
    )
    assert local.is_completed() and local.result().outcome == "not-approved"
    states = {"rejected": _final_state(rejected["id"]), "timed out": _final_state(timed_out["id"])}
    for run in (rejected, timed_out):
        assert any("nothing changed" in text for text in _artifacts(run["id"]))
        logs = read_logs(run["id"], lambda messages: any("nothing changed" in m for m in messages))
        assert any("nothing changed" in m for m in logs)
    assert {(s.type, s.name) for s in states.values()} == {(StateType.COMPLETED, NOT_APPROVED)}, states
    assert states["rejected"].message == "Not approved: rejected by bob (not during the freeze); nothing changed"
    assert states["timed out"].message == "Not approved: nobody answered (timed out after 10s); nothing changed"
    assert local.message == states["timed out"].message
    assert "rejected-by:bob" in _tags(rejected["id"])
    assert "approval-timed-out" in _tags(timed_out["id"])
    assert "rollbook.dev/approved-by" not in local.result().annotations


def test_rollbook_run_reports_a_not_approved_run_as_done_not_failed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rollbook run` exits 0 for a NotApproved run (it is Completed: nothing failed) and prints its result."""
    import flows

    monkeypatch.setitem(flows.FLOWS, "gated", gated)
    timeout = controls(timeout=10).model_dump(mode="json")
    code = main(["run", "gated", "-p", f"controls={json.dumps(timeout)}"])  # nobody answers
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["outcome"] == "not-approved"


def test_a_real_runbook_ends_not_approved_and_deletes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """backup-retention, with its bucket replaced by two snapshots in memory: at its gate nobody answers, so the
    run ends NotApproved through the same helper as the gated flow above, and nothing is deleted."""
    import datetime as dt
    import importlib

    from rollbook.retention import RetentionRules, SnapshotRecord

    runbook = importlib.import_module("flows.backup_retention")  # the module: `flows` exports the flow by that name

    now = dt.datetime.now(dt.UTC)
    snapshots = [(SnapshotRecord(name=f"prod/{age}.db", taken_at=now - dt.timedelta(days=age)), None) for age in (1, 9)]
    deleted: list[list[str]] = []

    def delete_objects(bucket: object, names: list[str]) -> list[str]:
        deleted.append(names)
        return names

    monkeypatch.setattr(runbook, "load_bucket", lambda block: object())
    monkeypatch.setattr(runbook, "catalogue_snapshots", lambda bucket, cluster: snapshots)
    monkeypatch.setattr(runbook, "delete_objects", delete_objects)
    rules = RetentionRules(keep_last=1, hourly=0, daily=0, weekly=0)
    request = runbook.RetentionRequest(bucket_block="backups", cluster_name="prod", rules=rules)

    state = runbook.backup_retention(request, controls(timeout=10), return_state=True)

    assert (state.type, state.name) == (StateType.COMPLETED, NOT_APPROVED), f"{state.name}: {state.message}"
    assert state.message == "Not approved: nobody answered (timed out after 10s); nothing changed"
    result = state.result()
    assert (result.outcome, result.delete) == ("not-approved", ["prod/9.db"]) and deleted == []
