"""The one way a changing flow ends when its gate says no (`rollbook.change.not_approved_state`): a rejection and
a timeout give the same kind of state, Completed and named NotApproved, holding the flow's typed result, with a
message naming who said no (or that nobody answered), the comment, and that nothing changed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.client.schemas.objects import StateType
from pydantic import ValidationError

from rollbook import redaction
from rollbook.change import NOT_APPROVED, ChangeResult, Decision, not_approved_state, subflow_result

REFUSED = ChangeResult(outcome="not-approved", summary="not approved: nothing changed")


@pytest.fixture(autouse=True)
def _no_secrets() -> Iterator[None]:
    redaction.clear()
    yield
    redaction.clear()


def test_a_rejection_and_a_timeout_end_in_the_same_kind_of_state() -> None:
    rejected = not_approved_state(REFUSED, Decision(approved=False, approver="bob", comment="not during the freeze"))
    timed_out = not_approved_state(REFUSED, Decision.timed_out_after(60))
    for state in (rejected, timed_out):
        assert (state.type, state.name) == (StateType.COMPLETED, NOT_APPROVED)
        assert state.is_completed()  # not a failure: `rollbook run` and the fault campaign read it as done
        assert state.data is REFUSED
        assert state.message and state.message.endswith("; nothing changed")
    assert rejected.message == "Not approved: rejected by bob (not during the freeze); nothing changed"
    assert timed_out.message == "Not approved: nobody answered (timed out after 60s); nothing changed"


def test_an_unnamed_rejection_without_a_comment_says_so() -> None:
    state = not_approved_state(REFUSED, Decision(approved=False))
    assert state.message == "Not approved: rejected by (unnamed) (no comment); nothing changed"


def test_only_silence_counts_as_a_timeout() -> None:
    """A person's comment that reads like a timeout is still their rejection, and no resumer can claim one."""
    assert Decision.timed_out_after(10).timed_out
    assert not Decision(approved=False, approver="eve", comment="timed out after 10s").timed_out
    with pytest.raises(ValidationError):
        Decision.model_validate({"approved": False, "_timed_out": True})


def test_a_secret_in_the_comment_is_masked_in_the_message() -> None:
    redaction.register("hunter2-password")
    state = not_approved_state(REFUSED, Decision(approved=False, approver="bob", comment="dsn has hunter2-password"))
    assert state.message and "hunter2-password" not in state.message and "nothing changed" in state.message


@pytest.mark.parametrize(
    ("result", "decision"),
    [
        (REFUSED, Decision(approved=True, approver="alice")),
        (ChangeResult(outcome="changed", summary="done"), Decision(approved=False, approver="bob")),
    ],
)
def test_an_approval_or_another_outcome_is_refused(result: ChangeResult, decision: Decision) -> None:
    """The state's name and its result's outcome never disagree."""
    with pytest.raises(ValueError, match="not-approved"):
        not_approved_state(result, decision)


def test_a_subflow_caller_gets_the_result_either_way() -> None:
    assert subflow_result(REFUSED) is REFUSED
    assert subflow_result(not_approved_state(REFUSED, Decision.timed_out_after(10))) is REFUSED
