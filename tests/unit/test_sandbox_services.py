"""The service supervisor on a real (tiny) process: start once, report, stop exactly it, free its port."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import pytest

from sandbox.services import ServiceError, ServiceSpec, Supervisor, port_open


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_server(port: int, tmp_path: Path) -> ServiceSpec:
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    ready = lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200  # noqa: E731
    return ServiceSpec("web", argv, (port,), ready, ready_timeout=20, dirs=(tmp_path / "made",))


def test_start_is_idempotent_and_stop_frees_the_port(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "run")
    spec = _http_server(_free_port(), tmp_path)
    pid = supervisor.start(spec)
    assert (tmp_path / "made").is_dir()
    assert supervisor.start(spec) == pid  # second start keeps the running process
    status = supervisor.status(spec)
    assert status.running and status.ready and status.pid == pid
    assert supervisor.stop(spec)
    assert not port_open(spec.ports[0])
    assert not supervisor.stop(spec)  # nothing left to stop
    assert not supervisor.status(spec).running


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "run")
    spec = _http_server(_free_port(), tmp_path)
    pid_file = tmp_path / "run" / "pids" / "web.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text("1\n12345\n")  # pid 1 started at another time: someone else's, never signal it
    assert supervisor.pid("web") is None
    assert not supervisor.stop(spec)


def test_a_service_started_through_a_launcher_is_still_ours_after_its_exec(tmp_path: Path) -> None:
    import dataclasses
    import shutil

    # a launcher that replaces itself with the server only after a while (setpriv does it for postgres): the pid's
    # executable changes after the pid file is written, and the service must still be recognised as ours
    plain = _http_server(_free_port(), tmp_path)
    launcher = [str(shutil.which("sh")), "-c", 'sleep 0.5; exec "$0" "$@"']
    spec = dataclasses.replace(plain, argv=[*launcher, *plain.argv])
    supervisor = Supervisor(tmp_path / "run")
    pid = supervisor.start(spec)
    assert supervisor.pid("web") == pid and supervisor.start(spec) == pid
    assert supervisor.stop(spec) and not port_open(spec.ports[0])


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        spec = _http_server(sock.getsockname()[1], tmp_path)
        with pytest.raises(ServiceError, match="already in use"):
            Supervisor(tmp_path / "run").start(spec)


def test_crash_at_start_shows_the_log(tmp_path: Path) -> None:
    spec = ServiceSpec("broken", [sys.executable, "-c", "import sys; sys.exit('boom at start')"], (), lambda: False)
    with pytest.raises(ServiceError, match="boom at start"):
        Supervisor(tmp_path / "run").start(spec)
