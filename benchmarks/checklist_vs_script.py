"""The checklist's cluster checks vs the guide's reference script, on one big sandbox (2,000 nodes, 20,000 pods).

Run: .venv/bin/python benchmarks/checklist_vs_script.py [--nodes 2000] [--pods 20000] [--repeat 3]
It starts its own sandbox (own ports and work directory), deploys the demo release, fills the cluster, then
times each side in a fresh child process (wall time, and peak RSS of the largest process it ran):
- checklist: the flow's cluster checks (cluster health + /readyz, current release pods, capacity from
  allocatable minus every pod's requests), run concurrently in one Python process as the flow runs them;
- script: the reference script's cluster part: `kubectl cluster-info`, `kubectl get nodes | grep`,
  `kubectl get pods -l | grep`, and the `kubectl describe nodes | grep | awk` memory sum.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REFERENCE_SCRIPT = r"""
set -e
kubectl cluster-info >/dev/null || exit 1
kubectl get nodes | grep -E "NotReady|SchedulingDisabled" && echo "bad nodes"
kubectl get pods -n "$NAMESPACE" -l app.kubernetes.io/instance=demo | grep -v "Running" | grep -v "Succeeded" || true
AVAILABLE_MEM=$(kubectl describe nodes | grep "Allocatable:" -A 10 | grep "memory:" | awk '{sum+=$2} END {print sum}')
echo "available memory: $AVAILABLE_MEM"
"""


def run_checks(kubeconfig: str, namespace: str) -> None:
    """Child process: the flow's three cluster checks, concurrently, on the task functions the flow submits
    (nodes listed while every pod's requests are summed, as the flow does)."""
    t0 = time.monotonic()
    from blocks import KubernetesCluster
    from rollbook.capacity import Need
    from tasks.checks.capacity import check_capacity, pod_requests_by_node
    from tasks.checks.cluster_health import check_cluster_health, list_nodes
    from tasks.checks.current_release import check_current_release

    cluster = KubernetesCluster(kubeconfig_path=kubeconfig)
    need = [Need(workload="Deployment/demo-demo-app", replicas=2, cpu_m=10, memory=16 << 20, surge=1)]
    t1 = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        release = pool.submit(check_current_release.fn, cluster, namespace, "demo")
        requested = pool.submit(pod_requests_by_node.fn, cluster, namespace, "demo")
        nodes = list_nodes.fn(cluster)
        health = pool.submit(check_cluster_health.fn, cluster, nodes)
        results = [health.result(), release.result(), check_capacity.fn(nodes, requested.result(), need)]
    t2 = time.monotonic()
    for r in results:
        print(f"  {r.check}: {r.status.value} in {r.seconds:.2f} s: {r.reason[:150]}", file=sys.stderr)
    print(f"  imports {t1 - t0:.2f} s, checks {t2 - t1:.2f} s", file=sys.stderr)


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the largest process) of a command, measured from a fresh wrapper."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.monotonic()\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "print(json.dumps([time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "p.returncode]))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, env=env, check=True)
    seconds, rss_kib, rc = json.loads(out.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise RuntimeError(f"{argv[:3]} exited {rc}: {out.stderr[-500:]}")
    sys.stderr.write(out.stderr)
    return seconds, rss_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--pods", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KUBECONFIG", "NAMESPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_checks(*args.child)
        return

    import os

    from kubernetes import client

    from sandbox.cluster import Sandbox
    from sandbox.config import SandboxConfig, free_base_port
    from sandbox.registry import SandboxRegistries
    from sandbox.services import wait_until

    sandbox = Sandbox(SandboxConfig(Path(tempfile.mkdtemp(prefix="rollbook-chk-")), base_port=free_base_port(24800)))
    try:
        t = time.monotonic()
        sandbox.up(nodes=3)
        sandbox.ensure_nodes(args.nodes)
        print(f"sandbox with {args.nodes} nodes: {time.monotonic() - t:.0f} s", flush=True)
        core, apps = client.CoreV1Api(sandbox.api_client()), client.AppsV1Api(sandbox.api_client())
        image = SandboxRegistries(sandbox.cfg, sandbox.bins).image("1.0.0")
        for ns in ("load", "shop"):
            core.create_namespace({"metadata": {"name": ns}})
        chart = Path(__file__).resolve().parents[1] / "charts" / "demo-app"
        repo, tag = image.rsplit(":", 1)
        sandbox.helm(
            "upgrade", "demo", str(chart), "--install", "-n", "shop", "--set", f"image.repository={repo}",
            "--set", f"image.tag={tag}", "--wait", "--timeout=120s",
        )  # fmt: skip
        t = time.monotonic()
        per = 1000
        for i in range(args.pods // per):
            sandbox.kubectl("create", "deployment", f"load-{i}", f"--image={image}", f"--replicas={per}", "-n", "load")

        def ready() -> int:
            return sum(d.status.ready_replicas or 0 for d in apps.list_namespaced_deployment("load").items)

        wait_until(lambda: ready() >= args.pods, 3600, f"{args.pods} pods Ready", interval=5)
        print(f"{args.pods} pods Ready: {time.monotonic() - t:.0f} s", flush=True)

        env = {**os.environ, "KUBECONFIG": str(sandbox.cfg.kubeconfig), "NAMESPACE": "shop"}
        env["PATH"] = f"{sandbox.bins}:{env.get('PATH', '')}"
        rows = []
        for _ in range(args.repeat):
            ours = measure([sys.executable, __file__, "--child", str(sandbox.cfg.kubeconfig), "shop"], env)
            script = measure(["bash", "-c", REFERENCE_SCRIPT], env)
            rows.append((ours, script))
            print(f"checklist {ours[0]:7.2f} s {ours[1]:6.0f} MiB | script {script[0]:7.2f} s {script[1]:6.0f} MiB")
        best_ours = min(r[0][0] for r in rows)
        best_script = min(r[1][0] for r in rows)
        print(f"nodes={args.nodes} pods={args.pods + 2}")
        print(f"checklist cluster checks: best {best_ours:.2f} s, peak RSS {max(r[0][1] for r in rows):.0f} MiB")
        print(f"reference script:         best {best_script:.2f} s, peak RSS {max(r[1][1] for r in rows):.0f} MiB")
        print(f"speed-up: {best_script / best_ours:.1f}x")
        print(f"(benchmark process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    finally:
        sandbox.purge()


if __name__ == "__main__":
    main()
