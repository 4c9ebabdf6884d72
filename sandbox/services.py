"""One small, uniform way to run a sandbox service: a command, its ports, a readiness check, a log file.

Processes are started in their own session so they outlive the `rollbook sandbox up` that started them.
A pid file records each one with the process's start time (from /proc); before trusting it we check that the
pid still has that start time, so `down` never signals an unrelated process that happened to reuse the pid.
The start time, unlike the executable, survives an `exec`: a service started through a launcher (setpriv) is
still recognised once the launcher has replaced itself with the real program.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class ServiceError(RuntimeError):
    """A service could not be started or did not become ready; the message names it and points at its log."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]
    ports: tuple[int, ...]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 90.0
    dirs: tuple[Path, ...] = ()  # created before the first start


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    ready: bool
    ports: tuple[int, ...]
    log: Path


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll `check` until it is true; every wait in the sandbox goes through here so each has a bound."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Supervisor:
    """Starts, inspects and stops the processes of one sandbox work directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.log_dir = run_dir / "logs"

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / "pids" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The recorded pid, if that process is still alive and is still the one we started."""
        pid_file = self._pid_file(name)
        if not pid_file.exists():
            return None
        pid_text, _, started = pid_file.read_text().partition("\n")
        started = started.strip()
        try:
            pid = int(pid_text)
            # pid files written before start times were recorded hold the executable's path
            now = os.readlink(f"/proc/{pid}/exe") if started.startswith("/") else _proc_start(pid)
            if now != started:
                return None
        except (ValueError, OSError):
            return None
        return pid

    def status(self, spec: ServiceSpec) -> ServiceStatus:
        pid = self.pid(spec.name)
        ready = pid is not None and probe(spec)
        return ServiceStatus(spec.name, pid, pid is not None, ready, spec.ports, self.log_file(spec.name))

    def start(self, spec: ServiceSpec) -> int:
        """Start the service unless it already runs; either way return only once it is ready."""
        pid = self.pid(spec.name)
        if pid is None:
            pid = self._spawn(spec)
        try:
            wait_until(lambda: self._alive_and_ready(spec), spec.ready_timeout, f"{spec.name} to become ready")
        except TimeoutError as exc:
            raise ServiceError(f"{spec.name}: {exc}; last log lines:\n{self.tail(spec.name)}") from None
        return pid

    def _alive_and_ready(self, spec: ServiceSpec) -> bool:
        if self.pid(spec.name) is None:
            raise ServiceError(f"{spec.name} exited during start-up; last log lines:\n{self.tail(spec.name)}")
        return probe(spec)

    def _spawn(self, spec: ServiceSpec) -> int:
        busy = [p for p in spec.ports if port_open(p)]
        if busy:
            raise ServiceError(f"{spec.name}: port(s) {busy} already in use by another process on 127.0.0.1")
        for directory in (self.log_dir, *spec.dirs):
            directory.mkdir(parents=True, exist_ok=True)
        self._pid_file(spec.name).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file(spec.name), "ab") as log:
            proc = subprocess.Popen(
                spec.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **spec.env},
                start_new_session=True,
            )
        try:
            started = _proc_start(proc.pid)
        except OSError:  # already gone; start() reports it with the log
            started = ""
        self._pid_file(spec.name).write_text(f"{proc.pid}\n{started}\n")
        return proc.pid

    def stop(self, spec: ServiceSpec, timeout: float = 15.0) -> bool:
        """Stop the service if we started it; True when something was stopped."""
        pid = self.pid(spec.name)
        self._pid_file(spec.name).unlink(missing_ok=True)
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not _alive(pid), timeout, f"{spec.name} (pid {pid}) to exit")
        except TimeoutError:
            _signal_group(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 5, f"{spec.name} (pid {pid}) to die after SIGKILL")
        wait_until(lambda: not any(port_open(p) for p in spec.ports), 10, f"{spec.name}'s ports to be freed")
        return True

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.log_file(name)
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def probe(spec: ServiceSpec) -> bool:
    """A readiness check that errors (connection refused, TLS not up yet) simply means "not ready yet"."""
    try:
        return spec.ready()
    except Exception:
        return False


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, it names
    one process for the machine's uptime. The command name (field 2) may hold spaces, so fields are counted
    after its closing parenthesis."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists" until its parent reaps it; it holds no ports and does no work
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
