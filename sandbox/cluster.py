"""The sandbox as a whole: bring it up, report on it, switch faults, take it down.

`up` is idempotent: services already running are kept, nodes and stages already present are left alone.
`down` stops exactly the processes recorded in the work directory, newest first.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from sandbox import controlplane, datastores, faults, gatewayapi, toolchain, velero, vulndb
from sandbox.config import SandboxConfig
from sandbox.observability import (
    alertmanager_binary,
    alertmanager_config,
    alertmanager_config_file,
    alertmanager_service,
    prometheus_binary,
    prometheus_config,
    prometheus_config_file,
    prometheus_rules_dir,
    prometheus_service,
    traffic_simulator_service,
)
from sandbox.pki import Pki
from sandbox.registry import SandboxRegistries, registry_service
from sandbox.services import ServiceSpec, ServiceStatus, Supervisor, wait_until

CLI_TIMEOUT = 180
NODE_PREFIX = "kwok-node-"
NODE_ALLOCATABLE = {"cpu": "32", "memory": "128Gi", "pods": "110"}


@dataclass(frozen=True)
class UpReport:
    seconds: float
    nodes: int
    images: dict[str, str]


class Sandbox:
    def __init__(self, cfg: SandboxConfig | None = None, bins: Path | None = None) -> None:
        self.cfg = cfg or SandboxConfig.from_env()
        self._bins = bins
        self.pki = Pki(self.cfg.work_dir / "pki")
        self.supervisor = Supervisor(self.cfg.work_dir)

    @property
    def bins(self) -> Path:
        """Built on first use: `status` and `down` must work without a toolchain."""
        if self._bins is None:
            self._bins = toolchain.ensure()
        return self._bins

    @property
    def scanner_bins(self) -> Path:
        """grype and the DB writer: their own toolchain set, built on first use (not needed to run the cluster)."""
        return toolchain.ensure_scanner()

    def grype_env(self) -> dict[str, str]:
        """What a flow needs to scan the sandbox's images with a real grype and the sandbox's own vulnerability
        database (written on first use, refreshed when a day old): ROLLBOOK_GRYPE and grype's GRYPE_DB_* settings."""
        bins = self.scanner_bins
        db_root = vulndb.ensure_db(self.cfg.work_dir / "grype-db", bins)
        return {"ROLLBOOK_GRYPE": str(bins / "grype"), **vulndb.grype_env(db_root)}

    def runs_velero(self) -> bool:
        """Velero runs only when its toolchain set is built (minutes, and only Velero tests need it), so `up` never
        waits for that build; once it was started, `down` stops it whatever the cache holds now."""
        return toolchain.velero_built() or self.supervisor.pid("velero") is not None

    def prepare_velero(self) -> None:
        velero.prepare(
            self.cfg, toolchain.velero_bin_dir(), kubectl=self.kubectl, wait_established=self._wait_established
        )

    def services(self) -> list[ServiceSpec]:
        """Start order; `down` uses the reverse."""
        b, cfg, pki = self._bins or toolchain.bin_dir(), self.cfg, self.pki
        optional = [velero.velero_service(cfg, toolchain.velero_bin_dir())] if self.runs_velero() else []
        return [
            controlplane.etcd(cfg, b, pki),
            controlplane.kube_apiserver(cfg, b, pki),
            controlplane.kube_controller_manager(cfg, b, pki),
            controlplane.kube_scheduler(cfg, b, pki),
            controlplane.kwok(cfg, b, pki),
            traffic_simulator_service(cfg),
            alertmanager_service(cfg),
            prometheus_service(cfg),
            datastores.s3_service(cfg),
            datastores.postgres_service(cfg),
            registry_service(cfg, b, mirror=False),
            registry_service(cfg, b, mirror=True),
            *optional,  # last: it needs the API server and S3
        ]

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def up(self, nodes: int = 3) -> UpReport:
        start = time.monotonic()
        bins = self.bins
        self.cfg.work_dir.mkdir(parents=True, exist_ok=True)
        self.pki.ensure()
        controlplane.write_kubeconfig(self.cfg, self.pki)
        controlplane.write_kwok_config(self.cfg)
        prometheus_binary()  # fail before starting anything when a Debian-packaged service is not installed
        alertmanager_binary()
        pg_bins = datastores.postgres_bin_dir()
        self.write_config("prometheus", prometheus_config_file(self.cfg), prometheus_config)
        self.write_config("alertmanager", alertmanager_config_file(self.cfg), alertmanager_config)
        if datastores.ensure_postgres_cluster(self.cfg, pg_bins):
            _say("postgres cluster initialised")
        if not self.runs_velero():
            _say("velero: not started, its toolchain set is not built (`python -m sandbox.toolchain velero`)")
        for spec in self.services():
            if spec.name == "velero":  # CRDs, bucket, storage location and placeholder Deployment first
                self.prepare_velero()
            _say(f"starting {spec.name}")
            self.supervisor.start(spec)
            if spec.name == "kube-apiserver":
                self._apply_stage_crd(bins)
        self._apply_default_stages(bins)
        self.kubectl("apply", "--server-side", "-f", str(gatewayapi.crd_dir()))
        self._wait_established("httproutes.gateway.networking.k8s.io")
        for stage in (faults.crashloop_by_label(), faults.node_not_ready(), faults.pod_ready_again()):
            self.set_fault_stage(stage)
        created = self.ensure_nodes(nodes)
        _say(f"{created} node(s) created")
        images = SandboxRegistries(self.cfg, bins).publish_demo_images()
        return UpReport(round(time.monotonic() - start, 1), nodes, images)

    def up_control_plane(self, nodes: int = 2) -> UpReport:
        """Only what a full-cluster restore needs (etcd, the Kubernetes control plane, kwok and the S3 endpoint):
        a second, cheap sandbox for tests that stop and restore etcd, so the session's sandbox is never touched."""
        start = time.monotonic()
        if self._bins is None:  # only the components it runs: no wait for a helm or cosign build
            self._bins = toolchain.ensure(only=["etcd", "kwok", "kubernetes"])
        bins = self._bins
        self.cfg.work_dir.mkdir(parents=True, exist_ok=True)
        self.pki.ensure()
        controlplane.write_kubeconfig(self.cfg, self.pki)
        controlplane.write_kwok_config(self.cfg)
        wanted = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "s3"}
        for spec in self.services():
            if spec.name in wanted:
                _say(f"starting {spec.name}")
                self.supervisor.start(spec)
                if spec.name == "kube-apiserver":
                    self._apply_stage_crd(bins)
        self._apply_default_stages(bins)
        self.ensure_nodes(nodes)
        return UpReport(round(time.monotonic() - start, 1), nodes, {})

    def restore_control_plane(self) -> dict[str, Any]:
        """The `commands` control-plane driver's settings for this sandbox (the etcd-restore request's
        `control_plane`): `rollbook sandbox service stop|start`, with this sandbox selected by the environment."""
        rollbook = str(Path(sys.executable).with_name("rollbook"))
        peer = f"http://127.0.0.1:{self.cfg.port('etcd-peer')}"

        def step(action: str, *services: str) -> list[list[str]]:
            return [[rollbook, "sandbox", "service", action, *services]]

        controllers = ("kube-controller-manager", "kube-scheduler", "kwok")  # kwok: the simulated kubelets

        return {
            "kind": "commands",
            "etcd_member": {
                "data_dir": str(self.cfg.work_dir / "etcd"),
                "name": "sandbox",
                "initial_cluster": f"sandbox={peer}",
                "initial_advertise_peer_urls": peer,
            },
            "stop_controllers": step("stop", *controllers),
            "start_controllers": step("start", *controllers),
            "stop_api_servers": step("stop", "kube-apiserver"),
            "start_api_servers": step("start", "kube-apiserver"),
            "stop_etcd": step("stop", "etcd"),
            "start_etcd": step("start", "etcd"),
            "env": {
                "ROLLBOOK_SANDBOX_DIR": str(self.cfg.work_dir),
                "ROLLBOOK_SANDBOX_BASE_PORT": str(self.cfg.base_port),
            },
        }

    def write_config(self, service: str, path: Path, write: Callable[[SandboxConfig], Path]) -> bool:
        """(Re)write a service's config; if it runs and the config changed (a sandbox started by an older
        rollbook, before Prometheus sent alerts to Alertmanager), SIGHUP makes it reload without a restart.
        True when a running service was told to reload."""
        before = path.read_text() if path.exists() else None
        write(self.cfg)
        pid = self.supervisor.pid(service)
        if pid is None or path.read_text() == before:
            return False
        _say(f"{service}: config changed, reloading")
        os.kill(pid, signal.SIGHUP)
        return True

    def down(self) -> list[str]:
        stopped = []
        for spec in reversed(self.services()):
            self._request_fast_stop(spec.name)
            if self.supervisor.stop(spec):
                stopped.append(spec.name)
        return stopped

    def _request_fast_stop(self, service: str) -> None:
        """PostgreSQL's SIGTERM (what the Supervisor sends) waits for every client to disconnect, so one idle
        connection would hold `down` until the SIGKILL; SIGINT first asks for its fast shutdown instead."""
        pid = self.supervisor.pid(service) if service == "postgres" else None
        if pid is not None:
            os.kill(pid, datastores.FAST_SHUTDOWN)

    def purge(self) -> None:
        """Stop and delete the work directory (etcd data, registries, keys, the PostgreSQL cluster): the next `up`
        starts from nothing."""
        self.down()
        shutil.rmtree(self.cfg.work_dir, ignore_errors=True)

    def status(self) -> list[ServiceStatus]:
        return [self.supervisor.status(spec) for spec in self.services()]

    def is_up(self) -> bool:
        return all(s.ready for s in self.status())

    # -- kubernetes objects ------------------------------------------------------------------------------------

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(str(self.cfg.kubeconfig))

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._cli("kubectl", args, check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._cli("helm", args, check)

    def _cli(self, tool: str, args: tuple[str, ...], check: bool) -> subprocess.CompletedProcess[str]:
        """Run the sandbox's own kubectl or helm against it, whatever KUBECONFIG the caller has."""
        argv = [str(self.bins / tool), f"--kubeconfig={self.cfg.kubeconfig}", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args[:3])} failed: {proc.stderr.strip()}")
        return proc

    def _apply_stage_crd(self, bins: Path) -> None:
        self.kubectl("apply", "--server-side", "-f", str(bins / "kwok-stages" / "kwok.x-k8s.io_stages.yaml"))
        self._wait_established("stages.kwok.x-k8s.io")

    def _wait_established(self, crd: str, timeout: float = 120) -> None:
        """Wait for a CRD to be served. Read through the API rather than `kubectl wait`, which fails at once
        (instead of waiting) while a just-started API server's discovery does not list CRDs yet."""
        crds = client.ApiextensionsV1Api(self.api_client())

        def established() -> bool:
            try:
                conditions = crds.read_custom_resource_definition_status(crd, _request_timeout=10).status.conditions
            except (ApiException, HTTPError):  # not served yet, or the API server is still starting
                return False
            return any(c.type == "Established" and c.status == "True" for c in conditions or [])

        wait_until(established, timeout, f"CRD {crd} Established", interval=0.5)

    def _apply_default_stages(self, bins: Path) -> None:
        files = sorted(p for p in (bins / "kwok-stages").glob("*.yaml") if not p.name.startswith("kwok.x-k8s.io"))
        self.kubectl("apply", "--server-side", *(f"--filename={p}" for p in files))

    def ensure_nodes(self, count: int, parallelism: int = 16) -> int:
        """Create kwok-node-0..count-1 that are missing; returns how many were created."""
        core = client.CoreV1Api(self.api_client())
        existing = {n.metadata.name for n in core.list_node(label_selector="type=kwok").items}
        missing = [f"{NODE_PREFIX}{i}" for i in range(count) if f"{NODE_PREFIX}{i}" not in existing]
        with ThreadPoolExecutor(parallelism) as pool:
            list(pool.map(lambda name: _create_node(core, name), missing))
        wait_until(lambda: self._reporting_nodes(core) >= count, 60 + count / 20, f"kwok to report on {count} nodes")
        return len(missing)

    @staticmethod
    def _reporting_nodes(core: client.CoreV1Api) -> int:
        """Nodes kwok has taken over (they report a Ready condition, True or deliberately False)."""
        nodes = core.list_node(label_selector="type=kwok", resource_version="0").items
        return sum(any(c.type == "Ready" for c in n.status.conditions or []) for n in nodes)

    def service_account_kubeconfig(self, namespace: str, name: str, hours: int = 1) -> Path:
        """Mint a real, short-lived token for a ServiceAccount (created if missing) and write a kubeconfig using it,
        so a test can prove a flow works with exactly the RBAC it documents."""
        core = client.CoreV1Api(self.api_client())
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        request = {"spec": {"expirationSeconds": hours * 3600}}
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        path = self.cfg.work_dir / "kubeconfigs" / f"{namespace}-{name}"
        return controlplane.write_kubeconfig(self.cfg, self.pki, path, token=token)

    # -- faults ------------------------------------------------------------------------------------------------

    def service_spec(self, name: str) -> ServiceSpec:
        for spec in self.services():
            if spec.name == name:
                return spec
        raise ValueError(f"no sandbox service {name!r}; known: {', '.join(s.name for s in self.services())}")

    def stop_service(self, name: str) -> bool:
        """Take one service of a running sandbox away (the API server or etcd restarting under a flow) until
        `start_service`; True if it was running. Clients see connection refused meanwhile."""
        return self.supervisor.stop(self.service_spec(name))

    def start_service(self, name: str) -> int:
        """Start a service `stop_service` took away; returns once it is ready again (its pid)."""
        if name == "velero":
            self.prepare_velero()
        return self.supervisor.start(self.service_spec(name))

    def start_registry(self, *, mirror: bool = False) -> None:
        """Start a registry `stop_service` took away and publish the demo images on it again: crane's registry
        keeps manifests in memory, so a restart loses them (a real registry keeps them). Images a test pushed
        itself are gone."""
        self.start_service("registry-mirror" if mirror else "registry")
        SandboxRegistries(self.cfg, self.bins).publish_demo_images()

    def set_alert_rules(self, name: str, text: str | None) -> None:
        """Write (or, with None, remove) a Prometheus alerting rule file and make Prometheus reload it."""
        path = prometheus_rules_dir(self.cfg) / f"{name}.yml"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
        pid = self.supervisor.pid("prometheus")
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    def set_fault_stage(self, stage: dict[str, Any]) -> None:
        api = client.CustomObjectsApi(self.api_client())
        group, version, plural = faults.STAGE_API
        name = stage["metadata"]["name"]
        try:
            current: dict[str, Any] = api.get_cluster_custom_object(group, version, plural, name)  # type: ignore[assignment]
            stage["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            api.replace_cluster_custom_object(group, version, plural, name, stage)
        except ApiException as exc:
            if exc.status != 404:
                raise
            api.create_cluster_custom_object(group, version, plural, stage)

    def clear_fault_stage(self, name: str) -> None:
        api = client.CustomObjectsApi(self.api_client())
        group, version, plural = faults.STAGE_API
        try:
            api.delete_cluster_custom_object(group, version, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def set_unreachable_registries(self, hosts: list[str]) -> None:
        """Pods pulling from these hosts get ImagePullBackOff; an empty list heals every registry."""
        if hosts:
            self.set_fault_stage(faults.image_pull_backoff(hosts))
        else:
            self.clear_fault_stage("rollbook-fault-image-pull-backoff")

    def set_crashing_images(self, images: list[str]) -> None:
        if images:
            self.set_fault_stage(faults.crashloop_by_image(images))
        else:
            self.clear_fault_stage("rollbook-fault-crashloop-image")

    def set_node_not_ready(self, node: str, not_ready: bool = True) -> None:
        """Take a node's simulated kubelet down (or bring it back): the node reports NotReady and its pods are
        frozen, so they recover only when the node does. Returns once the node reports the new state (kwok's
        stage fires about a second after the label), so a caller never reads the old one."""
        core = client.CoreV1Api(self.api_client())
        if not_ready:
            self._label_pods_on(core, node, "NotReady")
            core.patch_node(node, {"metadata": {"labels": {faults.FAULT_LABEL: "NotReady"}}})
            wait_until(lambda: not _node_ready(core, node), 60, f"node {node} to report NotReady")
            self._mark_pods_not_ready(core, node)
            return
        core.patch_node(node, {"metadata": {"labels": {faults.FAULT_LABEL: None}}})
        wait_until(lambda: _node_ready(core, node), 60, f"node {node} to report Ready")
        self._label_pods_on(core, node, None)

    @staticmethod
    def _mark_pods_not_ready(core: client.CoreV1Api, node: str) -> None:
        """What the node lifecycle controller does once a node is lost; it does not do it for a node whose
        kubelet itself reports NotReady, which is how kwok simulates the fault."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        condition = {"type": "Ready", "status": "False", "reason": "NodeNotReady", "lastTransitionTime": now}
        for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items:
            core.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, {"status": {"conditions": [condition]}}
            )

    @staticmethod
    def _label_pods_on(core: client.CoreV1Api, node: str, value: str | None) -> None:
        for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items:
            patch = {"metadata": {"labels": {faults.NODE_FAULT_LABEL: value}}}
            core.patch_namespaced_pod(pod.metadata.name, pod.metadata.namespace, patch)


def _node_ready(core: client.CoreV1Api, node: str) -> bool:
    conditions = core.read_node(node).status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _create_node(core: client.CoreV1Api, name: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {controlplane.FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "status": {"allocatable": NODE_ALLOCATABLE, "capacity": NODE_ALLOCATABLE},
    }
    try:
        core.create_node(body)
    except ApiException as exc:
        if exc.status != 409:  # created by a concurrent `up`: fine
            raise


def _say(msg: str) -> None:
    print(f"[sandbox] {msg}", file=sys.stderr, flush=True)
