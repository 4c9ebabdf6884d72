"""The control plane's services: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.

Everything listens on 127.0.0.1 only. etcd speaks TLS with client certificates, as a production etcd does,
so the etcd backup flows are exercised against the same kind of endpoint they meet in real clusters.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import yaml

from sandbox.config import SandboxConfig
from sandbox.pki import Pki
from sandbox.services import ServiceSpec

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
UNLIMITED_QPS = ["--kube-api-qps=5000", "--kube-api-burst=10000"]


def _https_ok(url: str, pki: Pki | None, client: str = "admin", verify_ca: bool = True) -> bool:
    """GET url over TLS, as `client` (a certificate of `pki`) when a PKI is given."""
    ctx = ssl.create_default_context(cafile=str(pki.ca)) if pki and verify_ca else ssl._create_unverified_context()
    if pki:
        ctx.load_cert_chain(str(pki.cert(client)), str(pki.key(client)))
    return httpx.get(url, verify=ctx, timeout=2).status_code == 200


def write_kubeconfig(cfg: SandboxConfig, pki: Pki, path: Path | None = None, token: str | None = None) -> Path:
    """A kubeconfig with absolute paths, so it works from any working directory: the admin's client certificate,
    or a bearer token when one is given."""
    path = path or cfg.kubeconfig
    user = (
        {"token": token}
        if token
        else {"client-certificate": str(pki.cert("admin")), "client-key": str(pki.key("admin"))}
    )
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "rollbook-sandbox", "cluster": {"server": cfg.api_url, "certificate-authority": str(pki.ca)}}
        ],
        "users": [{"name": "rollbook-admin", "user": user}],
        "contexts": [
            {"name": "rollbook-sandbox", "context": {"cluster": "rollbook-sandbox", "user": "rollbook-admin"}}
        ],
        "current-context": "rollbook-sandbox",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def etcd(cfg: SandboxConfig, bins: Path, pki: Pki) -> ServiceSpec:
    port, peer = cfg.port("etcd"), cfg.port("etcd-peer")
    argv = [
        str(bins / "etcd"),
        "--name=sandbox",
        f"--data-dir={cfg.work_dir / 'etcd'}",
        f"--listen-client-urls=https://127.0.0.1:{port}",
        f"--advertise-client-urls=https://127.0.0.1:{port}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=sandbox=http://127.0.0.1:{peer}",
        f"--cert-file={pki.cert('serving')}",
        f"--key-file={pki.key('serving')}",
        f"--trusted-ca-file={pki.ca}",
        "--client-cert-auth",
        "--unsafe-no-fsync",  # a sandbox trades crash safety for speed
        "--quota-backend-bytes=8589934592",
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=5m",
        "--log-level=warn",
    ]
    ready = lambda: _https_ok(f"https://127.0.0.1:{port}/health", pki, client="etcd-client")  # noqa: E731
    return ServiceSpec("etcd", argv, (port, peer), ready)


def kube_apiserver(cfg: SandboxConfig, bins: Path, pki: Pki) -> ServiceSpec:
    port = cfg.port("kube-apiserver")
    argv = [
        str(bins / "kube-apiserver"),
        f"--etcd-servers=https://127.0.0.1:{cfg.port('etcd')}",
        f"--etcd-cafile={pki.ca}",
        f"--etcd-certfile={pki.cert('etcd-client')}",
        f"--etcd-keyfile={pki.key('etcd-client')}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",  # a loopback advertise address cannot back the kubernetes Service
        "--authorization-mode=Node,RBAC",
        f"--client-ca-file={pki.ca}",
        f"--tls-cert-file={pki.cert('serving')}",
        f"--tls-private-key-file={pki.key('serving')}",
        f"--service-account-key-file={pki.sa_public}",
        f"--service-account-signing-key-file={pki.sa_private}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",
        "--max-requests-inflight=0",
        "--max-mutating-requests-inflight=0",
        "--profiling=false",
    ]
    ready = lambda: _https_ok(f"{cfg.api_url}/readyz", pki)  # noqa: E731
    return ServiceSpec("kube-apiserver", argv, (port,), ready, ready_timeout=120)


def _kube_component(cfg: SandboxConfig, bins: Path, name: str, extra: list[str]) -> ServiceSpec:
    """kube-controller-manager and kube-scheduler: same connection, same health endpoint, no leader election."""
    port = cfg.port(name)
    argv = [
        str(bins / name),
        f"--kubeconfig={cfg.kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--leader-elect=false",
        "--profiling=false",
        *UNLIMITED_QPS,
        *extra,
    ]
    # they serve a self-signed certificate they generate at start-up
    ready = lambda: _https_ok(f"https://127.0.0.1:{port}/healthz", None, verify_ca=False)  # noqa: E731
    return ServiceSpec(name, argv, (port,), ready)


def kube_controller_manager(cfg: SandboxConfig, bins: Path, pki: Pki) -> ServiceSpec:
    extra = [
        f"--root-ca-file={pki.ca}",
        f"--service-account-private-key-file={pki.sa_private}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # kwok renews thousands of node leases from one process; on two busy cores a renewal can be late, and
        # the default grace would then mark healthy nodes NotReady. Simulated faults set NotReady directly.
        "--node-monitor-grace-period=120s",
    ]
    return _kube_component(cfg, bins, "kube-controller-manager", extra)


def kube_scheduler(cfg: SandboxConfig, bins: Path, pki: Pki) -> ServiceSpec:
    return _kube_component(cfg, bins, "kube-scheduler", [])


def kwok(cfg: SandboxConfig, bins: Path, pki: Pki) -> ServiceSpec:
    """kwok reads its Stages from the API (Stage CRD), so fault stages can be switched while it runs."""
    port = cfg.port("kwok")
    argv = [
        str(bins / "kwok"),
        f"--kubeconfig={cfg.kubeconfig}",
        f"--config={cfg.work_dir / 'kwok.yaml'}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
        "--enable-crds=Stage",
        f"--cidr={POD_CIDR}",
        "--node-lease-duration-seconds=40",
        f"--server-address=127.0.0.1:{port}",
    ]
    ready = lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200  # noqa: E731
    return ServiceSpec("kwok", argv, (port,), ready)


def write_kwok_config(cfg: SandboxConfig) -> None:
    """Our own configuration file, so kwok never reads ~/.kwok/kwok.yaml from the user's home.

    kwok leaves the parallelism options at zero when they come from a file, so they are set here.
    """
    options = {
        "podPlayStageParallelism": 16,
        "nodePlayStageParallelism": 8,
        "nodeLeaseParallelism": 16,
        "podsOnNodeSyncParallelism": 4,
    }
    doc = {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration", "options": options}
    (cfg.work_dir / "kwok.yaml").write_text(yaml.safe_dump(doc))
