"""wait_for_rollout rides out an API-server outage inside its own deadline (the kube client faked at the wire)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from tasks import kube

DONE = {
    "metadata": {"name": "web", "generation": 2, "annotations": {"deployment.kubernetes.io/revision": "3"}},
    "spec": {"replicas": 2},
    "status": {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2},
}


class FakeCluster:
    @contextmanager
    def api_client(self) -> Iterator[object]:
        yield object()


class Clock:
    """monotonic() and sleep() on a fake clock, so the deadline logic is checked without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(kube.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(kube.time, "sleep", fake.sleep)
    monkeypatch.setattr(kube, "get_run_logger", lambda: logging.getLogger("test"))
    return fake


def steps(monkeypatch: pytest.MonkeyPatch, clock: Clock, answers: list[Any]) -> list[float]:
    """Each wait step takes one answer (an error to raise or a Deployment); returns when each step ran."""
    seen: list[float] = []
    queue = iter(answers)

    def step(*_: Any) -> Any:
        seen.append(clock.now)
        answer = next(queue)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(kube, "_wait_step", step)
    return seen


def test_connection_refused_5xx_and_429_are_ridden_out(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    refused = MaxRetryError(None, "/apis/apps/v1", reason=ConnectionRefusedError("refused"))  # type: ignore[arg-type]
    answers = [refused, refused, ApiException(status=503), ApiException(status=429), DONE]
    seen = steps(monkeypatch, clock, answers)
    result = kube.wait_for_rollout.fn(FakeCluster(), "prod", "web", 60.0)
    assert result["done"] and not result["timed_out"] and result["revision"] == 3
    assert result["api_errors"] == 4 and result["api_outage_seconds"] == 7.5  # 0.5 + 1 + 2 + 4 of backoff
    assert len(seen) == 5


def test_an_outage_until_the_deadline_is_a_clear_error_never_earlier(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    seen = steps(monkeypatch, clock, [ConnectionRefusedError("refused")] * 100)
    with pytest.raises(kube.ApiUnreachable, match="before the wait's deadline \\(60s\\).*re-run the same request"):
        kube.wait_for_rollout.fn(FakeCluster(), "prod", "web", 60.0)
    assert seen[-1] + max(kube.OUTAGE_BACKOFF_SECONDS) >= 1000.0 + 60  # it kept trying until the deadline was near
    assert len(seen) > 10


def test_permanent_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    seen = steps(monkeypatch, clock, [ApiException(status=403), DONE])
    with pytest.raises(ApiException):
        kube.wait_for_rollout.fn(FakeCluster(), "prod", "web", 60.0)
    assert len(seen) == 1
