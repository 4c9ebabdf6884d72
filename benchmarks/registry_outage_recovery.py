"""Time to recover from a registry outage: from the first failed pull to every pod Ready on the mirror, with
registry-outage's phase breakdown, against the guide's manual fix run beside it in the same process.

Run: .venv/bin/python benchmarks/registry_outage_recovery.py [--deployments 5] [--replicas 3]
It starts its own sandbox and a temporary Prefect server, deploys two groups of Deployments on the primary
registry, stops the primary (kwok holds the pods that pull from it in ImagePullBackOff) and rolls every
Deployment out to a new version, so new pods cannot pull. Then:
- baseline: the guide's "Option A" for one group, `kubectl set image ... mirror/app:tag` and `kubectl rollout
  status` per Deployment (a tag swap, no digest or signature check);
- rollbook: one registry-outage run for the other group (digest-pinned, signatures verified).
It prints both times, their ratio (baseline / rollbook: >= 1 means rollbook is as fast) and the ratio to the
60 s goal (goal / measured: >= 1 meets it), then heals the primary and times the switch back.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=26460)
    args = parser.parse_args()

    from kubernetes import client
    from prefect.testing.utilities import prefect_test_harness

    from blocks import ContainerRegistry
    from flows.registry_outage import RegistryOutageRequest, registry_outage
    from rollbook.change import ChangeControls, subflow_result
    from sandbox.cluster import Sandbox
    from sandbox.config import SandboxConfig, free_base_port
    from sandbox.registry import SandboxRegistries
    from sandbox.services import wait_until

    with tempfile.TemporaryDirectory(prefix="rollbook-outage-bench-") as work:
        sb = Sandbox(SandboxConfig(Path(work), free_base_port(args.base_port)))
        try:
            print(f"sandbox up in {sb.up(nodes=3).seconds}s")
            os.environ["ROLLBOOK_COSIGN"] = str(sb.bins / "cosign")  # as `rollbook sandbox env` exports it
            registries = SandboxRegistries(sb.cfg, sb.bins)
            core = client.CoreV1Api(sb.api_client())
            old, new = registries.image("1.0.0"), registries.image("1.1.0")
            digest = json.loads((sb.cfg.work_dir / "demo-images.json").read_text())["1.1.0"]
            for group in ("manual", "rollbook"):
                sb.kubectl("create", "namespace", f"bench-{group}")
                for i in range(args.deployments):
                    sb.kubectl("create", "deployment", f"app-{i}", f"--image={old}", f"--replicas={args.replicas}",
                               "-n", f"bench-{group}")  # fmt: skip
            for group in ("manual", "rollbook"):
                for i in range(args.deployments):
                    sb.kubectl("rollout", "status", f"deployment/app-{i}", "--timeout=120s", "-n", f"bench-{group}")

            sb.stop_service("registry")
            sb.set_unreachable_registries([sb.cfg.registry_host()])
            for group in ("manual", "rollbook"):
                for i in range(args.deployments):
                    sb.kubectl("set", "image", f"deployment/app-{i}", f"demo-app={new}", "-n", f"bench-{group}")

            def first_failure(namespace: str) -> float:
                def stuck() -> bool:
                    return any(
                        cs.state and cs.state.waiting and cs.state.waiting.reason == "ImagePullBackOff"
                        for pod in core.list_namespaced_pod(namespace).items
                        for cs in pod.status.container_statuses or []
                    )

                wait_until(stuck, timeout=120, what=f"a pod in ImagePullBackOff in {namespace}")
                return time.monotonic()

            # baseline: the guide's manual tag swap, one Deployment after the other
            started = first_failure("bench-manual")
            mirror_tag = registries.image("1.1.0", mirror=True)
            for i in range(args.deployments):
                sb.kubectl("set", "image", f"deployment/app-{i}", f"demo-app={mirror_tag}", "-n", "bench-manual")
            for i in range(args.deployments):
                sb.kubectl("rollout", "status", f"deployment/app-{i}", "--timeout=300s", "-n", "bench-manual")
            manual = time.monotonic() - started

            with prefect_test_harness(server_startup_timeout=180):
                ContainerRegistry(
                    url=f"http://{sb.cfg.registry_host()}", mirrors=[f"http://{sb.cfg.registry_host(mirror=True)}"],
                    cosign_public_key=registries.public_key.read_text(), insecure=True,
                ).save("bench-registry", overwrite=True)  # fmt: skip
                controls = ChangeControls(reason="registry outage benchmark", requested_by="bench")
                request = RegistryOutageRequest(
                    kubeconfig_path=str(sb.cfg.kubeconfig), registry_block="bench-registry",
                    namespaces=["bench-rollbook"], expected_digests={new: digest}, recovery_timeout_seconds=0,
                )  # fmt: skip
                started = first_failure("bench-rollbook")
                result = subflow_result(registry_outage(request, controls))
                measured = time.monotonic() - started
                moved = sum(1 for w in result.workloads if w.action == "switched-to-mirror")
                print(f"rollbook: {moved}/{args.deployments} Deployments x {args.replicas} pods on the mirror")
                print(f"  time to recover (first failed pull -> all pods Ready): {measured:.1f}s")
                print(f"  phases: {', '.join(f'{k} {v}s' for k, v in result.phases.items())}")
                print(f"manual tag swap (the guide's Option A, no digest or signature check): {manual:.1f}s")
                print(f"ratio manual / rollbook: {manual / measured:.2f}x")
                print(
                    f"ratio goal / rollbook: {GOAL_SECONDS / measured:.2f}x (goal {GOAL_SECONDS:.0f}s; >= 1 meets it)"
                )

                sb.set_unreachable_registries([])
                sb.start_registry()
                started = time.monotonic()
                back = subflow_result(
                    registry_outage(request.model_copy(update={"recovery_timeout_seconds": 120}), controls)
                )
                switched = sum(1 for w in back.workloads if w.action == "switched-back")
                seconds = time.monotonic() - started
                print(f"switch back of {switched} Deployments once the registry was back: {seconds:.1f}s")
        finally:
            sb.down()


if __name__ == "__main__":
    main()
