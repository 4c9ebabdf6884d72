"""Flows that do every wrong thing a runbook author might do with a secret, for test_secret_search.py.

Run as a script in a child process pointed at a real `rollbook server` (PREFECT_API_URL): it saves one block of
every rollbook block type holding the secrets of a JSON spec (argv[1]), runs a successful and a failing flow plus
the catalogue's hello-cluster on the cluster block, and writes the flow run ids to argv[2]. Everything it
leaks goes through the paths rollbook owns: block loading and `reveal`, exceptions raised in tasks and flows,
artifacts, prints and log calls, typed results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import SecretStr

from blocks import (
    BackupBucket,
    ContainerRegistry,
    DatabaseConnection,
    EtcdEndpoint,
    KubernetesCluster,
    PrometheusConnection,
)
from flows import hello_cluster
from flows.demo import HelloRequest
from rollbook.change import ChangeResult
from tasks.checks.db_migration import check_db_migration
from tasks.migrations import MigrationCheck

NAMES = {
    "db": "leak-db",
    "cluster": "leak-cluster",
    "registry": "leak-registry",
    "prometheus": "leak-prometheus",
    "etcd": "leak-etcd",
    "bucket": "leak-bucket",
}


def save_blocks(spec: dict[str, str]) -> None:
    """One block of every type, each holding its planted secret."""
    DatabaseConnection(dsn=spec["dsn"]).save(NAMES["db"], overwrite=True)
    KubernetesCluster(kubeconfig=spec["kubeconfig"]).save(NAMES["cluster"], overwrite=True)
    ContainerRegistry(url="127.0.0.1:5000", username="ci", password=spec["registry_password"]).save(
        NAMES["registry"], overwrite=True
    )
    PrometheusConnection(url="http://127.0.0.1:9", bearer_token=spec["bearer_token"]).save(
        NAMES["prometheus"], overwrite=True
    )
    EtcdEndpoint(
        endpoints=["http://127.0.0.1:2379"], client_cert=spec["client_cert"], client_key=spec["client_key"]
    ).save(NAMES["etcd"], overwrite=True)
    BackupBucket.s3_compatible(
        bucket_name="backups",
        endpoint_url="http://127.0.0.1:9000",
        access_key_id="leak-access-key",
        secret_access_key=spec["aws_secret"],
    ).save(NAMES["bucket"], overwrite=True)


def revealed() -> dict[str, str]:
    """Every secret, unwrapped the way runbook code does (each block's own accessor)."""
    registry = ContainerRegistry.load(NAMES["registry"])
    credentials = registry.credentials()
    assert credentials is not None
    prometheus = PrometheusConnection.load(NAMES["prometheus"])
    with prometheus.http_client() as client:
        authorization = client.headers["Authorization"]
    etcd = EtcdEndpoint.load(NAMES["etcd"])
    with etcd.tls_files() as files:
        assert files.client_key is not None
        key = files.client_key.read_text()
    bucket = BackupBucket.load(NAMES["bucket"])
    aws = bucket.bucket.credentials.aws_secret_access_key
    assert aws is not None
    cluster = KubernetesCluster.load(NAMES["cluster"])
    assert cluster.kubeconfig is not None
    return {
        "dsn": DatabaseConnection.load(NAMES["db"]).reveal_dsn(),
        "registry": credentials[1],
        "authorization": authorization,
        "etcd_key": key,
        "aws": aws.get_secret_value(),  # a third-party block's secret, unwrapped without rollbook's help
        "kubeconfig": cluster.kubeconfig.get_secret_value(),
    }


@task(persist_result=True)
def leak_in_task() -> dict[str, int]:
    values = revealed()
    for name, value in values.items():
        get_run_logger().info("task sees %s=%s", name, value)
        print(f"task prints {name}={value}")
    return {name: len(value) for name, value in values.items()}


@flow(log_prints=True, persist_result=True)
def leaky_success(note: str = "reads every secret") -> ChangeResult:
    """Completes: secrets in logs, prints, a markdown and a table artifact and the typed result."""
    values = revealed()
    leak_in_task()
    lines = "\n".join(f"- {name}: `{value}` / `{quote(value, safe='')}`" for name, value in values.items())
    create_markdown_artifact(f"# What I read\n\n{lines}", key="leak-markdown", description=values["dsn"])
    create_markdown_artifact(f"second version {values['registry']}", key="leak-markdown")  # artifact history
    create_table_artifact([{"name": k, "value": v} for k, v in values.items()], key="leak-table")
    print("flow prints", values["dsn"])
    return ChangeResult(outcome="unchanged", summary=f"read {values['dsn']} with {values['authorization']}")


@task(persist_result=True, retries=1, retry_delay_seconds=0)
def fail_with_dsn() -> None:
    dsn = DatabaseConnection.load(NAMES["db"]).reveal_dsn()
    raise RuntimeError(f"cannot connect to {dsn} (as a parameter: dsn={quote(dsn, safe='')})")


@task(persist_result=True)
def fail_like_a_tool() -> None:
    values = revealed()
    raise subprocess.CalledProcessError(
        1,
        ["crane", "auth", "login", "-u", "ci", "-p", values["registry"]],
        stderr=f"401 for {values['authorization']}; key {values['etcd_key']}; aws {values['aws']}",
    )


@flow(persist_result=True)
def leaky_failure(migration: MigrationCheck) -> None:
    """Fails: secrets in task failures (retried and final), a caught error put in an artifact, the flow's own
    error; a real rollbook task reads a database it cannot reach; the parameters hold a SecretStr DSN."""
    state = fail_like_a_tool(return_state=True)
    try:
        state.result()
    except subprocess.CalledProcessError as exc:
        create_markdown_artifact(f"```\n{exc}\n{exc.stderr}\n```", key="leak-error")
        get_run_logger().error("tool failed: %s (stderr %s)", exc, exc.stderr)
    check_db_migration(migration, return_state=True)
    fail_with_dsn()


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    save_blocks(spec)
    runs: dict[str, Any] = {}
    success = leaky_success(return_state=True)
    runs["success"] = str(success.state_details.flow_run_id)
    migration = MigrationCheck(kind="golang-migrate", expected_version="3", dsn=SecretStr(spec["dsn"]))
    failure = leaky_failure(migration, return_state=True)
    runs["failure"] = str(failure.state_details.flow_run_id)
    hello = hello_cluster(HelloRequest(cluster_block=NAMES["cluster"]), return_state=True)
    runs["hello"] = str(hello.state_details.flow_run_id)
    runs["states"] = {"success": success.type.value, "failure": failure.type.value, "hello": hello.type.value}
    Path(out_path).write_text(json.dumps(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
