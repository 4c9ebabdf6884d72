"""The alert receiver's HTTP contract with a fake launcher: every hostile request is refused and starts nothing;
a good notification starts one run per matched alert; the body limit holds while the body is still arriving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alert_samples import AUTH, HOSTILE, TOKEN, alert, body, notification, resolved, write_rules
from pydantic import SecretStr
from starlette.requests import Request
from starlette.testclient import TestClient

from flows import FLOWS
from rollbook.alert_rules import Launch, RuleSet, load_rules
from rollbook.alerts import Notification
from rollbook.webhook import (
    Decision,
    LauncherUnavailable,
    Limits,
    Outcome,
    Receiver,
    TooLarge,
    create_app,
    read_limited,
)

FLOW_FNS = {name: flow.fn for name, flow in FLOWS.items()}
ROOMY = Limits(rate_per_second=10_000, burst=10_000)


class FakeLauncher:
    def __init__(self) -> None:
        self.launched: list[Launch] = []
        self.recorded: list[Decision] = []
        self.down = False

    async def launch(self, launch: Launch) -> Outcome:
        if self.down:
            raise LauncherUnavailable("the Prefect API is unreachable: ConnectError")
        if any(seen.idempotency_key == launch.idempotency_key for seen in self.launched):
            return Outcome("duplicate", "run-1")
        self.launched.append(launch)
        return Outcome("started", f"run-{len(self.launched)}")

    def record(self, decision: Decision, notification: Notification) -> None:
        self.recorded.append(decision)


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    return load_rules(write_rules(tmp_path / "rules.yaml"), FLOW_FNS)


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def client(rules: RuleSet, launcher: FakeLauncher) -> Iterator[TestClient]:
    with TestClient(create_app(rules=rules, launcher=launcher, token=SecretStr(TOKEN), limits=ROOMY)) as test:
        yield test


@pytest.mark.parametrize(("case", "request_kwargs", "status"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_requests_are_refused_and_start_nothing(
    client: TestClient, launcher: FakeLauncher, case: str, request_kwargs: dict[str, Any], status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    with caplog.at_level(logging.INFO, logger="rollbook.webhook"):
        response = client.post("/alerts", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]  # a clear body, never an empty 4xx
    assert launcher.launched == []
    assert all(decision.kind == "refused" for decision in launcher.recorded)
    assert TOKEN not in caplog.text and TOKEN not in response.text


def test_there_are_at_least_fifty_hostile_cases() -> None:
    assert len(HOSTILE) >= 50 and len({c[0] for c in HOSTILE}) == len(HOSTILE)


def test_a_good_notification_starts_one_run_and_repeats_find_it(client: TestClient, launcher: FakeLauncher) -> None:
    first = client.post("/alerts", content=body(notification()), headers=AUTH)
    assert first.status_code == 200, first.text
    [decision] = first.json()["decisions"]
    assert decision["decision"] == "started" and decision["deployment"] == "helm-rollback/helm-rollback"
    [launch] = launcher.launched
    assert launch.parameters["request"]["namespace"] == "shop" and launch.parameters["request"]["release"] == "demo"
    assert launch.parameters["controls"]["requested_by"] == "alertmanager receiver rollbook"
    again = client.post("/alerts", content=body(notification()), headers=AUTH)
    assert again.json()["decisions"][0]["decision"] == "duplicate" and len(launcher.launched) == 1


def test_unmatched_and_resolved_alerts_are_acknowledged_and_start_nothing(
    client: TestClient, launcher: FakeLauncher
) -> None:
    other = client.post("/alerts", content=body(notification(alert(alertname="DiskFull"))), headers=AUTH)
    assert other.status_code == 200 and other.json()["decisions"][0]["decision"] == "unmatched"
    gone = client.post("/alerts", content=body(resolved(notification())), headers=AUTH)
    assert gone.status_code == 200 and gone.json()["decisions"][0]["decision"] == "resolved"
    assert launcher.launched == [] and [d.kind for d in launcher.recorded] == ["unmatched", "resolved"]


def test_a_rule_may_react_to_the_resolved_notification(tmp_path: Path, launcher: FakeLauncher) -> None:
    extra = (
        "  - name: on-resolved\n    match: {alertname: DemoHighErrorRate}\n    status: resolved\n"
        "    deployment: hello-cluster\n    cooldown_seconds: 0\n"
    )
    rules = load_rules(write_rules(tmp_path / "r.yaml", extra=extra), FLOW_FNS)
    with TestClient(create_app(rules=rules, launcher=launcher, token=SecretStr(TOKEN), limits=ROOMY)) as test:
        response = test.post("/alerts", content=body(resolved(notification())), headers=AUTH)
    assert response.json()["decisions"][0]["rule"] == "on-resolved"
    assert [launch.deployment for launch in launcher.launched] == ["hello-cluster/hello-cluster"]


def test_prefect_down_answers_503_so_alertmanager_retries(client: TestClient, launcher: FakeLauncher) -> None:
    launcher.down = True
    response = client.post("/alerts", content=body(notification()), headers=AUTH)
    assert response.status_code == 503 and "retry" in response.json()["error"]


def test_over_the_rate_limit_answers_429(rules: RuleSet, launcher: FakeLauncher) -> None:
    limits = Limits(rate_per_second=0.01, burst=2)
    app = create_app(rules=rules, launcher=launcher, token=SecretStr(TOKEN), limits=limits)
    with TestClient(app) as test:
        codes = [test.post("/alerts", content=b"{}", headers=AUTH).status_code for _ in range(4)]
    assert codes == [400, 400, 429, 429]


def test_the_rate_limit_is_per_client_address(rules: RuleSet, launcher: FakeLauncher) -> None:
    """A flood from one address leaves another (Alertmanager's) its own budget."""
    receiver = Receiver(
        rules=rules, launcher=launcher, token=SecretStr(TOKEN), limits=Limits(rate_per_second=0.01, burst=1)
    )

    async def post(client: str) -> int:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        request = _request(receive)
        request.scope["client"] = (client, 1)
        return (await receiver.alerts(request)).status_code

    async def main() -> list[int]:
        return [await post("10.0.0.1"), await post("10.0.0.1"), await post("10.0.0.2")]

    assert asyncio.run(main()) == [400, 429, 400]


def test_healthz_and_wrong_method(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/alerts").status_code == 405


def test_a_short_token_is_refused_at_start(rules: RuleSet, launcher: FakeLauncher) -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_app(rules=rules, launcher=launcher, token=SecretStr("short"))


def _request(receive: Any) -> Request:
    headers = [(b"authorization", f"Bearer {TOKEN}".encode()), (b"content-type", b"application/json")]
    return Request({"type": "http", "method": "POST", "path": "/alerts", "headers": headers, "client": ("t", 1)},
                   receive)  # fmt: skip


def test_the_body_limit_holds_while_the_body_arrives(rules: RuleSet, launcher: FakeLauncher) -> None:
    """A chunked body with no Content-Length: reading stops at the first chunk past the limit."""
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}  # endless

    receiver = Receiver(rules=rules, launcher=launcher, token=SecretStr(TOKEN), limits=Limits(max_body_bytes=8192))
    response = asyncio.run(receiver.alerts(_request(receive)))
    assert response.status_code == 413 and calls == 9 and launcher.launched == []


def test_a_body_slower_than_the_read_timeout_answers_408(rules: RuleSet, launcher: FakeLauncher) -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return {"type": "http.request", "body": b"{", "more_body": True}

    limits = Limits(read_timeout_seconds=0.5)
    receiver = Receiver(rules=rules, launcher=launcher, token=SecretStr(TOKEN), limits=limits)
    response = asyncio.run(receiver.alerts(_request(receive)))
    assert response.status_code == 408 and launcher.launched == []


def test_read_limited_does_not_read_past_the_limit() -> None:
    read = []

    async def chunks() -> Any:
        for i in range(100):
            read.append(i)
            yield b"y" * 100

    async def main() -> None:
        await read_limited(chunks(), 250)

    with pytest.raises(TooLarge):
        asyncio.run(main())
    assert read == [0, 1, 2]
