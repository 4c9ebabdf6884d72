"""The pre-deploy checklist on the sandbox: a healthy release passes, each failure mode fails with its reason,
and bad input is refused before anything runs."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_helpers import CRASH_SET, RELEASE, helm_deploy, repo
from pydantic import ValidationError

from blocks import KubernetesCluster
from flows.predeploy_checklist import ChecklistFailed, ChecklistRequest, predeploy_checklist
from rollbook.checklist import CHECKS, CheckPolicy, Verdict
from sandbox.cluster import Sandbox
from sandbox.registry import SandboxRegistries
from tasks.checks.cluster_health import check_cluster_health, list_nodes

ALL_WARN = CheckPolicy(downgrade=list(CHECKS))  # every result reported, the flow returns the verdict


def request(sandbox: Sandbox, namespace: str, chart: Path, **extra: Any) -> ChecklistRequest:
    values = extra.pop("values", {})
    fields: dict[str, Any] = {
        "kubeconfig_path": str(sandbox.cfg.kubeconfig),
        "namespace": namespace,
        "release": RELEASE,
        "chart": str(chart),
        "values": {"image": {"repository": repo(sandbox), "tag": "1.1.0"}, **values},
        "cosign_public_key": str(SandboxRegistries(sandbox.cfg, sandbox.bins).public_key),
        "helm_executable": str(sandbox.bins / "helm"),
        "scanner_executable": "/nonexistent/grype",
        **extra,
    }
    return ChecklistRequest(**fields)


def by_check(verdict: Verdict) -> dict[str, Any]:
    return {r.check: r for r in verdict.results}


@pytest.fixture
def live(sandbox: Sandbox, namespace: str, demo_chart: Path) -> str:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    return namespace


def test_healthy_release_passes(sandbox: Sandbox, live: str, demo_chart: Path) -> None:
    verdict = predeploy_checklist(request(sandbox, live, demo_chart))
    checks = by_check(verdict)
    assert verdict.ready, verdict.summary
    for name in ("cluster-health", "current-release", "image-signature", "chart", "capacity"):
        assert checks[name].status == "pass", (name, checks[name].reason)
    assert "Running and Ready" in checks["current-release"].reason
    # an upgrade of 2 replicas × 16Mi (from the rendered chart): the running pods are replaced, one surge pod extra
    assert checks["capacity"].evidence["upgrade"] is True
    assert checks["capacity"].evidence["need_memory"] == "48.0Mi"
    # no grype here: the scan says so and the default policy makes it a warning
    assert checks["vulnerabilities"].status == "warn" and "grype not found" in checks["vulnerabilities"].reason
    assert checks["db-migration"].status == "warn" and checks["db-migration"].reason.startswith("not configured")
    # the demo images carry no EXPOSE and no entrypoint (kwok runs nothing): image-details warns, never blocks
    assert checks["image-details"].status == "warn" and checks["image-details"].evidence["unreadable"] == {}
    assert "warnings: vulnerabilities, image-details, db-migration" in verdict.summary


def test_first_install_into_a_new_namespace(sandbox: Sandbox, core: Any, demo_chart: Path) -> None:
    new = "checklist-new-ns-" + uuid.uuid4().hex[:6]
    verdict = predeploy_checklist(request(sandbox, new, demo_chart))
    checks = by_check(verdict)
    assert verdict.ready, verdict.summary  # a warning, not a failure: the server saw what it could
    assert checks["chart"].status == "warn"
    assert f"namespace {new!r} does not exist yet" in checks["chart"].reason
    assert "namespaced object(s) not sent" in checks["chart"].evidence["steps"]["server-dry-run"]
    assert checks["current-release"].reason.endswith("(first install)")
    assert checks["capacity"].evidence["upgrade"] is False
    assert checks["capacity"].evidence["need_memory"] == "32.0Mi"  # 2 replicas, no surge on a first install
    assert new not in [ns.metadata.name for ns in core.list_namespace().items]  # the dry run created nothing


def test_unsigned_image_and_crashlooping_pod_fail(sandbox: Sandbox, namespace: str, demo_chart: Path) -> None:
    assert not helm_deploy(sandbox, demo_chart, namespace, "1.0.0", "--set", CRASH_SET, wait="6s")
    unsigned = SandboxRegistries(sandbox.cfg, sandbox.bins).push("unsigned-checklist", "not signed\n")
    tag = unsigned.rsplit(":", 1)[1]
    req = request(sandbox, namespace, demo_chart, values={"image": {"repository": repo(sandbox), "tag": tag}})
    with pytest.raises(ChecklistFailed, match="image-signature") as failed:
        predeploy_checklist(req)
    assert "current-release" in str(failed.value)
    checks = by_check(predeploy_checklist(req.model_copy(update={"policy": ALL_WARN})))
    assert checks["image-signature"].status == "fail"
    assert unsigned in checks["image-signature"].reason
    assert checks["current-release"].status == "fail"
    assert "CrashLoopBackOff" in checks["current-release"].reason


def test_cordoned_and_not_ready_nodes_are_named(sandbox: Sandbox, live: str, demo_chart: Path) -> None:
    sandbox.kubectl("cordon", "kwok-node-1")
    sandbox.set_node_not_ready("kwok-node-2")
    try:
        with pytest.raises(ChecklistFailed, match="cluster-health"):
            predeploy_checklist(request(sandbox, live, demo_chart))
        verdict = predeploy_checklist(request(sandbox, live, demo_chart, policy=ALL_WARN))
    finally:
        sandbox.kubectl("uncordon", "kwok-node-1")
        sandbox.set_node_not_ready("kwok-node-2", not_ready=False)
    health = by_check(verdict)["cluster-health"]
    assert health.status == "fail"
    assert "NotReady: kwok-node-2" in health.reason
    assert "cordoned (SchedulingDisabled): kwok-node-1" in health.reason
    # neither node counts as room for the release
    assert by_check(verdict)["capacity"].evidence["schedulable_nodes"] == 1


def test_server_side_dry_run_and_memory_shortage(sandbox: Sandbox, live: str, demo_chart: Path) -> None:
    # an invalid label value passes helm lint and helm template; only the API server rejects it
    bad_label = {"podLabels": {"team": "not a valid label!"}}
    verdict = predeploy_checklist(request(sandbox, live, demo_chart, values=bad_label, policy=ALL_WARN))
    chart = by_check(verdict)["chart"]
    assert chart.status == "fail"
    assert chart.evidence["steps"]["lint"] == "ok" and chart.evidence["steps"]["template"] == "ok"
    assert "server-side dry run rejected Deployment/" in chart.reason and "not a valid label!" in chart.reason

    huge = {"resources": {"requests": {"cpu": "10m", "memory": "300Gi"}, "limits": {"memory": "300Gi"}}}
    with pytest.raises(ChecklistFailed, match="capacity"):
        predeploy_checklist(request(sandbox, live, demo_chart, values=huge))
    capacity = by_check(predeploy_checklist(request(sandbox, live, demo_chart, values=huge, policy=ALL_WARN)))
    assert capacity["capacity"].status == "fail"
    assert capacity["capacity"].reason.startswith("memory short by")
    assert capacity["chart"].status == "pass"


def test_bad_input_is_refused_and_nothing_changes(sandbox: Sandbox, live: str, demo_chart: Path) -> None:
    before = json.loads(sandbox.helm("history", RELEASE, "-n", live, "-o", "json").stdout)
    with pytest.raises(ValidationError, match="chart not found"):
        request(sandbox, live, demo_chart / "missing")
    with pytest.raises(ValidationError, match="not valid YAML at line 3"):
        request(sandbox, live, demo_chart, values_yaml="replicas: 2\nimage: [unclosed\n")
    with pytest.raises(ValidationError, match="not a valid image reference"):
        request(sandbox, live, demo_chart, images=["Registry.local/UPPER case:tag"])
    with pytest.raises(ValidationError, match="severity threshold"):
        request(sandbox, live, demo_chart, severity_threshold="extreme")
    # a value the chart's schema refuses: the chart check fails, and the dry runs change nothing
    verdict = predeploy_checklist(request(sandbox, live, demo_chart, values={"replicas": "two"}, policy=ALL_WARN))
    chart = by_check(verdict)["chart"]
    assert chart.status == "fail" and "replicas" in chart.reason
    assert by_check(verdict)["capacity"].status == "error"
    after = json.loads(sandbox.helm("history", RELEASE, "-n", live, "-o", "json").stdout)
    assert after == before


def test_signature_key_from_a_registry_block_and_a_wrong_key(sandbox: Sandbox, tmp_path: Path) -> None:
    from blocks import ContainerRegistry
    from sandbox.registry import run_tool
    from tasks.checks.image_signature import check_image_signature

    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    pem = registries.public_key.read_text()
    ContainerRegistry(url=sandbox.cfg.registry_host(), cosign_public_key=pem, insecure=True).save(
        "checklist-registry", overwrite=True
    )
    signed = [registries.image("1.0.0"), registries.image("1.1.0", mirror=True)]
    assert check_image_signature.fn(signed, None, "checklist-registry").status == "pass"

    run_tool([registries.cosign, "generate-key-pair", "--output-key-prefix", "other"], cwd=tmp_path)
    wrong = check_image_signature.fn(signed[:1], str(tmp_path / "other.pub"), None)
    assert wrong.status == "fail" and signed[0] in wrong.reason
    assert check_image_signature.fn(signed, None, None).status == "error"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed when the block ends: connections are refused


def test_unreachable_api_server_is_named_by_every_cluster_check_and_the_verdict(
    tmp_path: Path, demo_chart: Path
) -> None:
    """No sandbox needed: a kubeconfig pointing at a closed port. Before the fix, two checks answered
    "UnfinishedRun: Run is in PENDING state" and the verdict did not say why."""
    port = _closed_port()
    server = f"https://127.0.0.1:{port}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
                "current-context": "gone",
            }
        )
    )
    req = ChecklistRequest(
        kubeconfig_path=str(kubeconfig), namespace="shop", release="shop", chart=str(demo_chart), images=[]
    )
    with pytest.raises(ChecklistFailed) as failed:
        predeploy_checklist(req)
    # ClusterUnreachable's message: the server, the request that failed, the reason and the kubectl to run
    cause = f"cannot reach the API server at {server} (GET /"
    assert str(failed.value).startswith(f"NOT READY: {cause}"), str(failed.value)
    verdict = failed.value.verdict
    assert verdict is not None
    for name in ("cluster-health", "current-release", "chart", "capacity"):
        row = next(r for r in verdict.rows if r.check == name)
        assert row.status == "error" and row.reason.startswith(cause), (name, row.reason)
        assert "Connection refused" in row.reason and "UnfinishedRun" not in row.reason
        assert f"kubectl --kubeconfig {kubeconfig} get --raw /readyz" in row.reason, (name, row.reason)
    assert not any("PENDING" in r.reason for r in verdict.rows)


def _wait_for_untainted_nodes(core: Any, bound_seconds: float = 90) -> None:
    """The precondition of the taint test: kube-controller-manager removes node.kubernetes.io/not-ready from a
    node some seconds after an earlier test made it Ready again (the checklist rightly leaves it out until then)."""
    deadline = time.monotonic() + bound_seconds
    while True:
        tainted = {n.metadata.name: n.spec.taints for n in core.list_node().items if n.spec.taints}
        if not tainted:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"nodes still tainted after {bound_seconds}s: {tainted}")
        time.sleep(1)


def test_capacity_leaves_out_nodes_whose_taints_the_pods_do_not_tolerate(
    sandbox: Sandbox, core: Any, live: str, demo_chart: Path
) -> None:
    """Three pods of 20 cores fit on three 32-core nodes, not on the two left when one is tainted NoSchedule."""
    _wait_for_untainted_nodes(core)  # a node just back from NotReady keeps the controller's taint a moment
    taint = "rollbook.dev/checklist-test=reserved:NoSchedule"
    big = {"workload": "Deployment/big", "replicas": 3, "cpu_m": 20_000, "memory": 1 << 30}
    tolerant = {**big, "tolerations": [{"key": "rollbook.dev/checklist-test", "operator": "Exists"}]}
    before = by_check(predeploy_checklist(request(sandbox, live, demo_chart, requests=[big], policy=ALL_WARN)))
    assert before["capacity"].status == "pass", before["capacity"].reason
    sandbox.kubectl("taint", "nodes", "kwok-node-0", taint)
    try:
        blocked = by_check(predeploy_checklist(request(sandbox, live, demo_chart, requests=[big], policy=ALL_WARN)))
        tolerated = by_check(
            predeploy_checklist(request(sandbox, live, demo_chart, requests=[tolerant], policy=ALL_WARN))
        )
    finally:
        sandbox.kubectl("taint", "nodes", "kwok-node-0", f"{taint}-")
    capacity = blocked["capacity"]
    assert capacity.status == "fail"
    assert "not on any single node for Deployment/big: 1 pod(s)" in capacity.reason
    assert capacity.evidence["excluded_nodes"] == {"kwok-node-0": f"taint {taint}"}
    assert capacity.evidence["schedulable_nodes"] == 2
    assert tolerated["capacity"].status == "pass", tolerated["capacity"].reason
    assert tolerated["capacity"].evidence["schedulable_nodes"] == 3


def test_negative_requests_are_refused_naming_the_field(sandbox: Sandbox, live: str, demo_chart: Path) -> None:
    bad = {"workload": "Deployment/api", "replicas": -2, "cpu_m": 100, "memory": 1 << 20}
    with pytest.raises(ValidationError, match=r"requests\.0\.replicas"):
        request(sandbox, live, demo_chart, requests=[bad])
    with pytest.raises(ValidationError, match=r"requests\.0\.cpu_m"):
        request(sandbox, live, demo_chart, requests=[{**bad, "replicas": 1, "cpu_m": 0}])


def test_cluster_health_fails_naming_the_readyz_checks_when_etcd_is_gone(sandbox: Sandbox) -> None:
    """The real kube-apiserver keeps answering while its etcd is stopped, but /readyz says which checks fail:
    the cluster-health check must fail and name them, not pass on the nodes it listed before."""
    cluster = KubernetesCluster(kubeconfig_path=str(sandbox.cfg.kubeconfig))
    nodes = list_nodes.fn(cluster)
    assert check_cluster_health.fn(cluster, nodes).status == "pass"
    assert sandbox.stop_service("etcd")
    try:
        deadline = time.monotonic() + 30
        while True:  # the API server notices a lost etcd within a few seconds
            result = check_cluster_health.fn(cluster, nodes)
            if result.status == "fail" or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        sandbox.start_service("etcd")
    assert result.status == "fail", result.reason
    assert "API server not ready" in result.reason and "etcd" in result.reason
    assert any("etcd" in check for check in result.evidence["readyz_failing"])
    deadline = time.monotonic() + 60
    while check_cluster_health.fn(cluster, nodes).status != "pass":  # healed: leave the sandbox as it was
        assert time.monotonic() < deadline, "the API server did not become ready again after etcd came back"
        time.sleep(1)
