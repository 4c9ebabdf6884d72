"""The undo flow against real kubectl on the sandbox: same results, clear failures, nothing changed on refusal."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.flow_runs import resume_flow_run

from blocks import KubernetesCluster
from flows.deployment_undo import RolloutFailed, UndoRequest, deployment_undo
from flows.rollout_history import HistoryRequest, rollout_history
from rollbook import revisions, rollback_guard
from rollbook.change import ChangeControls
from sandbox.cluster import Sandbox
from sandbox.registry import SandboxRegistries
from sandbox.services import wait_until
from tasks.kube import deployment_pod_problems

CONTROLS = ChangeControls(reason="integration test rollback", requested_by="pytest")


def _image(sandbox: Sandbox, version: str, mirror: bool = False) -> str:
    return SandboxRegistries(sandbox.cfg, sandbox.bins).image(version, mirror=mirror)


def _request(sandbox: Sandbox, namespace: str, name: str = "web", **kw: Any) -> UndoRequest:
    return UndoRequest(kubeconfig_path=str(sandbox.cfg.kubeconfig), namespace=namespace, deployment=name, **kw)


def _status(sandbox: Sandbox, namespace: str, name: str = "web") -> None:
    sandbox.kubectl("rollout", "status", f"deployment/{name}", "--timeout=90s", "-n", namespace)


def _create(sandbox: Sandbox, namespace: str, image: str, replicas: int = 2, name: str = "web") -> None:
    sandbox.kubectl("create", "deployment", name, f"--image={image}", f"--replicas={replicas}", "-n", namespace)
    _status(sandbox, namespace, name)


def _read(apps: client.AppsV1Api, namespace: str, name: str = "web") -> dict[str, Any]:
    return apps.api_client.sanitize_for_serialization(apps.read_namespaced_deployment(name, namespace))  # type: ignore[no-any-return]


def _comparable(deployment: dict[str, Any]) -> dict[str, Any]:
    """What must be identical after our undo and kubectl's: template, annotations (minus rollbook.dev/*)."""
    annotations = {k: v for k, v in revisions.annotations_of(deployment).items() if not k.startswith("rollbook.dev/")}
    return {
        "template": deployment["spec"]["template"],  # raw: a leaked pod-template-hash label must show
        "annotations": annotations,
        "paused": bool(deployment["spec"].get("paused")),
    }


def _rs_revisions(apps: client.AppsV1Api, namespace: str) -> list[tuple[int, list[str]]]:
    """(revision, images) of every ReplicaSet: the history both sides must end up with."""
    result = []
    for rs in apps.list_namespaced_replica_set(namespace).items:
        rev = int((rs.metadata.annotations or {}).get(revisions.REVISION_ANNOTATION, "0"))
        result.append((rev, [c.image for c in rs.spec.template.spec.containers]))
    return sorted(result)


@pytest.fixture
def twin(sandbox: Sandbox, core: client.CoreV1Api, namespace: str) -> Iterator[tuple[str, str]]:
    """Two namespaces, so the twin Deployments can have the same name, labels and template."""
    other = f"{namespace[:50]}-k{uuid.uuid4().hex[:4]}"
    core.create_namespace({"metadata": {"name": other, "labels": {"rollbook.dev/test": "true"}}})
    try:
        yield namespace, other
    finally:
        core.delete_namespace(other)


def _both(sandbox: Sandbox, namespaces: tuple[str, ...], *args: str) -> None:
    for ns in namespaces:
        sandbox.kubectl(*args, "-n", ns)


def _build_history(sandbox: Sandbox, namespaces: tuple[str, str], seed: int) -> None:
    """A generated history, applied identically to both namespaces: image and env changes, scaling, and a
    revisionHistoryLimit small enough to prune the oldest ReplicaSets."""
    rng = random.Random(seed)
    versions = ["1.0.0", "1.1.0", "1.2.0"]
    for ns in namespaces:
        _create(sandbox, ns, _image(sandbox, "1.0.0"), replicas=2)
    _both(sandbox, namespaces, "patch", "deployment/web", "-p", '{"spec": {"revisionHistoryLimit": 4}}')
    for step in range(rng.randint(5, 7)):
        op = rng.choice(["image", "env", "env", "scale", "image", "pod-annotation"])
        if op == "pod-annotation":  # a template annotation is a template change: it makes a revision too
            patch = f'{{"spec": {{"template": {{"metadata": {{"annotations": {{"note": "step-{step}"}}}}}}}}}}'
            args = ("patch", "deployment/web", "-p", patch)
        elif op == "image":
            args = ("set", "image", "deployment/web", f"demo-app={_image(sandbox, rng.choice(versions))}")
        elif op == "env":
            args = ("set", "env", "deployment/web", f"STEP={step}", f"MODE={rng.choice(['a', 'b'])}")
        else:
            args = ("scale", "deployment/web", f"--replicas={rng.randint(1, 3)}")
        _both(sandbox, namespaces, *args)
        if op != "scale":
            _both(sandbox, namespaces, "annotate", "deployment/web", f"kubernetes.io/change-cause=step {step}: {op}")
        # an annotation only the ReplicaSets created from now on will carry: undo must drop it like kubectl does
        _both(sandbox, namespaces, "annotate", "deployment/web", f"example.com/since-step-{step}=yes")
        for ns in namespaces:
            _status(sandbox, ns)


def _kubectl_undo(sandbox: Sandbox, namespace: str, to_revision: int | None) -> str:
    extra = [f"--to-revision={to_revision}"] if to_revision else []
    proc = sandbox.kubectl("rollout", "undo", "deployment/web", *extra, "-n", namespace, check=False)
    return "error" if proc.returncode else proc.stdout.strip()


def _flow_undo(sandbox: Sandbox, namespace: str, to_revision: int | None) -> str:
    try:
        result = deployment_undo(
            _request(sandbox, namespace, to_revision=to_revision, wait_timeout_seconds=90), CONTROLS
        )
    except (revisions.RevisionNotFound, revisions.RollbackRefused):
        return "error"
    return "changed" if result.changed else "skipped"


def _plain_undo_after_own_rollback(sandbox: Sandbox, apps: client.AppsV1Api, namespace: str) -> int | None:
    """Where kubectl's plain undo would undo rollbook's own rollback, rollbook refuses it (or, for the same
    request, finds it applied) and changes nothing; returns the revision kubectl's "previous" means then (the
    one the rollback came from), so both sides can go there explicitly. None when no rollback is in place."""
    before = _read(apps, namespace)
    record = rollback_guard.rollback_in_place(before)
    if record is None:
        return None
    try:
        result = deployment_undo(_request(sandbox, namespace, wait_timeout_seconds=90), CONTROLS)
        assert result.outcome == "unchanged" and result.applied_by, result
    except revisions.RollbackRefused as refused:
        assert f"to_revision={record.from_revision} restores" in str(refused)
    _unchanged(apps, namespace, before)
    assert revisions.revision_of(_read(apps, namespace)) == revisions.revision_of(before)
    return record.from_revision


@pytest.mark.parametrize("seed", [1, 7, 12])
def test_undo_matches_kubectl(sandbox: Sandbox, apps: client.AppsV1Api, twin: tuple[str, str], seed: int) -> None:
    ours, theirs = twin
    _build_history(sandbox, twin, seed)
    assert _comparable(_read(apps, ours)) == _comparable(_read(apps, theirs))

    rng = random.Random(seed * 31)
    for _ in range(4):
        live = revisions.revision_of(_read(apps, ours))
        known = sorted({rev for rev, _ in _rs_revisions(apps, ours)})
        # previous, an existing older revision, the live one (skipped), or a pruned/unknown one (error)
        choices: list[int | None] = [None, rng.choice(known), live, min(known) - 1 if min(known) > 1 else live + 5]
        to_revision = rng.choice(choices)
        if to_revision is None:
            to_revision = _plain_undo_after_own_rollback(sandbox, apps, ours)
        flow_outcome = _flow_undo(sandbox, ours, to_revision)
        kubectl_outcome = _kubectl_undo(sandbox, theirs, to_revision)
        assert (flow_outcome == "error") == (kubectl_outcome == "error"), (to_revision, flow_outcome, kubectl_outcome)
        assert (flow_outcome == "skipped") == ("skipped rollback" in kubectl_outcome), (flow_outcome, kubectl_outcome)
        _status(sandbox, theirs)
        _status(sandbox, ours)
        assert _comparable(_read(apps, ours)) == _comparable(_read(apps, theirs)), to_revision
        assert _rs_revisions(apps, ours) == _rs_revisions(apps, theirs), to_revision


def test_paused_deployment_refused_like_kubectl(
    sandbox: Sandbox, apps: client.AppsV1Api, twin: tuple[str, str]
) -> None:
    ours, theirs = twin
    for ns in twin:
        _create(sandbox, ns, _image(sandbox, "1.0.0"))
        sandbox.kubectl("set", "image", "deployment/web", f"demo-app={_image(sandbox, '1.1.0')}", "-n", ns)
        _status(sandbox, ns)
        sandbox.kubectl("rollout", "pause", "deployment/web", "-n", ns)
        sandbox.kubectl("set", "image", "deployment/web", f"demo-app={_image(sandbox, '1.2.0')}", "-n", ns)
    before = _read(apps, ours)
    with pytest.raises(revisions.RollbackRefused, match="paused"):
        deployment_undo(_request(sandbox, ours), CONTROLS)
    proc = sandbox.kubectl("rollout", "undo", "deployment/web", "-n", theirs, check=False)
    assert proc.returncode != 0 and "paused" in proc.stderr
    _unchanged(apps, ours, before)
    after = _read(apps, ours)
    assert _comparable(after) == _comparable(_read(apps, theirs))
    assert after["spec"]["paused"] is True


def test_undo_to_unpullable_revision_fails_then_recovers(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str
) -> None:
    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    bad = registries.image("1.1.0", mirror=False)
    good = registries.image("1.0.0", mirror=True)
    _create(sandbox, namespace, good)  # revision 1, from the mirror
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host()])
    try:
        sandbox.kubectl("set", "image", "deployment/web", f"demo-app={bad}", "-n", namespace)  # revision 2: stuck
        sandbox.kubectl("rollout", "undo", "deployment/web", "-n", namespace)  # revision 3: good again
        _status(sandbox, namespace)
        with pytest.raises(RolloutFailed, match="ImagePullBackOff") as failure:
            deployment_undo(_request(sandbox, namespace, to_revision=2, wait_timeout_seconds=20), CONTROLS)
        assert "'web'" in str(failure.value)
        assert _read(apps, namespace)["spec"]["template"]["spec"]["containers"][0]["image"] == bad

        cluster = KubernetesCluster(kubeconfig_path=str(sandbox.cfg.kubeconfig))
        problems = deployment_pod_problems.fn(cluster, namespace, "web")
        assert any("ImagePullBackOff" in p for pod in problems.values() for p in pod), problems

        # right after rollbook's own rollback a plain undo would restore revision 3 by undoing it: refused
        with pytest.raises(revisions.RollbackRefused, match="to_revision=3 restores"):
            deployment_undo(_request(sandbox, namespace, wait_timeout_seconds=90), CONTROLS)
        result = deployment_undo(_request(sandbox, namespace, to_revision=3, wait_timeout_seconds=90), CONTROLS)
        assert result.changed and result.rollout is not None and result.rollout["done"]
        live = _read(apps, namespace)
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == good
        assert live["metadata"]["annotations"]["rollbook.dev/rolled-back-to-revision"] == "3"
        assert live["metadata"]["annotations"]["rollbook.dev/action"] == "rollback"
    finally:
        sandbox.set_unreachable_registries([])


def test_progress_deadline_fails_the_wait_without_a_timeout(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str
) -> None:
    """No wait timeout given: the bound comes from progressDeadlineSeconds, and the controller's verdict ends it."""
    _create(sandbox, namespace, _image(sandbox, "1.0.0", mirror=True))
    sandbox.kubectl("patch", "deployment/web", "-p", '{"spec": {"progressDeadlineSeconds": 8}}', "-n", namespace)
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host()])
    try:
        sandbox.kubectl("set", "image", "deployment/web", f"demo-app={_image(sandbox, '1.1.0')}", "-n", namespace)
        sandbox.kubectl("rollout", "undo", "deployment/web", "-n", namespace)
        _status(sandbox, namespace)
        started = time.monotonic()
        with pytest.raises(RolloutFailed, match="exceeded its progress deadline.*ImagePullBackOff"):
            deployment_undo(_request(sandbox, namespace, to_revision=2), CONTROLS)
        assert time.monotonic() - started < 8 + 30 + 15  # well before the derived bound expires
    finally:
        sandbox.set_unreachable_registries([])


@pytest.fixture
def history_of_two(sandbox: Sandbox, apps: client.AppsV1Api, namespace: str) -> dict[str, Any]:
    _create(sandbox, namespace, _image(sandbox, "1.0.0"))
    sandbox.kubectl("set", "image", "deployment/web", f"demo-app={_image(sandbox, '1.1.0')}", "-n", namespace)
    _status(sandbox, namespace)
    return _read(apps, namespace)


def _unchanged(apps: client.AppsV1Api, namespace: str, before: dict[str, Any]) -> None:
    """Spec and metadata untouched. Not the resourceVersion: the controller keeps updating status after a
    rollout (conditions, old ReplicaSet scale-down), which moves it without anyone changing the Deployment."""
    after = _read(apps, namespace)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert after["spec"] == before["spec"]


def test_bad_input_changes_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, history_of_two: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="namespace 'no-such-ns' not found"):
        deployment_undo(_request(sandbox, "no-such-ns"), CONTROLS)
    with pytest.raises(ValueError, match=f"deployment 'nope' not found in namespace '{namespace}'"):
        deployment_undo(_request(sandbox, namespace, name="nope"), CONTROLS)
    with pytest.raises(revisions.RevisionNotFound, match="unable to find revision 9 .*'web'"):
        deployment_undo(_request(sandbox, namespace, to_revision=9), CONTROLS)
    params = _request(sandbox, namespace).model_dump() | {"to_revision": -1}
    with pytest.raises(Exception, match="to_revision"):
        deployment_undo(params, CONTROLS)  # type: ignore[arg-type]
    _unchanged(apps, namespace, history_of_two)


def test_plan_changes_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, history_of_two: dict[str, Any]
) -> None:
    controls = CONTROLS.model_copy(update={"plan": True})
    result = deployment_undo(_request(sandbox, namespace), controls)
    assert result.outcome == "planned" and result.changed is False
    assert result.to_revision == 1 and result.from_revision == 2
    image_change = next(c for c in result.template_changes if c["path"].endswith(".image"))
    assert image_change == {
        "path": "spec.containers[demo-app].image",
        "current": _image(sandbox, "1.1.0"),
        "target": _image(sandbox, "1.0.0"),
    }
    _unchanged(apps, namespace, history_of_two)


def _run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def _wait_paused(known: set[Any], timeout: float = 60) -> FlowRun:
    """The newest paused run not seen before (runs of earlier tests stay in the session's server)."""
    end = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < end:
            runs = prefect.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            fresh = [r for r in runs if r.id not in known]
            if fresh:
                return fresh[0]
            time.sleep(0.3)
    raise TimeoutError("no paused flow run appeared")


def _paused_ids() -> set[Any]:
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            )
        )
    return {r.id for r in runs}


def _resume(run: FlowRun, approved: bool) -> None:
    last: Exception | None = None
    for _ in range(20):  # the input schema is saved just after the run turns PAUSED: a resume can race it
        try:
            resume_flow_run(run.id, run_input={"approved": approved, "approver": "pytest", "comment": "from pytest"})
            return
        except RuntimeError as exc:
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"could not resume {run.id}: {last}")


def _state_of(run: FlowRun) -> StateType | None:
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return runs[0].state_type if runs else None


@pytest.mark.parametrize("approved", [False, True])
def test_approval_gate(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, history_of_two: dict[str, Any], approved: bool
) -> None:
    controls = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    known = _paused_ids()
    thread, out = _run_in_thread(
        lambda: deployment_undo(_request(sandbox, namespace, wait_timeout_seconds=90), controls)
    )
    run = _wait_paused(known)
    _unchanged(apps, namespace, history_of_two)  # nothing happens while the run waits
    _resume(run, approved)
    thread.join(120)
    assert "error" not in out, out.get("error")
    assert out["result"].changed is approved
    assert out["result"].outcome == ("changed" if approved else "not-approved")
    if approved:
        live = _read(apps, namespace)
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == _image(sandbox, "1.0.0")
        assert live["metadata"]["annotations"]["rollbook.dev/requested-by"] == "pytest"
    else:
        _unchanged(apps, namespace, history_of_two)


def test_approval_timeout_changes_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, history_of_two: dict[str, Any]
) -> None:
    controls = CONTROLS.model_copy(
        update={"require_approval": True, "approval_poll_seconds": 1, "approval_timeout_seconds": 10}
    )
    result = deployment_undo(_request(sandbox, namespace), controls)
    assert result.outcome == "not-approved" and "not approved" in result.summary
    _unchanged(apps, namespace, history_of_two)


def test_history_lists_revisions_and_detail(sandbox: Sandbox, namespace: str, history_of_two: dict[str, Any]) -> None:
    sandbox.kubectl("annotate", "deployment/web", "kubernetes.io/change-cause=to 1.1.0", "-n", namespace)
    apps = client.AppsV1Api(sandbox.api_client())

    def copied_to_replica_set() -> bool:  # the controller copies Deployment annotations onto the live RS
        return any(
            (rs.metadata.annotations or {}).get("kubernetes.io/change-cause") == "to 1.1.0"
            for rs in apps.list_namespaced_replica_set(namespace).items
        )

    wait_until(copied_to_replica_set, 30, "change-cause on the ReplicaSet")
    result = rollout_history(
        HistoryRequest(kubeconfig_path=str(sandbox.cfg.kubeconfig), namespace=namespace, deployment="web", revision=1)
    )
    rows = result["revisions"]
    assert [r["revision"] for r in rows] == [1, 2]
    assert [r["live"] for r in rows] == [False, True]
    assert rows[1]["images"] == _image(sandbox, "1.1.0")
    assert rows[1]["change_cause"] == "to 1.1.0"
    assert result["detail"]["template"]["spec"]["containers"][0]["image"] == _image(sandbox, "1.0.0")
    assert "pod-template-hash" not in result["detail"]["template"]["metadata"]["labels"]


def test_rerun_finishes_its_own_rollback_and_never_undoes_it(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, history_of_two: dict[str, Any]
) -> None:
    """kubectl's "previous" after an undo is the bad revision again; rollbook remembers what it did."""
    first = deployment_undo(_request(sandbox, namespace, wait_timeout_seconds=90), CONTROLS)
    assert first.outcome == "changed" and (first.from_revision, first.to_revision) == (2, 1)
    _status(sandbox, namespace)
    after_first = _read(apps, namespace)
    notes = after_first["metadata"]["annotations"]
    assert (notes["rollbook.dev/rolled-back-from-revision"], notes["rollbook.dev/rolled-back-to-revision"]) == (
        "2",
        "1",
    )
    assert revisions.revision_of(after_first) == 3

    again = deployment_undo(_request(sandbox, namespace, wait_timeout_seconds=90), CONTROLS)  # the same request
    assert again.outcome == "unchanged" and again.rollout is not None and again.rollout["done"]
    assert again.applied_by and notes["rollbook.dev/flow-run-id"] in again.applied_by
    assert "already applied by run" in again.summary
    _unchanged(apps, namespace, after_first)
    assert _read(apps, namespace)["spec"]["template"]["spec"]["containers"][0]["image"] == _image(sandbox, "1.0.0")

    # a colleague re-runs it with their own name and words: the same target chosen the same way, so the job
    # is finished, not undone
    other = ChangeControls(reason="someone else re-runs the undo", requested_by="oncall-2")
    colleague = deployment_undo(_request(sandbox, namespace, wait_timeout_seconds=90), other)
    assert colleague.outcome == "unchanged" and "already applied by run" in colleague.summary
    _unchanged(apps, namespace, after_first)

    on_purpose = deployment_undo(_request(sandbox, namespace, to_revision=2, wait_timeout_seconds=90), other)
    assert on_purpose.outcome == "changed"
    assert _read(apps, namespace)["spec"]["template"]["spec"]["containers"][0]["image"] == _image(sandbox, "1.1.0")
    after_explicit = _read(apps, namespace)

    # that rollback chose its revision explicitly; a plain undo now is another choice, and "previous" is the
    # version it just replaced: refused, naming the way to do it on purpose
    with pytest.raises(revisions.RollbackRefused, match=r"'previous' now means revision 3 .*to_revision=3 restores"):
        deployment_undo(_request(sandbox, namespace), CONTROLS)
    _unchanged(apps, namespace, after_explicit)


def test_pruned_revision_names_the_revisions_that_exist(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str
) -> None:
    _create(sandbox, namespace, _image(sandbox, "1.0.0"))
    sandbox.kubectl("patch", "deployment/web", "-p", '{"spec": {"revisionHistoryLimit": 1}}', "-n", namespace)
    for version in ("1.1.0", "1.2.0"):
        sandbox.kubectl("set", "image", "deployment/web", f"demo-app={_image(sandbox, version)}", "-n", namespace)
        _status(sandbox, namespace)
    wait_until(lambda: len(_rs_revisions(apps, namespace)) == 2, 30, "the controller to prune revision 1")
    before = _read(apps, namespace)
    with pytest.raises(
        revisions.RevisionNotFound, match=r"revision 1 .*are 2, 3; older ones are pruned \(revisionHistoryLimit 1\)"
    ):
        deployment_undo(_request(sandbox, namespace, to_revision=1), CONTROLS)
    _unchanged(apps, namespace, before)
