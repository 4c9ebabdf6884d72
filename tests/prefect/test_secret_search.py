"""Planted secrets appear nowhere a user of the Prefect server can see them, for successes and failures alike.

A real `rollbook server` (its own PREFECT_HOME) receives the runs of tests/prefect/secret_flows.py, executed in a
child process: one block of every rollbook block type holds a known secret, and the flows log, print, raise,
retry, publish and return those secrets. Then the whole API surface a user reads is fetched (flow runs with their
parameters and state history, task runs and their states, logs, every artifact version, events, block
documents, variables) and searched for each secret in every form it could travel in; so are the server's
database files and the runs' persisted results. The search is shown not to be vacuous: the masked text arrived.
"""

from __future__ import annotations

import base64
import json
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from kube_fake import FakeApiServer, kubeconfig_json
from test_cli_processes import ROLLBOOK, free_port, running, wait_until

from rollbook.server import is_healthy

HERE = Path(__file__).parent


def _pem(kind: str, body: str) -> str:
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


def plant(fake_url: str) -> dict[str, str]:
    """Fresh secrets; the DB password has URL-special characters, so the DSN carries it percent-encoded."""
    password = f"Pw@{secrets.token_hex(8)}/x:y"
    return {
        "db_password": password,
        "dsn": f"postgresql://app:{quote(password, safe='')}@127.0.0.1:9/app",
        "k8s_token": f"kube-token-{secrets.token_hex(12)}",
        "kubeconfig": "",  # filled below: it must hold the token
        "registry_password": f"reg-{secrets.token_hex(12)}",
        "bearer_token": f"bearer-{secrets.token_hex(12)}",
        "client_cert": _pem("CERTIFICATE", base64.b64encode(b"public part " + secrets.token_bytes(24)).decode()),
        "client_key": _pem("PRIVATE KEY", base64.b64encode(b"private part " + secrets.token_bytes(24)).decode()),
        "aws_secret": f"aws-{secrets.token_hex(16)}",
        "fake_url": fake_url,
    }


def needles(spec: dict[str, str]) -> dict[str, str]:
    """Every secret in every form it may travel in: as is, URL-encoded both ways, JSON-escaped."""
    values = {
        "db password": spec["db_password"],
        "dsn": spec["dsn"],
        "kubernetes token": spec["k8s_token"],
        "registry password": spec["registry_password"],
        "bearer token": spec["bearer_token"],
        "etcd client key": spec["client_key"].splitlines()[1],
        "aws secret": spec["aws_secret"],
    }
    forms: dict[str, str] = {}
    for name, value in values.items():
        forms[name] = value
        forms[f"{name} (url-encoded)"] = quote(value, safe="")
        forms[f"{name} (form-encoded)"] = quote_plus(value, safe="")
        forms[f"{name} (json)"] = json.dumps(value)[1:-1]
    return forms


@pytest.fixture(scope="module")
def rollbook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """`rollbook server` on a free port with its own PREFECT_HOME; yields (api_url, home, env for clients)."""
    import os

    base = tmp_path_factory.mktemp("secret-search")
    home = base / "server-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", XDG_DATA_HOME=str(base / "xdg"))
    port, log = free_port(), base / "server.log"
    api_url = f"http://127.0.0.1:{port}/api"
    with running([ROLLBOOK, "server", "--port", str(port)], env, log):
        wait_until(lambda: is_healthy(api_url), 180, "rollbook server to answer", log)
        yield api_url, home, env


def _post_all(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> list[Any]:
    """Every row of a paged `.../filter` endpoint."""
    rows: list[Any] = []
    while True:
        response = client.post(path, json={**(body or {}), "limit": 200, "offset": len(rows)})
        response.raise_for_status()
        page = response.json()
        rows.extend(page)
        if len(page) < 200:
            return rows


def _events(client: httpx.Client) -> list[Any]:
    response = client.post("/events/filter", json={"filter": {"occurred": {"since": "2000-01-01T00:00:00Z"}}})
    response.raise_for_status()
    page = response.json()
    events = list(page["events"])
    while page.get("next_page"):
        page = client.get(page["next_page"]).json()
        events.extend(page["events"])
    return events


def api_surface(api_url: str) -> dict[str, list[Any]]:
    """What a user can read through the Prefect API (the UI shows nothing else)."""
    with httpx.Client(base_url=api_url, timeout=30) as client:
        flow_runs = _post_all(client, "/flow_runs/filter")
        task_runs = _post_all(client, "/task_runs/filter")
        surface = {
            "flow runs (with parameters)": flow_runs,
            "flow run states": [
                client.get("/flow_run_states/", params={"flow_run_id": run["id"]}).json() for run in flow_runs
            ],
            "task runs": task_runs,
            "task run states": [
                client.get("/task_run_states/", params={"task_run_id": run["id"]}).json() for run in task_runs
            ],
            "logs": _post_all(client, "/logs/filter"),
            "artifacts (every version)": _post_all(client, "/artifacts/filter"),
            "latest artifacts": _post_all(client, "/artifacts/latest/filter"),
            "events": _events(client),
            "block documents": client.post("/block_documents/filter", json={}).json(),
            "variables": _post_all(client, "/variables/filter"),
        }
    return surface


def test_planted_secrets_appear_nowhere(
    rollbook_server: tuple[str, Path, dict[str, str]], fake_apiserver: FakeApiServer, tmp_path: Path
) -> None:
    api_url, home, server_env = rollbook_server
    spec = plant(fake_apiserver.url)
    spec["kubeconfig"] = kubeconfig_json(fake_apiserver.url, spec["k8s_token"])
    spec_path, out_path, results = tmp_path / "spec.json", tmp_path / "runs.json", tmp_path / "results"
    spec_path.write_text(json.dumps(spec))
    env = dict(server_env, PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path / "client-home"))
    env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(results)
    child = subprocess.run(
        [sys.executable, str(HERE / "secret_flows.py"), str(spec_path), str(out_path)],
        env=env,
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    runs = json.loads(out_path.read_text())
    assert runs["states"] == {"success": "COMPLETED", "failure": "FAILED", "hello": "COMPLETED"}
    found = needles(spec)

    surface = _settled_surface(api_url)
    text = {part: json.dumps(rows) for part, rows in surface.items()}
    leaks = [f"{name} in {part}" for part, body in text.items() for name, form in found.items() if form in body]
    console = child.stdout + child.stderr
    leaks += [f"{name} on the console" for name, form in found.items() if form in console]
    for path in [*home.glob("prefect.db*"), *results.rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            leaks += [f"{name} in {path.name}" for name, form in found.items() if form.encode() in data]
    if leaks:
        pytest.fail("secrets found:\n" + "\n".join(leaks))

    # not vacuous: the masked text did arrive in each place
    assert "cannot connect to ***" in text["task run states"]
    assert "***" in text["flow run states"] and "***" in text["events"]
    assert text["logs"].count("***") >= 10
    assert text["artifacts (every version)"].count("***") >= 8
    assert any(path.is_file() for path in results.rglob("*")), "no result was persisted: nothing was searched"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in home.glob("prefect.db*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path}: {oct(path.stat().st_mode)}"


def _settled_surface(api_url: str) -> dict[str, list[Any]]:
    """The server writes logs and events in batches: read until the failed task's events and logs arrived."""
    deadline = time.monotonic() + 90
    while True:
        surface = api_surface(api_url)
        events = json.dumps(surface["events"])
        if ("prefect.task-run.Failed" in events and len(surface["logs"]) >= 20) or time.monotonic() > deadline:
            return surface
        time.sleep(2)
