"""The kubeadm driver against a simulated kubelet: a thread that, every 50 ms, keeps a real listening socket on
each component's port while `<component>.yaml` is in the manifests directory and closes it once the manifest is
gone, as the kubelet starts and stops static pods. Ports are free ones picked at runtime. This proves the moves,
the waits and the error messages; not a real kubelet's timing or the real components' bind addresses."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tasks.controlplane import ControlPlane, ControlPlaneError, kubeadm, make_driver
from tasks.controlplane.kubeadm import KubeadmDriver

COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")
MEMBER = {"data_dir": "/var/lib/etcd", "name": "cp-1", "initial_cluster": "cp-1=https://10.0.0.1:2380",
          "initial_advertise_peer_urls": "https://10.0.0.1:2380"}  # fmt: skip


class Kubelet(threading.Thread):
    """Static pods as listening sockets. `lag`: seconds between seeing a manifest change and acting on it;
    `ignore_removal`: never stop a running pod; `hold`: components it will not start (until removed from it)."""

    def __init__(
        self, manifests: Path, ports: dict[str, int], *, lag: float = 0.0, ignore_removal: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.manifests, self.ports, self.lag, self.ignore_removal = manifests, ports, lag, ignore_removal
        self.hold: set[str] = set()
        self.events: list[str] = []
        self._listeners: dict[str, socket.socket] = {}
        self._seen: dict[str, float] = {}  # component -> when its pending change was first noticed
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.05):
            self._sync()
        for listener in self._listeners.values():
            listener.close()

    def _sync(self) -> None:
        present = {path.stem for path in self.manifests.glob("*.yaml")} & set(self.ports)
        for component in self.ports:
            running = component in self._listeners
            should_run = component in present and component not in self.hold
            if running and not should_run and self.ignore_removal:
                should_run = True
            if running == should_run:
                self._seen.pop(component, None)
                continue
            first_seen = self._seen.setdefault(component, time.monotonic())
            if time.monotonic() - first_seen < self.lag:
                continue
            del self._seen[component]
            if should_run:
                self._listeners[component] = _listen(self.ports[component])
                self.events.append(f"start {component}")
            else:
                self._listeners.pop(component).close()
                self.events.append(f"stop {component}")
        for listener in self._listeners.values():  # take the driver's probes off the backlog
            try:
                while True:
                    listener.accept()[0].close()
            except BlockingIOError:
                pass

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def port_open(port: int) -> bool:
    """The test's own probe, not the driver's: is anything accepting connections on 127.0.0.1:port?"""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def free_ports(count: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the simulated kubelet did not settle"
        time.sleep(0.02)


class Node:
    """A temp /etc/kubernetes: the manifests, the driver's holding directory, the ports, the simulated kubelet."""

    def __init__(self, root: Path) -> None:
        self.manifests, self.holding = root / "manifests", root / "manifests-stopped-by-rollbook"
        self.manifests.mkdir()
        self.ports = dict(zip(COMPONENTS, free_ports(len(COMPONENTS)), strict=True))
        self.kubelets: list[Kubelet] = []

    def write_manifests(self, *components: str) -> dict[str, bytes]:
        written = {}
        for component in components or COMPONENTS:
            body = f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {component}\n  # é, trailing space \n".encode()
            path = self.manifests / f"{component}.yaml"
            path.write_bytes(body)
            path.chmod(0o600)
            written[component] = body
        return written

    def kubelet(self, *, lag: float = 0.0, ignore_removal: bool = False) -> Kubelet:
        kubelet = Kubelet(self.manifests, self.ports, lag=lag, ignore_removal=ignore_removal)
        kubelet.start()
        self.kubelets.append(kubelet)
        return kubelet

    def driver(self, timeout_seconds: int = 10) -> KubeadmDriver:
        return KubeadmDriver(
            manifests_dir=self.manifests,
            holding_dir=self.holding,
            api_server_port=self.ports["kube-apiserver"],
            etcd_port=self.ports["etcd"],
            controller_manager_port=self.ports["kube-controller-manager"],
            scheduler_port=self.ports["kube-scheduler"],
            timeout_seconds=timeout_seconds,
        )

    def listening(self, component: str) -> bool:
        return port_open(self.ports[component])

    def all_running(self) -> bool:
        return all(self.listening(component) for component in COMPONENTS)


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.setattr(kubeadm, "POLL_SECONDS", 0.02)
    node = Node(tmp_path)
    yield node
    for kubelet in node.kubelets:
        kubelet.stop()


def timed(call: Callable[[], None]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("component", "stop", "start"),
    [("kube-apiserver", "stop_api_servers", "start_api_servers"), ("etcd", "stop_etcd", "start_etcd")],
    ids=["api-server", "etcd"],
)
def test_stop_holds_the_manifest_until_the_port_closes_and_start_puts_it_back_until_it_listens(
    node: Node, component: str, stop: str, start: str
) -> None:
    node.write_manifests()
    node.kubelet(lag=0.3)  # the kubelet takes its time: the driver must wait for the port, not for the move
    eventually(node.all_running)
    driver = node.driver()

    assert timed(getattr(driver, stop)) >= 0.3
    assert not node.listening(component)
    assert not (node.manifests / f"{component}.yaml").exists() and (node.holding / f"{component}.yaml").exists()
    assert all(node.listening(other) for other in COMPONENTS if other != component)

    assert timed(getattr(driver, start)) >= 0.3
    assert node.listening(component)
    assert (node.manifests / f"{component}.yaml").exists() and not (node.holding / f"{component}.yaml").exists()


def test_the_restore_order_stops_and_starts_each_pod_and_puts_every_manifest_back_byte_for_byte(node: Node) -> None:
    written = node.write_manifests()
    kubelet = node.kubelet(lag=0.1)
    eventually(node.all_running)
    kubelet.events.clear()
    driver = node.driver()

    for step in ("stop_controllers", "stop_api_servers", "stop_etcd"):
        getattr(driver, step)()
    assert not any(node.listening(component) for component in COMPONENTS)
    assert sorted(path.name for path in node.manifests.iterdir()) == []
    for step in ("start_etcd", "start_api_servers", "start_controllers"):
        getattr(driver, step)()

    assert kubelet.events == [
        "stop kube-controller-manager", "stop kube-scheduler", "stop kube-apiserver", "stop etcd",
        "start etcd", "start kube-apiserver", "start kube-controller-manager", "start kube-scheduler",
    ]  # fmt: skip
    assert node.all_running()
    assert {path.stem: path.read_bytes() for path in node.manifests.iterdir()} == written
    assert all((node.manifests / f"{c}.yaml").stat().st_mode & 0o777 == 0o600 for c in COMPONENTS)
    assert list(node.holding.iterdir()) == []


@pytest.mark.parametrize(
    "step", ["stop_controllers", "stop_api_servers", "stop_etcd", "start_etcd", "start_api_servers"]
)
def test_a_missing_manifest_names_its_path_and_asks_whether_this_is_a_kubeadm_control_plane_node(
    node: Node, step: str
) -> None:
    component = {"stop_controllers": "kube-controller-manager", "stop_api_servers": "kube-apiserver",
                 "stop_etcd": "etcd", "start_etcd": "etcd", "start_api_servers": "kube-apiserver"}[step]  # fmt: skip
    where = node.holding if step.startswith("start") else node.manifests
    with pytest.raises(ControlPlaneError, match="kubeadm control-plane node") as raised:
        getattr(node.driver(), step)()
    assert f"{where / component}.yaml not found" in str(raised.value)


def test_a_kubelet_that_never_stops_the_pod_fails_after_the_timeout_with_the_manifest_held(node: Node) -> None:
    node.write_manifests()
    node.kubelet(ignore_removal=True)
    eventually(node.all_running)
    driver = node.driver(timeout_seconds=1)

    started = time.monotonic()
    with pytest.raises(ControlPlaneError, match=r"^the kubelet did not stop kube-apiserver within 1s$"):
        driver.stop_api_servers()
    assert 1 <= time.monotonic() - started < 3
    assert (node.holding / "kube-apiserver.yaml").exists() and node.listening("kube-apiserver")
    driver.start_api_servers()  # putting it back is the way out: still listening, so it returns at once
    assert (node.manifests / "kube-apiserver.yaml").exists() and not (node.holding / "kube-apiserver.yaml").exists()


def test_stopping_again_after_a_run_that_died_is_fine(node: Node) -> None:
    node.write_manifests()
    node.holding.mkdir()
    for component in ("etcd", "kube-controller-manager"):  # a previous run stopped these, then died
        (node.manifests / f"{component}.yaml").rename(node.holding / f"{component}.yaml")
    node.kubelet()
    eventually(lambda: node.listening("kube-scheduler") and not node.listening("etcd"))
    driver = node.driver(timeout_seconds=2)

    driver.stop_etcd()
    driver.stop_controllers()  # the controller-manager is already held, the scheduler is moved now
    assert sorted(path.stem for path in node.holding.iterdir()) == ["etcd", "kube-controller-manager", "kube-scheduler"]
    assert not node.listening("kube-scheduler") and not node.listening("etcd")


def test_starting_again_only_waits_for_the_port_as_the_flow_does_after_etcd_failed_to_start(node: Node) -> None:
    node.write_manifests()
    kubelet = node.kubelet()
    eventually(node.all_running)
    driver = node.driver(timeout_seconds=1)
    driver.stop_etcd()

    kubelet.hold.add("etcd")  # etcd does not come up on the restored data
    with pytest.raises(ControlPlaneError, match=r"^the kubelet did not start etcd within 1s$"):
        driver.start_etcd()
    assert (node.manifests / "etcd.yaml").exists()  # the first start moved it back

    kubelet.hold.clear()  # the flow put the old data back and starts etcd again: the manifest is already in place
    driver.start_etcd()
    assert node.listening("etcd") and list(node.holding.iterdir()) == []


def test_a_manifest_in_both_directories_is_refused_and_neither_copy_is_touched(node: Node) -> None:
    node.write_manifests("etcd")
    node.holding.mkdir()
    (node.holding / "etcd.yaml").write_bytes(b"an older copy\n")
    driver = node.driver(timeout_seconds=1)
    both = re.escape(f"both {node.manifests / 'etcd.yaml'} and {node.holding / 'etcd.yaml'} exist")
    with pytest.raises(ControlPlaneError, match=both):
        driver.stop_etcd()
    with pytest.raises(ControlPlaneError, match="both .* exist"):
        driver.start_etcd()
    assert (node.holding / "etcd.yaml").read_bytes() == b"an older copy\n"
    assert (node.manifests / "etcd.yaml").read_bytes().startswith(b"apiVersion: v1")


def test_make_driver_builds_it_from_the_control_plane_config_with_the_holding_dir_beside_the_manifests(
    node: Node,
) -> None:
    node.write_manifests()
    node.kubelet()
    eventually(node.all_running)
    cfg = ControlPlane.model_validate(
        {
            "kind": "kubeadm",
            "etcd_member": MEMBER,
            "manifests_dir": str(node.manifests),
            "timeout_seconds": 5,
            "api_server_port": node.ports["kube-apiserver"],
            "etcd_port": node.ports["etcd"],
        }
    )
    driver = make_driver(cfg)
    assert driver.kind == "kubeadm"
    driver.stop_api_servers()
    driver.stop_etcd()
    assert sorted(path.name for path in node.holding.iterdir()) == ["etcd.yaml", "kube-apiserver.yaml"]
    assert not node.listening("etcd") and not node.listening("kube-apiserver")
    driver.start_etcd()
    driver.start_api_servers()
    assert node.all_running()
