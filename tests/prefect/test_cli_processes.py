"""Long-running CLI commands in real processes: `rollbook server` and `rollbook serve`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kube_fake import FakeApiServer
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from rollbook.server import is_healthy

ROLLBOOK = shutil.which("rollbook", path=str(Path(sys.executable).parent)) or "rollbook"


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a command in its own session and always stop it: SIGTERM first, then SIGKILL to its group."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def wait_until(condition: object, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; process output:\n{log.read_text()[-4000:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_private(home: Path) -> None:
    """The home holds saved blocks and the key that decrypts them: owner only."""
    assert stat.S_IMODE(home.stat().st_mode) == 0o700, oct(home.stat().st_mode)
    database = home / "prefect.db"
    assert database.is_file() and database.stat().st_size > 0, "the server never wrote its database"
    for path in (database, *home.glob("prefect.db-*")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path}: {oct(path.stat().st_mode)}"


def test_server_starts_under_xdg_data_home_and_is_reused(child_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in child_env.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    port, log = free_port(), tmp_path / "server.log"
    api_url = f"http://127.0.0.1:{port}/api"
    with running([ROLLBOOK, "server", "--port", str(port)], env, log) as proc:
        wait_until(lambda: is_healthy(api_url), 180, "rollbook server to answer", log)
        assert_private(Path(env["XDG_DATA_HOME"]) / "rollbook" / "prefect")
        again = subprocess.run(
            [ROLLBOOK, "server", "--port", str(port)], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 0 and "already" in again.stdout
        proc.terminate()  # rollbook must pass SIGTERM on to the Prefect server it started
        assert proc.wait(timeout=60) is not None
    assert f"export PREFECT_API_URL={api_url}" in log.read_text()
    wait_until(lambda: not is_healthy(api_url, timeout=0.5), 30, "the server to stop", log)


def test_server_honours_prefect_home_and_keeps_it_private(child_env: dict[str, str], tmp_path: Path) -> None:
    home = tmp_path / "explicit-home"
    home.mkdir(mode=0o755)
    (home / "prefect.db").touch(mode=0o644)  # left world-readable by an older version: tightened on start
    env = {k: v for k, v in child_env.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)
    port, log = free_port(), tmp_path / "server.log"
    with running([ROLLBOOK, "server", "--port", str(port)], env, log):
        wait_until(lambda: is_healthy(f"http://127.0.0.1:{port}/api"), 180, "rollbook server to answer", log)
        assert_private(home)
    assert not (Path(env["XDG_DATA_HOME"]) / "rollbook" / "prefect").exists()
    assert str(home) in log.read_text()


def test_serve_executes_a_deployment_run(
    child_env: dict[str, str], fake_apiserver: FakeApiServer, tmp_path: Path
) -> None:
    env = dict(child_env, PREFECT_RUNNER_POLL_FREQUENCY="1")
    log = tmp_path / "serve.log"
    with running([ROLLBOOK, "serve"], env, log):
        wait_until(_deployment_exists, 120, "the hello-cluster deployment", log)
        flow_run = run_deployment(
            "hello-cluster/hello-cluster",
            parameters={"request": {"kubeconfig_path": str(fake_apiserver.kubeconfig_path)}},
            timeout=180,
            poll_interval=1,
        )
    assert flow_run.state is not None and flow_run.state.is_completed(), log.read_text()[-4000:]
    assert "/version/" in fake_apiserver.requests


def _deployment_exists() -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name("hello-cluster/hello-cluster")
        except Exception:
            return False
    return True
