"""Wall time of the deployment-undo flow against `kubectl rollout undo` + `kubectl rollout status`.

Run: .venv/bin/python benchmarks/undo_vs_kubectl.py [--reps 5] [--replicas 3] [--min-ready-seconds 0]
It starts its own sandbox and a temporary Prefect server, creates one Deployment with two revisions, then
alternates: kubectl undo+status, flow undo (heartbeats at Prefect's default), flow undo (heartbeats off).
Every undo flips the same Deployment between the same two images, so each side makes the same change.
The first run of each side is a warm-up and is not counted. Prints medians, the ratio and a breakdown.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes import client

from rollbook.change import ChangeControls
from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig
from sandbox.registry import SandboxRegistries

REVISION = "deployment.kubernetes.io/revision"
CONTROLS = ChangeControls(reason="benchmark undo vs kubectl", requested_by="benchmark")


def kubectl_undo(sandbox: Sandbox, namespace: str) -> dict[str, float]:
    start = time.monotonic()
    sandbox.kubectl("rollout", "undo", "deployment/web", "-n", namespace)
    mid = time.monotonic()
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=120s", "-n", namespace)
    end = time.monotonic()
    return {"total": end - start, "undo": mid - start, "wait": end - mid}


def flow_undo(sandbox: Sandbox, namespace: str) -> dict[str, float]:
    from flows.deployment_undo import UndoRequest, deployment_undo

    # kubectl's "previous", named: rollbook refuses or skips a plain undo right after its own (never an undo of
    # its undo by accident), while this benchmark flips between the two revisions on purpose
    apps = client.AppsV1Api(sandbox.api_client())
    numbers = sorted(
        int((rs.metadata.annotations or {})[REVISION]) for rs in apps.list_namespaced_replica_set(namespace).items
    )
    request = UndoRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig),
        namespace=namespace,
        deployment="web",
        to_revision=numbers[-2],
        wait_timeout_seconds=120,
    )
    start = time.monotonic()
    result = deployment_undo(request, CONTROLS)
    total = time.monotonic() - start
    assert result.rollout is not None and result.rollout["done"], result
    wait = float(result.rollout["seconds"])
    return {"total": total, "wait": wait, "other": total - wait}


def summary(name: str, runs: list[dict[str, float]]) -> dict[str, float]:
    keys = runs[0].keys()
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    detail = ", ".join(f"{k} {med[k]:.2f}s" for k in keys if k != "total")
    spread = f"min {min(r['total'] for r in runs):.2f}s max {max(r['total'] for r in runs):.2f}s"
    print(f"{name:<28} median {med['total']:.2f}s ({detail}; {spread}; n={len(runs)})")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=24540)
    parser.add_argument(
        "--min-ready-seconds",
        type=int,
        default=0,
        help="minReadySeconds of the Deployment: kwok pods are Ready at once; this stands in for app start-up",
    )
    args = parser.parse_args()

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    sandbox = Sandbox(SandboxConfig(Path(tempfile.mkdtemp(prefix="rollbook-undo-bench-")), base_port=args.base_port))
    try:
        sandbox.up(nodes=3)
        registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
        core = client.CoreV1Api(sandbox.api_client())
        namespace = "bench"
        core.create_namespace({"metadata": {"name": namespace}})
        ns = ("-n", namespace)
        image = registries.image("1.0.0")
        sandbox.kubectl("create", "deployment", "web", f"--image={image}", f"--replicas={args.replicas}", *ns)
        sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=120s", *ns)
        patch = f'{{"spec": {{"minReadySeconds": {args.min_ready_seconds}}}}}'
        sandbox.kubectl("patch", "deployment/web", "-p", patch, *ns)
        sandbox.kubectl("set", "image", "deployment/web", f"demo-app={registries.image('1.1.0')}", *ns)
        sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=120s", *ns)

        with prefect_test_harness(server_startup_timeout=120):
            results: dict[str, list[dict[str, float]]] = {"kubectl": [], "flow": [], "flow-no-heartbeat": []}
            for rep in range(args.reps + 1):
                k = kubectl_undo(sandbox, namespace)
                f = flow_undo(sandbox, namespace)
                with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                    q = flow_undo(sandbox, namespace)
                print(
                    f"rep {rep}{' (warm-up)' if rep == 0 else ''}: kubectl {k['total']:.2f}s flow {f['total']:.2f}s "
                    f"flow-no-heartbeat {q['total']:.2f}s"
                )
                if rep:
                    results["kubectl"].append(k)
                    results["flow"].append(f)
                    results["flow-no-heartbeat"].append(q)
        print()
        base = summary("kubectl undo + status", results["kubectl"])
        flow = summary("flow (heartbeat default)", results["flow"])
        quiet = summary("flow (heartbeat off)", results["flow-no-heartbeat"])
        print(
            f"\nratio flow/kubectl: {flow['total'] / base['total']:.2f} (heartbeat default), "
            f"{quiet['total'] / base['total']:.2f} (heartbeat off); goal <= 1.2"
        )
    finally:
        sandbox.down()


if __name__ == "__main__":
    main()
