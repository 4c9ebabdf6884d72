"""Fixtures for tests that talk to the session's Prefect server: polling helpers and a fake Kubernetes API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pytest
from kube_fake import FakeApiServer, kubeconfig_json

T = TypeVar("T")


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = 60.0, interval: float = 0.5) -> T:
    """Repeat `fetch` until `done(result)`: the server records task states and logs asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(interval)


@pytest.fixture
def read_logs() -> Callable[[UUID, Callable[[list[str]], bool]], list[str]]:
    """Log messages of a flow run (flow and task logs), polled until `done(messages)`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    def read(flow_run_id: UUID, done: Callable[[list[str]], bool]) -> list[str]:
        with get_client(sync_client=True) as client:
            log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            return poll(lambda: [log.message for log in client.read_logs(log_filter=log_filter)], done)

    return read


@pytest.fixture
def task_state_history() -> Callable[[UUID, str, Callable[[list[str]], bool]], list[str]]:
    """State names the server recorded for one task of a flow run, in time order, polled until `done(names)`.

    The server records task states from events that may arrive out of order, so a final state can be
    visible before the earlier ones: callers say what complete history they expect.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    def history(flow_run_id: UUID, task_name: str, done: Callable[[list[str]], bool]) -> list[str]:
        with get_client(sync_client=True) as client:

            def fetch() -> list[str]:
                runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                    task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=task_name)),
                )
                if not runs:
                    return []
                states = sorted(client.read_task_run_states(runs[0].id), key=lambda s: s.timestamp)
                return [s.name or s.type.value for s in states]

            return poll(fetch, done)

    return history


@pytest.fixture
def fake_apiserver(tmp_path: Path) -> Iterator[FakeApiServer]:
    """A plain-HTTP fake API server on 127.0.0.1 and a kubeconfig file (JSON is valid YAML) pointing at it."""
    fake = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            status, body = fake.respond(self.path)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    fake.kubeconfig_path = tmp_path / "kubeconfig"
    fake.kubeconfig_path.write_text(kubeconfig_json(fake.url, fake.token))
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
