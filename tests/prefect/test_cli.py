"""The `rollbook` CLI: argument errors are one line with exit 2, and real runs reach the Prefect server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kube_fake import FakeApiServer
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.sorting import FlowRunSort

from rollbook.cli import main

ROLLBOOK = shutil.which("rollbook", path=str(Path(sys.executable).parent)) or "rollbook"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr, got: {lines}"
    return lines[0]


def test_unknown_flow_exits_2_listing_known_flows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no-such-flow"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no-such-flow" in line and "hello-cluster" in line


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (["request.namespace=Not_A_Namespace"], "request.namespace"),
        (["nonsense=1"], "unknown parameter"),
        (['request={"cluster_block": "x", "context": "y"}'], "not both"),
        (["no-equals-sign"], "KEY=VALUE"),
    ],
)
def test_bad_parameter_exits_2_before_running(
    params: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "hello-cluster"]
    for param in params:
        argv += ["--param", param]
    runs_before = _flow_run_count()
    assert main(argv) == 2
    assert expected in _one_error_line(capsys.readouterr().err)
    assert _flow_run_count() == runs_before, "validation must happen before a flow run is created"


def _flow_run_count() -> int:
    with get_client(sync_client=True) as client:  # counted by the server: a read is one page of at most 200
        return client.count_flow_runs()


def test_run_completes_against_a_cluster(fake_apiserver: FakeApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "hello-cluster", "-p", f"request.kubeconfig_path={fake_apiserver.kubeconfig_path}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert '"version": "v1.36.3-fake"' in out and '"pods": 3' in out


def test_failed_run_exits_1(fake_apiserver: FakeApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    fake_apiserver.failures = [403]  # permanent: the retry policy must not spend retries on it
    code = main(["run", "hello-cluster", "-p", f"request.kubeconfig_path={fake_apiserver.kubeconfig_path}"])
    assert code == 1
    assert "Failed" in capsys.readouterr().err
    assert fake_apiserver.requests == ["/version/"]  # one attempt only


def test_console_script_runs_the_flow(fake_apiserver: FakeApiServer, child_env: dict[str, str]) -> None:
    """End to end through the installed entry point, in a fresh process that reads PREFECT_API_URL."""
    result = subprocess.run(
        [ROLLBOOK, "run", "hello-cluster", "--param", f"request.kubeconfig_path={fake_apiserver.kubeconfig_path}"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"pods": 3' in result.stdout
    assert fake_apiserver.token not in result.stdout + result.stderr


def test_server_reuses_a_running_server(prefect_api_url: str, child_env: dict[str, str]) -> None:
    port = urlsplit(prefect_api_url).port
    assert port is not None
    result = subprocess.run(
        [ROLLBOOK, "server", "--port", str(port)], env=child_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "already" in result.stdout
    assert f"export PREFECT_API_URL=http://127.0.0.1:{port}/api" in result.stdout


def test_help_is_available_for_every_command() -> None:
    """Through the installed console script, so `sandbox` comes in as the `rollbook.commands` entry point."""
    for argv in ([], ["server"], ["serve"], ["run"], ["catalogue"], ["sandbox"], ["sandbox", "env"]):
        result = subprocess.run(
            [ROLLBOOK, *argv, "--help"], capture_output=True, text=True, timeout=120, env=dict(os.environ)
        )
        assert result.returncode == 0, result.stderr
        assert "usage: rollbook" in result.stdout


def test_catalogue_lists_every_flow_with_its_tags(capsys: pytest.CaptureFixture[str]) -> None:
    from flows import CATALOGUE

    assert main(["catalogue"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [[e.name, ",".join(e.tags)] for e in CATALOGUE]


@pytest.mark.parametrize("command", [["serve"], ["run", "hello-cluster"]])
def test_api_url_that_does_not_answer_is_named(command: list[str], child_env: dict[str, str]) -> None:
    """serve and run take --api-url (else PREFECT_API_URL); a server that does not answer is named, exit 2."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    env = {k: v for k, v in child_env.items() if k != "PREFECT_API_URL"}
    given = subprocess.run(
        [ROLLBOOK, *command, "--api-url", dead], env=env, capture_output=True, text=True, timeout=120
    )
    assert given.returncode == 2
    assert f"no Prefect server answers at {dead} (from --api-url)" in _one_error_line(given.stderr)
    exported = subprocess.run(
        [ROLLBOOK, *command], env={**env, "PREFECT_API_URL": dead}, capture_output=True, text=True, timeout=120
    )
    assert exported.returncode == 2
    assert f"no Prefect server answers at {dead} (from PREFECT_API_URL)" in _one_error_line(exported.stderr)


def test_run_reports_to_the_server_given_by_api_url(
    prefect_api_url: str, child_env: dict[str, str], fake_apiserver: FakeApiServer
) -> None:
    env = {k: v for k, v in child_env.items() if k != "PREFECT_API_URL"}
    result = subprocess.run(
        [
            ROLLBOOK,
            "run",
            "hello-cluster",
            "--api-url",
            prefect_api_url,
            "--param",
            f"request.kubeconfig_path={fake_apiserver.kubeconfig_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with get_client(sync_client=True) as client:  # the session's server holds hundreds of runs: ask for these
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["hello-cluster"])), sort=FlowRunSort.START_TIME_DESC
        )
    assert any(
        r.flow_id and r.parameters.get("request", {}).get("kubeconfig_path") == str(fake_apiserver.kubeconfig_path)
        for r in runs
    ), "the run did not report to the --api-url server"
