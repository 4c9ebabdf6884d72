"""Alert to rollback on the sandbox: Prometheus sees the bad release's error rate, Alertmanager notifies the
receiver with its bearer token, the receiver starts the routed helm-rollback deployment that `rollbook serve`
executes, and the release ends on its good version. The same notification re-sent starts no second run, and
the resolved notification starts nothing."""

from __future__ import annotations

import contextvars
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from alert_samples import rules_yaml
from helm_helpers import DEPLOYMENT, helm_deploy, history, image, repo
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flows import FLOWS
from rollbook.alert_launcher import PrefectLauncher
from rollbook.alert_rules import load_rules
from rollbook.webhook import create_app
from sandbox.cluster import Sandbox
from sandbox.observability import alert_webhook_token_file

ROLLBOOK = shutil.which("rollbook", path=str(Path(sys.executable).parent)) or "rollbook"
ALERT = "DemoHighErrorRate"


def alert_rule(namespace: str) -> str:
    """The 5xx share of the release's Ingress over 10 s above 5 % for 2 s; `release` from the Ingress name."""
    requests = f'nginx_ingress_controller_requests{{namespace="{namespace}"'
    errors = f'sum by (namespace, ingress) (rate({requests},status=~"5.."}}[10s]))'
    total = f"sum by (namespace, ingress) (rate({requests}}}[10s]))"
    return (
        "groups:\n"
        "  - name: rollbook-e2e\n"
        "    rules:\n"
        f"      - alert: {ALERT}\n"
        f"        expr: label_replace(({errors}) / ({total}) > 0.05, 'release', '$1', 'ingress', '(.+)-demo-app')\n"
        "        for: 2s\n"
        "        labels: {severity: critical}\n"
        "        annotations: {summary: 'more than 5% of requests fail'}\n"
    )


class Recording:
    """ASGI wrapper keeping every request body, status and answer, so the test can replay what Alertmanager sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.seen, self.times = app, [], []  # type: ignore[var-annotated]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/alerts":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        status: list[int] = []
        answer: list[bytes] = []

        async def recv() -> Message:
            message = await receive()
            chunks.append(message.get("body", b""))
            return message

        async def snd(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, recv, snd)
        self.seen.append((b"".join(chunks), status[0] if status else 0, b"".join(answer)))
        self.times.append(time.monotonic())


@pytest.fixture
def served(child_env: dict[str, str], tmp_path: Path) -> Iterator[None]:
    """`rollbook serve` against the session's Prefect server, until the test ends."""
    log = tmp_path / "serve.log"
    env = dict(child_env, PREFECT_RUNNER_POLL_FREQUENCY="1")
    with log.open("wb") as out:
        proc = subprocess.Popen([ROLLBOOK, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not _registered("helm-rollback/helm-rollback"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _registered(name: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as prefect:
        try:
            prefect.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


@pytest.fixture
def receiver(sandbox: Sandbox, namespace: str, tmp_path: Path) -> Iterator[Recording]:
    """The receiver on the sandbox's webhook port, in this process (Prefect's settings context copied in)."""
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(rules_yaml(kubeconfig=str(sandbox.cfg.kubeconfig), helm=str(sandbox.bins / "helm"),
                                     match_ns=namespace, cooldown=600))  # fmt: skip
    rules = load_rules(rules_file, {name: flow.fn for name, flow in FLOWS.items()})
    token = SecretStr(alert_webhook_token_file(sandbox.cfg).read_text().strip())
    app = Recording(create_app(rules=rules, launcher=PrefectLauncher(), token=token))
    port = sandbox.cfg.port("alert-webhook")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=contextvars.copy_context().run, args=(server.run,), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    try:
        yield app
    finally:
        server.should_exit = True
        thread.join(30)


def alert_runs(namespace: str) -> list[Any]:
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["alertmanager"])))
    return [r for r in runs if r.parameters.get("request", {}).get("namespace") == namespace]


def wait_for(what: str, condition: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_an_alert_rolls_the_bad_release_back_once(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path, served: None, receiver: Recording
) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.1.0")
    assert helm_deploy(sandbox, demo_chart, namespace, "1.2.0")  # the simulator answers 20 % of its requests 500
    sandbox.set_alert_rules(f"e2e-{namespace}", alert_rule(namespace))
    try:
        started = time.monotonic()
        [run] = wait_for("the alert's flow run", lambda: alert_runs(namespace), timeout=180)
        fired_to_run = time.monotonic() - started

        def finished() -> Any:
            with get_client(sync_client=True) as prefect:
                state = prefect.read_flow_run(run.id).state
            return state if state is not None and state.is_final() else None

        state = wait_for("the rollback run to finish", finished, timeout=300)
        assert state.is_completed(), state
        assert image(apps, namespace) == f"{repo(sandbox)}:1.1.0"
        assert history(sandbox, namespace)[-1] == (3, "deployed")
        annotations = apps.read_namespaced_deployment(DEPLOYMENT, namespace).metadata.annotations
        assert annotations["rollbook.dev/requested-by"] == "alertmanager receiver rollbook"
        assert ALERT in annotations["rollbook.dev/reason"]

        # the notification Alertmanager sent, re-sent: answered, and no second run
        firing = next(body for body, status, _ in receiver.seen if status == 200 and b'"status":"firing"' in body)
        token = alert_webhook_token_file(sandbox.cfg).read_text().strip()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        again = httpx.post(
            f"http://127.0.0.1:{sandbox.cfg.port('alert-webhook')}/alerts", content=firing, headers=headers
        )
        assert again.status_code == 200 and again.json()["decisions"][0]["decision"] == "duplicate", again.text

        # the release is healthy again: the alert resolves, and the resolved notification starts nothing
        def resolved() -> bytes | None:
            return next((a for b, s, a in receiver.seen if s == 200 and b'"status":"resolved"' in b), None)

        answer = wait_for("the resolved notification", resolved, timeout=180)
        assert b'"decision":"resolved"' in answer, answer
        assert [r.id for r in alert_runs(namespace)] == [run.id]
        first_notification = receiver.times[0] - started
        print(
            f"alert rule written -> first notification {first_notification:.1f} s -> flow run seen {fired_to_run:.1f} s"
        )
    finally:
        sandbox.set_alert_rules(f"e2e-{namespace}", None)
