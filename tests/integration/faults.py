"""Fault harness: run a flow in its own process against a sandbox, inject a fault at a chosen or random moment,
let the run finish or run it again, then check invariants on what the cluster ends up as.

Used by tests/integration/test_fault_undo.py (a few trials in the suite) and benchmarks/fault_campaign.py
(many trials, counted). Faults:
- `apiserver-restart`: kube-apiserver stopped for `down_seconds`, then started again (the sandbox supervisor);
- `etcd-restart`: etcd stopped likewise: the API server stays up but answers 5xx or times out meanwhile;
- `flow-kill`: the flow's process SIGKILLed (as a lost worker), then the same run started again.
A fault lands `at` seconds after the flow process starts, or "after-write": as soon as the Deployment carries
the flow's rollback record (the moment a killed worker hurts most).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from rollbook import revisions
from sandbox.cluster import Sandbox
from sandbox.registry import SandboxRegistries
from sandbox.services import wait_until

REPO = Path(__file__).resolve().parents[2]
FaultKind = Literal["apiserver-restart", "etcd-restart", "flow-kill"]
FAULT_KINDS: tuple[FaultKind, ...] = ("apiserver-restart", "etcd-restart", "flow-kill")
_SERVICE_OF: dict[str, str] = {"apiserver-restart": "kube-apiserver", "etcd-restart": "etcd"}
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


def _inject(sandbox: Sandbox, run: FlowProcess, fault: Fault, written: Any) -> float | None:
    """Wait for the fault's moment (unless the run ends first), then inject it; seconds since the run started."""
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
    else:
        sandbox.stop_service(_SERVICE_OF[fault.kind])
        time.sleep(fault.down_seconds)
        sandbox.start_service(_SERVICE_OF[fault.kind])
    return at


def run_trial(
    sandbox: Sandbox,
    *,
    flow: str,
    params: dict[str, Any],
    fault: Fault,
    env: dict[str, str],
    log_dir: Path,
    written: Any = lambda: False,
    timeout: float = 300,
) -> TrialRecord:
    """One trial: run, inject, and if the run did not succeed, run the same request once more (a person or a
    retry policy would). Invariants are the caller's (they depend on the flow)."""
    first = FlowProcess(flow, params, env, log_dir)
    try:
        record = TrialRecord(fault, _inject(sandbox, first, fault, written))
    finally:
        for service in _SERVICE_OF.values():  # never leave the sandbox without its control plane
            if sandbox.supervisor.pid(service) is None:
                sandbox.start_service(service)
    record.runs.append(first.wait(timeout))
    if not record.final.ok:
        record.runs.append(FlowProcess(flow, params, env, log_dir).wait(timeout))
    return record


# -- deployment-undo ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UndoScenario:
    """A Deployment on its bad revision 2 (good revision 1 before it), in a namespace of its own."""

    namespace: str
    good_image: str
    bad_image: str


def _kube(sandbox: Sandbox) -> tuple[client.CoreV1Api, client.AppsV1Api]:
    api = sandbox.api_client()
    return client.CoreV1Api(api), client.AppsV1Api(api)


def prepare_undo(sandbox: Sandbox, *, replicas: int = 3, min_ready_seconds: int = 3) -> UndoScenario:
    """Good 1.0.0 then bad 1.1.0, both rolled out; minReadySeconds stretches the rollback's rollout so a fault
    at a random moment usually lands in its wait, as in a real rollout."""
    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    scenario = UndoScenario(f"fault-{uuid.uuid4().hex[:8]}", registries.image("1.0.0"), registries.image("1.1.0"))
    core, _ = _kube(sandbox)
    core.create_namespace({"metadata": {"name": scenario.namespace, "labels": {"rollbook.dev/test": "true"}}})
    ns = ("-n", scenario.namespace)
    sandbox.kubectl("create", "deployment", "web", f"--image={scenario.good_image}", f"--replicas={replicas}", *ns)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=120s", *ns)
    sandbox.kubectl("set", "image", "deployment/web", f"demo-app={scenario.bad_image}", *ns)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=120s", *ns)
    # set last: not a template change, so it starts no rollout, and the two above stay quick
    sandbox.kubectl("patch", "deployment/web", "-p", f'{{"spec": {{"minReadySeconds": {min_ready_seconds}}}}}', *ns)
    return scenario


def undo_params(sandbox: Sandbox, scenario: UndoScenario, *, wait_timeout_seconds: int = 120) -> dict[str, Any]:
    return {
        "request": {
            "kubeconfig_path": str(sandbox.cfg.kubeconfig),
            "namespace": scenario.namespace,
            "deployment": "web",
            "wait_timeout_seconds": wait_timeout_seconds,
        },
        "controls": {"reason": "fault trial: roll back the bad version", "requested_by": "fault-harness"},
    }


def undo_written(sandbox: Sandbox, scenario: UndoScenario) -> Any:
    """A probe for "after-write": the Deployment carries an undo record (False while the API is away)."""
    _, apps = _kube(sandbox)

    def probe() -> bool:
        try:
            dep = apps.read_namespaced_deployment("web", scenario.namespace, _request_timeout=2)
        except (ApiException, HTTPError):
            return False
        return "rollbook.dev/rolled-back-from-revision" in (dep.metadata.annotations or {})

    return probe


def _deployment(apps: client.AppsV1Api, namespace: str) -> dict[str, Any]:
    raw = apps.read_namespaced_deployment("web", namespace, _preload_content=False)
    value: dict[str, Any] = json.loads(raw.data)
    return value


def check_undo(sandbox: Sandbox, scenario: UndoScenario, record: TrialRecord) -> list[str]:
    """The invariants of one undo trial; each broken one is a sentence in the list."""
    found: list[str] = []
    if not record.final.ok and not record.final.reason.strip():
        found.append("the run failed without a reason")
    _, apps = _kube(sandbox)
    try:
        wait_until(lambda: revisions.rollout_state(_deployment(apps, scenario.namespace)).done, 120, "the rollout")
    except TimeoutError:
        found.append("the Deployment is not rolled out and ready")
    dep = _deployment(apps, scenario.namespace)
    image = revisions.template_images(dep["spec"]["template"])
    if image == [scenario.bad_image]:
        found.append("the Deployment is on the bad version (rollback missing or undone)")
    elif image != [scenario.good_image]:
        found.append(f"the Deployment is on neither revision's template: {image}")
    notes = revisions.annotations_of(dep)
    if (notes.get("rollbook.dev/rolled-back-from-revision"), notes.get("rollbook.dev/rolled-back-to-revision")) != (
        "2",
        "1",
    ):
        found.append(f"the audit record is not the one rollback 2 -> 1: {notes}")
    if revisions.revision_of(dep) != 3:
        found.append(f"revision {revisions.revision_of(dep)} instead of 3: the template changed more than once")
    sets = apps.list_namespaced_replica_set(scenario.namespace).items
    numbers = sorted(int((rs.metadata.annotations or {}).get(revisions.REVISION_ANNOTATION, "0")) for rs in sets)
    if numbers != [2, 3]:
        found.append(f"ReplicaSet revisions {numbers} instead of [2, 3]")
    final = record.final.result or {}
    if record.final.ok and final.get("outcome") not in ("changed", "unchanged"):
        found.append(f"unexpected outcome {final.get('outcome')!r}")
    if record.final.ok and len(record.runs) > 1 and final.get("outcome") == "unchanged" and not final.get("applied_by"):
        found.append("a re-run said unchanged without naming the run that applied the rollback")
    return found


def undo_trial(
    sandbox: Sandbox, fault: Fault, *, env: dict[str, str], log_dir: Path, timeout: float = 300
) -> tuple[TrialRecord, UndoScenario]:
    scenario = prepare_undo(sandbox)
    record = run_trial(
        sandbox,
        flow="deployment-undo",
        params=undo_params(sandbox, scenario),
        fault=fault,
        env=env,
        log_dir=log_dir,
        written=undo_written(sandbox, scenario),
        timeout=timeout,
    )
    record.violations = check_undo(sandbox, scenario, record)
    return record, scenario


def cleanup(sandbox: Sandbox, scenario: UndoScenario) -> None:
    core, _ = _kube(sandbox)
    try:
        core.delete_namespace(scenario.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
