"""A real Velero server, run out of cluster against the sandbox's API server, storing backups in the sandbox's S3.

This is velero's own "run locally" set-up (`velero server --kubeconfig ... --plugin-dir ...`), with what running
it beside other sandboxes needs:

* every listener on 127.0.0.1 at the sandbox's ports: velero's metrics and profiler by flag, and the
  controller-runtime metrics server (":8080" on every interface, no flag) switched off by the wrapper main that
  sandbox/toolchain.py compiles instead of upstream's;
* `TMPDIR` in the work directory: velero writes credential files and backup tarballs under os.TempDir(), and the
  plugins' go-plugin sockets live there too, so two sandboxes never share files;
* the CRDs applied before the server starts (it refuses to start without them), from the binary itself
  (`velero install --crds-only --dry-run -o yaml`), so they always match the server's version;
* a `velero` Deployment at 0 replicas in the velero namespace: every restore resolves PodVolumeRestoreAction, which
  reads that Deployment's image and fails the restore when it is missing (vmware-tanzu/velero#9023);
* a bucket in moto and the default BackupStorageLocation on it (path-style, `s3Url`), with a credentials file the
  AWS plugin reads through AWS_SHARED_CREDENTIALS_FILE. moto keeps buckets in memory, so `prepare` re-creates it
  after an S3 restart.

The velero toolchain set takes minutes to build and only Velero tests need it, so the sandbox runs Velero only
when that set is in the cache (`python -m sandbox.toolchain velero`; `make test` builds every set).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.exceptions import ClientError
from kubernetes import client, config

from sandbox import datastores, toolchain
from sandbox.config import SandboxConfig
from sandbox.services import ServiceSpec

NAMESPACE = "velero"
BUCKET = "velero"
BSL_NAME = "default"
REGION = "us-east-1"
# moto accepts any key; these are the sandbox's, written to the credentials file the plugin reads
ACCESS_KEY_ID = "velero-sandbox"
SECRET_ACCESS_KEY = "velero-sandbox-secret"  # noqa: S105 - a fixed test credential for a local moto server
API = ("velero.io", "v1")
INSTALL_TIMEOUT = 60
READY_TIMEOUT = 180.0  # the first start runs every plugin binary to list what it serves; slow on 2 loaded cores


def velero_dir(cfg: SandboxConfig) -> Path:
    return cfg.work_dir / "velero"


def credentials_file(cfg: SandboxConfig) -> Path:
    return velero_dir(cfg) / "credentials"


def tmp_dir(cfg: SandboxConfig) -> Path:
    return velero_dir(cfg) / "tmp"


def velero_service(cfg: SandboxConfig, bins: Path) -> ServiceSpec:
    """`velero server`, ready once the default BackupStorageLocation is Available: velero has then reached the
    sandbox's S3 through the AWS plugin, which is what a backup needs."""
    metrics, profiler = cfg.port("velero-metrics"), cfg.port("velero-profiler")
    argv = [
        str(bins / "velero"),
        "server",
        f"--kubeconfig={cfg.kubeconfig}",
        f"--namespace={NAMESPACE}",
        f"--plugin-dir={bins / 'velero-plugins'}",
        f"--metrics-address=127.0.0.1:{metrics}",
        f"--profiler-address=127.0.0.1:{profiler}",
        "--store-validation-frequency=30s",  # notice an S3 outage (or its end) within half a minute
        "--log-format=text",
    ]
    env = {"TMPDIR": str(tmp_dir(cfg)), "AWS_SHARED_CREDENTIALS_FILE": str(credentials_file(cfg))}
    return ServiceSpec(
        "velero",
        argv,
        (metrics, profiler),
        _bsl_available(cfg),
        env=env,
        ready_timeout=READY_TIMEOUT,
        dirs=(tmp_dir(cfg),),
    )


def _bsl_available(cfg: SandboxConfig) -> Callable[[], bool]:
    """The readiness check, with one API client for all its polls (made on the first: `status` builds the spec
    before any kubeconfig exists)."""
    api: list[client.CustomObjectsApi] = []

    def check() -> bool:
        if not api:
            api.append(client.CustomObjectsApi(config.new_client_from_config(str(cfg.kubeconfig))))
        return bsl_phase(api[0]) == "Available"

    return check


def bsl_phase(api: client.CustomObjectsApi, name: str = BSL_NAME) -> str | None:
    bsl: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
        *API, NAMESPACE, "backupstoragelocations", name, _request_timeout=5
    )
    phase = bsl.get("status", {}).get("phase")
    return str(phase) if phase else None


def prepare(
    cfg: SandboxConfig,
    bins: Path,
    *,
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    wait_established: Callable[[str], None],
) -> None:
    """Everything the server expects before it starts; each step is idempotent (`up` and `service start velero`
    run it every time, which also re-creates the bucket a restarted moto lost)."""
    velero_dir(cfg).mkdir(parents=True, exist_ok=True)
    tmp_dir(cfg).mkdir(parents=True, exist_ok=True)
    write_credentials(cfg)
    ensure_bucket(cfg)
    kubectl("apply", "--server-side", "-f", str(write_crds(cfg, bins)))
    wait_established("backupstoragelocations.velero.io")
    objects = [_namespace(), _placeholder_deployment(), backup_storage_location(cfg)]
    manifest = velero_dir(cfg) / "objects.yaml"
    manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(manifest))


def write_credentials(cfg: SandboxConfig) -> Path:
    path = credentials_file(cfg)
    path.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n")
    path.chmod(0o600)
    return path


def s3_client(cfg: SandboxConfig) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=datastores.s3_url(cfg),
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def ensure_bucket(cfg: SandboxConfig) -> None:
    s3 = s3_client(cfg)
    try:
        s3.create_bucket(Bucket=BUCKET)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def write_crds(cfg: SandboxConfig, bins: Path) -> Path:
    """Velero's CRDs as its own installer renders them (no cluster is contacted with --dry-run)."""
    argv = [str(bins / "velero"), "install", "--crds-only", "--dry-run", "-o", "yaml"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"velero install --crds-only failed: {proc.stderr.strip()[-2000:]}")
    path = velero_dir(cfg) / "crds.yaml"
    path.write_text(proc.stdout)
    return path


def backup_storage_location(cfg: SandboxConfig) -> dict[str, Any]:
    return {
        "apiVersion": "velero.io/v1",
        "kind": "BackupStorageLocation",
        "metadata": {"name": BSL_NAME, "namespace": NAMESPACE},
        "spec": {
            "provider": "aws",
            "default": True,
            "objectStorage": {"bucket": BUCKET},
            "config": {"region": REGION, "s3ForcePathStyle": "true", "s3Url": datastores.s3_url(cfg)},
        },
    }


def _namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}


def _placeholder_deployment() -> dict[str, Any]:
    """Never runs (0 replicas, and the server runs outside the cluster); restores only read its image."""
    labels = {"component": "velero", "deploy": "velero"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "velero", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "velero", "image": f"velero/velero:v{toolchain.VELERO_PINS['velero']}"}]
                },
            },
        },
    }
