"""How the sandbox copes with a big cluster: `--nodes 2000` and 20,000 pods.

Run: .venv/bin/python benchmarks/sandbox_scale.py [--nodes 2000] [--pods 20000]
It starts its own sandbox (own ports and work directory), measures a baseline batch of pods first and
then the full load in the same run, and prints throughputs, their ratio and each process's peak memory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from kubernetes import client

from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig, free_base_port
from sandbox.registry import SandboxRegistries
from sandbox.services import wait_until

PODS_PER_DEPLOYMENT = 1000


def ready_replicas(apps: client.AppsV1Api, namespace: str) -> int:
    return sum(d.status.ready_replicas or 0 for d in apps.list_namespaced_deployment(namespace).items)


def launch(sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, first: int, pods: int, image: str) -> float:
    """Create deployments of PODS_PER_DEPLOYMENT replicas and time until every new pod is Ready."""
    start = time.monotonic()
    before = ready_replicas(apps, namespace)
    for i in range(first, first + pods // PODS_PER_DEPLOYMENT):
        sandbox.kubectl(
            "create",
            "deployment",
            f"load-{i}",
            f"--image={image}",
            f"--replicas={PODS_PER_DEPLOYMENT}",
            "-n",
            namespace,
        )
    wait_until(lambda: ready_replicas(apps, namespace) >= before + pods, 3600, f"{pods} pods Ready", interval=2)
    return time.monotonic() - start


def peak_rss_mib(sandbox: Sandbox) -> dict[str, float]:
    peaks = {}
    for status in sandbox.status():
        if status.pid:
            for line in Path(f"/proc/{status.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[status.name] = int(line.split()[1]) / 1024
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--pods", type=int, default=20000)
    parser.add_argument("--baseline-pods", type=int, default=1000)
    args = parser.parse_args()

    sandbox = Sandbox(SandboxConfig(Path(tempfile.mkdtemp(prefix="rollbook-scale-")), base_port=free_base_port(24700)))
    try:
        start = time.monotonic()
        sandbox.up(nodes=3)
        up_seconds = time.monotonic() - start
        start = time.monotonic()
        sandbox.ensure_nodes(args.nodes)
        nodes_seconds = time.monotonic() - start
        apps = client.AppsV1Api(sandbox.api_client())
        client.CoreV1Api(sandbox.api_client()).create_namespace({"metadata": {"name": "load"}})
        image = SandboxRegistries(sandbox.cfg, sandbox.bins).image("1.0.0")

        base = launch(sandbox, apps, "load", 0, args.baseline_pods, image)
        full = launch(sandbox, apps, "load", 100, args.pods, image)
        base_rate, full_rate = args.baseline_pods / base, args.pods / full
        print(f"sandbox up (3 nodes):             {up_seconds:7.1f} s")
        print(f"{args.nodes} nodes created and Ready:  {nodes_seconds:7.1f} s")
        print(f"baseline {args.baseline_pods} pods Ready:         {base:7.1f} s  ({base_rate:6.1f} pods/s)")
        print(f"full {args.pods} pods Ready:            {full:7.1f} s  ({full_rate:6.1f} pods/s)")
        print(f"throughput ratio full/baseline:   {full_rate / base_rate:7.2f}")
        for name, mib in peak_rss_mib(sandbox).items():
            print(f"peak RSS {name:<24} {mib:8.0f} MiB")
    finally:
        sandbox.purge()


if __name__ == "__main__":
    main()
