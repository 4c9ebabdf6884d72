"""Retry behaviour as the Prefect server records it, not just as the client believes it happened."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from prefect import flow, task

History = Callable[[UUID, str, Callable[[list[str]], bool]], list[str]]

# A non-zero delay makes Prefect go through AwaitingRetry (with 0 it jumps straight to Retrying).
DELAY = 0.2

attempts: dict[str, int] = {}


@task(retries=2, retry_delay_seconds=DELAY)
def fails_twice(key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] <= 2:
        raise ConnectionError(f"attempt {attempts[key]} failed")
    return f"ok after {attempts[key]}"


@task(retries=2, retry_delay_seconds=DELAY)
def always_fails(key: str) -> None:
    attempts[key] = attempts.get(key, 0) + 1
    raise ConnectionError(f"attempt {attempts[key]} failed")


@flow
def flaky_flow(key: str) -> str:
    return fails_twice(key)


@flow
def hopeless_flow(key: str) -> None:
    always_fails(key)


def _retried_twice_then(final: str) -> Callable[[list[str]], bool]:
    return lambda names: names.count("AwaitingRetry") == 2 and names.count("Retrying") == 2 and final in names


def test_task_recovers_within_its_retries(task_state_history: History) -> None:
    state = flaky_flow("recovers", return_state=True)
    assert state.is_completed()
    assert state.result() == "ok after 3"
    names = task_state_history(state.state_details.flow_run_id, "fails_twice", _retried_twice_then("Completed"))
    assert names.count("AwaitingRetry") == 2, names
    assert names.count("Retrying") == 2, names
    assert names[-1] == "Completed", names


def test_task_that_exhausts_retries_fails_the_flow(task_state_history: History) -> None:
    state = hopeless_flow("hopeless", return_state=True)
    assert state.is_failed()
    assert attempts["hopeless"] == 3  # first try + 2 retries, then no more
    names = task_state_history(state.state_details.flow_run_id, "always_fails", _retried_twice_then("Failed"))
    assert names.count("AwaitingRetry") == 2, names
    assert names[-1] == "Failed", names
