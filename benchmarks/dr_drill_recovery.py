"""Time to recover of the dr-drill on a sandbox holding about 5,000 objects, with the phase breakdown.

Run: .venv/bin/python benchmarks/dr_drill_recovery.py [--namespaces 20] [--configmaps 240]
     [--disaster delete-namespaces|lose-etcd]
It starts its own control-plane sandbox (etcd, Kubernetes, kwok, moto's S3) and a temporary Prefect server,
runs one dr-drill whose workload is namespaces x (ConfigMaps + a Deployment of 2 replicas), and prints the time
to recover (from the disaster's end to a verified cluster), each restore phase, the objects in the snapshot
and the ratio to the 60 s goal (goal / measured: >= 1 meets it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import boto3
from pydantic import SecretStr

GOAL_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--configmaps", type=int, default=240)
    parser.add_argument("--disaster", default="delete-namespaces", choices=["delete-namespaces", "lose-etcd"])
    parser.add_argument("--base-port", type=int, default=26360)
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from blocks import BackupBucket, EtcdEndpoint
    from flows.dr_drill import DrillRequest, dr_drill
    from rollbook.change import ChangeControls
    from sandbox import datastores
    from sandbox.cluster import Sandbox
    from sandbox.config import SandboxConfig, free_base_port

    with tempfile.TemporaryDirectory(prefix="rollbook-drill-bench-") as work:
        sb = Sandbox(SandboxConfig(Path(work), free_base_port(args.base_port)))
        try:
            print(f"sandbox up in {sb.up_control_plane(nodes=3).seconds}s")
            url = datastores.s3_url(sb.cfg)
            creds = {"access_key_id": "bench-key", "secret_access_key": "bench-secret", "region_name": "us-east-1"}
            boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench-key",
                         aws_secret_access_key="bench-secret").create_bucket(Bucket="drill")  # fmt: skip
            with prefect_test_harness(server_startup_timeout=180):
                EtcdEndpoint(
                    endpoints=[f"https://127.0.0.1:{sb.cfg.port('etcd')}"], ca_cert=sb.pki.ca.read_text(),
                    client_cert=sb.pki.cert("etcd-client").read_text(),
                    client_key=SecretStr(sb.pki.key("etcd-client").read_text()),
                ).save("bench-etcd", overwrite=True)  # fmt: skip
                BackupBucket.s3_compatible(bucket_name="drill", endpoint_url=url, prefix="etcd", **creds).save(
                    "bench-bucket", overwrite=True
                )
                request = DrillRequest.model_validate(
                    {
                        "endpoint_block": "bench-etcd", "bucket_block": "bench-bucket", "cluster_name": "bench",
                        "kubeconfig_path": str(sb.cfg.kubeconfig), "etcdctl_executable": str(sb.bins / "etcdctl"),
                        "etcdutl_executable": str(sb.bins / "etcdutl"), "control_plane": sb.restore_control_plane(),
                        "disaster": args.disaster, "namespaces": args.namespaces,
                        "configmaps_per_namespace": args.configmaps, "target_seconds": int(GOAL_SECONDS),
                    }
                )  # fmt: skip
                start = time.monotonic()
                result = dr_drill(request, ChangeControls(reason="benchmark the DR drill", requested_by="bench"))
                wall = time.monotonic() - start
        finally:
            sb.down()
    print(f"drill {result.disaster}: {result.summary} (whole drill {wall:.1f}s)")
    print(f"objects in the snapshot: {result.objects:,}; drill workload: {result.workload_objects:,}")
    for phase, seconds in result.phases.items():
        print(f"  {phase:<22} {seconds:6.2f}s")
    print(f"time to recover {result.time_to_recover:.1f}s; ratio goal/measured = "
          f"{GOAL_SECONDS / result.time_to_recover:.2f} (>= 1 meets the {GOAL_SECONDS:.0f} s goal)")  # fmt: skip


if __name__ == "__main__":
    main()
