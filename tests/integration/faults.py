"""Fault harness: run a flow in its own process against a sandbox, inject a fault at a chosen or random moment,
let the run finish or run it again, then check invariants on what the cluster ends up as.

Used by the tests/integration/test_fault_*.py files (a few trials in the suite) and benchmarks/fault_campaign.py
(many trials, counted); the flows' scenarios (setup, parameters, invariants) are in fault_scenarios.py. Faults:
- `apiserver-restart`: kube-apiserver stopped for `down_seconds`, then started again (the sandbox supervisor);
- `etcd-restart`: etcd stopped likewise: the API server stays up but answers 5xx or times out meanwhile;
- `etcd-pause`: etcd frozen (SIGSTOP) for `down_seconds`, then continued: a slow or stuck disk, requests hang;
- `flow-kill`: the flow's process SIGKILLed (as a lost worker), then the same run started again;
- `prefect-restart`: the Prefect server stopped for `down_seconds` and started again on its database;
- `prometheus-blip`: Prometheus stopped for `down_seconds`; `prometheus-outage`: stopped for the rest of the run.
A fault lands `at` seconds after the flow process starts, or "after-write": as soon as the scenario sees the
flow's first write in the cluster (the moment a killed worker hurts most).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import httpx
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from sandbox.cluster import Sandbox
from sandbox.services import wait_until

REPO = Path(__file__).resolve().parents[2]
FaultKind = Literal[
    "apiserver-restart", "etcd-restart", "etcd-pause", "flow-kill", "prefect-restart", "prometheus-blip",
    "prometheus-outage",
]  # fmt: skip
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
_SERVICE_OF: dict[str, str] = {
    "apiserver-restart": "kube-apiserver",
    "etcd-restart": "etcd",
    "prometheus-blip": "prometheus",
    "prometheus-outage": "prometheus",
}
RESULT_MARK = "ROLLBOOK-RESULT "

# Runs one flow from the catalogue with JSON parameters and prints how it ended on one marked line.
_CHILD = f"""
import json, sys
from flows import FLOWS
state = FLOWS[sys.argv[1]](**json.loads(sys.argv[2]), return_state=True)
if state.is_completed():
    value = state.result()
    data = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    print({RESULT_MARK!r} + json.dumps({{"ok": True, "result": data}}, default=str), flush=True)
else:
    print({RESULT_MARK!r} + json.dumps({{"ok": False, "state": state.name, "message": state.message}}), flush=True)
    sys.exit(1)
"""


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    at: float | Literal["after-write"]
    down_seconds: float = 8.0

    def describe(self) -> str:
        when = self.at if isinstance(self.at, str) else f"t+{self.at:.1f}s"
        return f"{self.kind}@{when}"


def random_fault(kind: FaultKind, rng: random.Random, *, window: tuple[float, float] = (1.0, 14.0)) -> Fault:
    """A fault at a random moment of the run (most of a run's time is its rollout wait)."""
    return Fault(kind, round(rng.uniform(*window), 1))


@dataclass
class RunOutcome:
    ok: bool
    killed: bool
    returncode: int | None
    result: dict[str, Any] | None
    reason: str  # why it failed: the flow's state message, or the last line it wrote


@dataclass
class TrialRecord:
    fault: Fault
    injected_at: float | None  # seconds after the first run started; None if the run ended first
    runs: list[RunOutcome] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)  # recovery steps an operator took between runs

    @property
    def final(self) -> RunOutcome:
        return self.runs[-1]

    @property
    def converged(self) -> bool:
        return self.final.ok and not self.violations


class FlowProcess:
    """One flow run in a child process of its own session, so a SIGKILL takes the whole run down at once."""

    def __init__(self, flow: str, params: dict[str, Any], env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        stem = log_dir / f"{flow}-{uuid.uuid4().hex[:6]}"
        self.stdout_path, self.stderr_path = stem.with_suffix(".out"), stem.with_suffix(".err")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, flow, json.dumps(params)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.killed = False

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.killed = True
        self.proc.wait(30)

    def wait(self, timeout: float) -> RunOutcome:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return RunOutcome(False, True, None, None, f"still running after {timeout:.0f}s: killed by the harness")
        lines = self.stdout_path.read_text(errors="replace").splitlines()
        marked = [json.loads(line[len(RESULT_MARK) :]) for line in lines if line.startswith(RESULT_MARK)]
        if self.killed:
            return RunOutcome(False, True, self.proc.returncode, None, "killed (SIGKILL)")
        if marked and marked[-1]["ok"]:
            return RunOutcome(True, False, self.proc.returncode, marked[-1]["result"], "")
        reason = marked[-1]["message"] if marked else self._last_error_line()
        return RunOutcome(False, False, self.proc.returncode, None, str(reason or ""))

    def _last_error_line(self) -> str:
        lines = [ln for ln in self.stderr_path.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:500] if lines else f"exited {self.proc.returncode} without a word"


def _inject(sandbox: Sandbox, run: FlowProcess, fault: Fault, written: Callable[[], bool]) -> float | None:
    """Wait for the fault's moment (unless the run ends first), then inject it; seconds since the run started.
    A `prometheus-outage` is left in place: `restore` ends it once the run is over."""
    deadline = run.started + (120 if fault.at == "after-write" else float(fault.at))
    while run.running() and time.monotonic() < deadline:
        if fault.at == "after-write" and written():
            break
        time.sleep(0.1)
    if not run.running():
        return None
    at = round(time.monotonic() - run.started, 1)
    if fault.kind == "flow-kill":
        run.kill()
    elif fault.kind == "etcd-pause":
        pid = sandbox.supervisor.pid("etcd")
        assert pid is not None, "etcd is not running"
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(fault.down_seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
    elif fault.kind == "prefect-restart":
        restart_prefect_server(down_seconds=fault.down_seconds)
    else:
        sandbox.stop_service(_SERVICE_OF[fault.kind])
        if fault.kind != "prometheus-outage":
            time.sleep(fault.down_seconds)
            sandbox.start_service(_SERVICE_OF[fault.kind])
    return at


def restore(sandbox: Sandbox) -> None:
    """Never leave the sandbox without a service a fault took away (etcd frozen included)."""
    pid = sandbox.supervisor.pid("etcd")
    if pid is not None:
        os.kill(pid, signal.SIGCONT)
    for service in set(_SERVICE_OF.values()):
        if sandbox.supervisor.pid(service) is None:
            sandbox.start_service(service)


def restart_prefect_server(*, down_seconds: float) -> None:
    """Stop the temporary Prefect server of this process (prefect_test_harness) and start it again on the same
    port and database, as a restarted or redeployed server would come back. Uses the harness server's own
    command line (a private method of Prefect's SubprocessASGIServer: tests only)."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer._instances.get(None)
    if server is None or server.server_process is None:
        raise RuntimeError("no temporary Prefect server in this process to restart")
    server.server_process.terminate()
    server.server_process.wait(30)
    time.sleep(down_seconds)
    server.server_process = server._run_uvicorn_command()

    def healthy() -> bool:
        try:
            return httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 120, "the Prefect server to come back")


class Approver:
    """A person at the Prefect UI during a trial: every paused run is answered with `answer` (a flow waiting at a
    gate would otherwise hold the trial until its approval timeout)."""

    def __init__(self, answer: dict[str, Any] | None) -> None:
        self.answer, self.answered = answer, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Approver:
        if self.answer is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _loop(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType
        from prefect.flow_runs import resume_flow_run

        paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
        while not self._stop.wait(1.0):
            try:
                with get_client(sync_client=True) as prefect:
                    runs = prefect.read_flow_runs(flow_run_filter=paused)
                for run in runs:
                    resume_flow_run(run.id, run_input=self.answer)
                    self.answered += 1
            except Exception:  # noqa: BLE001 - the server may be restarting (a fault) or the schema not saved yet
                continue


# Runs another flow of the catalogue to completion (an operator's recovery step) and says how it ended.
RunFlow = Callable[[str, dict[str, Any]], RunOutcome]


class Scenario(Protocol):
    """One flow's trial: what the cluster starts as, the request, its first write, the answer a person gives to
    a refusal, and the invariants the cluster must end in."""

    flow: str
    approve: dict[str, Any] | None  # what the harness answers at every gate (None: the flow asks nothing)

    def params(self) -> dict[str, Any]: ...

    def written(self) -> bool: ...

    def answer(self, refused: RunOutcome, params: dict[str, Any], run: RunFlow) -> dict[str, Any] | None: ...

    def check(self, record: TrialRecord) -> list[str]: ...

    def cleanup(self) -> None: ...


def run_trial(
    sandbox: Sandbox,
    scenario: Scenario,
    *,
    fault: Fault,
    env: dict[str, str],
    log_dir: Path,
    timeout: float = 300,
) -> TrialRecord:
    """One trial: run, inject, and if the run did not succeed, run the same request once more (a person or a
    retry policy would); if that is refused with a way out (e.g. recover_pending, a lock to release), take it
    once, as the message says. Then check the scenario's invariants."""
    params = scenario.params()
    with Approver(scenario.approve):
        first = FlowProcess(scenario.flow, params, env, log_dir)
        try:
            record = TrialRecord(fault, _inject(sandbox, first, fault, _quiet(scenario.written)))
            record.runs.append(first.wait(timeout))
        finally:
            restore(sandbox)
        if not record.final.ok:
            record.runs.append(FlowProcess(scenario.flow, params, env, log_dir).wait(timeout))
        if not record.final.ok:

            def run(flow: str, flow_params: dict[str, Any]) -> RunOutcome:
                outcome = FlowProcess(flow, flow_params, env, log_dir).wait(timeout)
                record.actions.append(f"{flow}: {'ok' if outcome.ok else 'failed: ' + outcome.reason[:200]}")
                return outcome

            answered = scenario.answer(record.final, params, run)
            if answered is not None:
                record.runs.append(FlowProcess(scenario.flow, answered, env, log_dir).wait(timeout))
    record.violations = scenario.check(record)
    return record


def _quiet(probe: Callable[[], bool]) -> Callable[[], bool]:
    """A write probe that says False while the API server is away instead of raising."""

    def quiet() -> bool:
        try:
            return probe()
        except (ApiException, HTTPError, OSError):
            return False

    return quiet
