"""Control-plane drivers without a cluster: the registry, the commands driver's argv handling, the sandbox's
own driver settings and its `rollbook sandbox service` command's refusal of an unknown name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from rollbook.plugins import UnknownKind, lookup
from sandbox.cli import _service
from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig
from tasks.controlplane import DRIVERS, ControlPlane, ControlPlaneError, make_driver

MEMBER = {"data_dir": "/var/lib/etcd", "name": "cp-1", "initial_cluster": "cp-1=https://10.0.0.1:2380",
          "initial_advertise_peer_urls": "https://10.0.0.1:2380"}  # fmt: skip


def commands(tmp_path: Path, **steps: list[list[str]]) -> ControlPlane:
    ok = [[sys.executable, "-c", "pass"]]
    names = (
        "stop_controllers",
        "start_controllers",
        "stop_api_servers",
        "start_api_servers",
        "stop_etcd",
        "start_etcd",
    )
    return ControlPlane.model_validate({"etcd_member": MEMBER, **{n: ok for n in names}, **steps})


def test_commands_driver_runs_each_argv_in_order_with_its_env(tmp_path: Path) -> None:
    out = tmp_path / "order"
    write = "import os,sys; open(sys.argv[1],'a').write(sys.argv[2] + os.environ['DRILL'] + '\\n')"
    cfg = commands(
        tmp_path,
        stop_etcd=[[sys.executable, "-c", write, str(out), "a"], [sys.executable, "-c", write, str(out), "b"]],
    ).model_copy(update={"env": {"DRILL": "!"}})
    make_driver(cfg).stop_etcd()
    assert out.read_text() == "a!\nb!\n"


def test_a_failing_command_names_the_step_and_its_output(tmp_path: Path) -> None:
    fail = [[sys.executable, "-c", "import sys; sys.exit('etcd refused to stop')"]]
    with pytest.raises(ControlPlaneError, match=r"stop etcd: .* exited 1: etcd refused to stop"):
        make_driver(commands(tmp_path, stop_etcd=fail)).stop_etcd()
    with pytest.raises(ControlPlaneError, match="command not found"):
        make_driver(commands(tmp_path, start_etcd=[["/no/such/etcdctl"]])).start_etcd()


def test_the_registry_lists_its_kinds_and_commands_need_every_step() -> None:
    assert sorted(DRIVERS) == ["commands", "kubeadm"]
    with pytest.raises(UnknownKind, match="known: commands, kubeadm"):
        lookup(DRIVERS, "talos", concern="control-plane driver")
    with pytest.raises(ValidationError, match="needs commands for stop_controllers"):
        ControlPlane.model_validate({"etcd_member": MEMBER})
    assert ControlPlane.model_validate({"kind": "kubeadm", "etcd_member": MEMBER}).kind == "kubeadm"


def test_the_sandbox_driver_settings_validate_and_name_its_own_services(tmp_path: Path) -> None:
    sandbox = Sandbox(SandboxConfig(tmp_path, 26380), bins=tmp_path)
    cfg = ControlPlane.model_validate(sandbox.restore_control_plane())
    assert cfg.stop_controllers[0][-3:] == ["kube-controller-manager", "kube-scheduler", "kwok"]
    assert cfg.etcd_member.path == tmp_path / "etcd" and cfg.env["ROLLBOOK_SANDBOX_BASE_PORT"] == "26380"
    assert cfg.etcd_member.initial_advertise_peer_urls == "http://127.0.0.1:26381"


def test_sandbox_service_refuses_an_unknown_name_before_touching_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROLLBOOK_SANDBOX_DIR", str(tmp_path))
    assert _service("stop", ["kwok", "kube-apiservr"]) == 2
    assert "no sandbox service 'kube-apiservr'" in capsys.readouterr().out
