"""The velero toolchain set and service, without building or running them: their own cache key, the wrapper
module's go.mod edits, and a server that listens on the sandbox's loopback ports only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox import toolchain, velero
from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig
from sandbox.services import probe


def test_velero_has_its_own_cache_key_and_is_in_all_but_not_the_default() -> None:
    assert toolchain.velero_bin_dir() not in (toolchain.bin_dir(), toolchain.scanner_bin_dir())
    assert toolchain.velero_key().startswith("velero-")
    assert toolchain.velero_bin_dir({**toolchain.VELERO_PINS, "velero": "1.18.2"}) != toolchain.velero_bin_dir()
    assert "velero" not in toolchain.PINS  # the base key is what it was before velero existed
    assert toolchain.plan(["velero"]) == [("velero", None)]
    assert ("velero", None) in toolchain.plan(["all"])
    assert all(name != "velero" for name, _ in toolchain.plan([]))


def test_velero_key_follows_the_wrapper_main(monkeypatch: pytest.MonkeyPatch) -> None:
    before = toolchain.velero_key()
    monkeypatch.setattr(toolchain, "VELERO_WRAPPER_MAIN", toolchain.VELERO_WRAPPER_MAIN + "// changed\n")
    assert toolchain.velero_key() != before


def test_wrapper_turns_the_controller_runtime_metrics_listener_off() -> None:
    assert 'metricsserver.DefaultBindAddress = "0"' in toolchain.VELERO_WRAPPER_MAIN
    assert "velero.NewCommand(filepath.Base(os.Args[0]))" in toolchain.VELERO_WRAPPER_MAIN


def test_build_copies_velero_replaces_pins_cli_runtime_and_stamps_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gomod = tmp_path / "velero.mod"
    gomod.write_text(
        "module github.com/vmware-tanzu/velero\n\nrequire k8s.io/cli-runtime v0.33.12\n\n"
        "replace github.com/kopia/kopia => github.com/project-velero/kopia v0.0.0-20251230033609-d946b1e75197\n"
    )
    calls: list[list[str]] = []

    def fake_go(args: list[str], cwd: Path, step: str, env: dict[str, str] | None = None) -> str:
        calls.append(args)
        if args[:2] == ["mod", "download"]:
            return json.dumps({"GoMod": str(gomod)})
        return ""

    monkeypatch.setattr(toolchain, "_go", fake_go)
    out = tmp_path / "out"
    out.mkdir()
    toolchain.build_velero("1.18.3", tmp_path / "work", out)
    assert (tmp_path / "work" / "main.go").read_text() == toolchain.VELERO_WRAPPER_MAIN
    edit = next(c for c in calls if c[:2] == ["mod", "edit"])
    assert "-require=github.com/vmware-tanzu/velero@v1.18.3" in edit
    assert "-require=k8s.io/cli-runtime@v0.33.13" in edit
    kopia = "-replace=github.com/kopia/kopia=github.com/project-velero/kopia@v0.0.0-20251230033609-d946b1e75197"
    assert kopia in edit
    get_plugin = ["get", "github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws@v1.14.3"]
    # velero is compiled before the plugin joins the module graph, and the plugin comes at its pin
    assert [c[0] for c in calls[-3:]] == ["build", "get", "build"] and calls[-2] == get_plugin
    builds = [c for c in calls if c[0] == "build"]
    assert "-X github.com/vmware-tanzu/velero/pkg/buildinfo.Version=v1.18.3" in builds[0][3]
    assert builds[0][-1] == "." and builds[1][-1].endswith("velero-plugin-for-aws/velero-plugin-for-aws")
    assert builds[1][builds[1].index("-o") + 1] == str(out / "velero-plugins" / "velero-plugin-for-aws")


def test_server_listens_on_the_sandbox_loopback_ports_with_its_own_tmpdir(tmp_path: Path) -> None:
    cfg = SandboxConfig(tmp_path, base_port=25000)
    spec = velero.velero_service(cfg, Path("/bins"))
    assert spec.ports == (25014, 25015)
    assert "--metrics-address=127.0.0.1:25014" in spec.argv and "--profiler-address=127.0.0.1:25015" in spec.argv
    assert "--plugin-dir=/bins/velero-plugins" in spec.argv and f"--kubeconfig={cfg.kubeconfig}" in spec.argv
    assert spec.env["TMPDIR"] == str(tmp_path / "velero" / "tmp")
    assert spec.env["AWS_SHARED_CREDENTIALS_FILE"] == str(velero.credentials_file(cfg))
    assert not probe(spec)  # no API server yet: simply not ready


def test_storage_location_is_path_style_on_the_sandbox_s3(tmp_path: Path) -> None:
    bsl = velero.backup_storage_location(SandboxConfig(tmp_path, base_port=25000))
    assert bsl["spec"]["provider"] == "aws" and bsl["spec"]["default"] is True
    assert bsl["spec"]["config"] == {
        "region": "us-east-1",
        "s3ForcePathStyle": "true",
        "s3Url": "http://127.0.0.1:25012",
    }


def test_credentials_file_is_private(tmp_path: Path) -> None:
    cfg = SandboxConfig(tmp_path, base_port=25000)
    velero.velero_dir(cfg).mkdir(parents=True)
    path = velero.write_credentials(cfg)
    assert path.stat().st_mode & 0o077 == 0
    assert "aws_access_key_id = " in path.read_text()


def test_sandbox_runs_velero_only_when_built_or_already_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = Sandbox(SandboxConfig(tmp_path, base_port=25000), bins=tmp_path / "bin")
    monkeypatch.setattr(toolchain, "velero_built", lambda *a: False)
    assert "velero" not in [s.name for s in sandbox.services()]
    monkeypatch.setattr(sandbox.supervisor, "pid", lambda name: 4242 if name == "velero" else None)
    assert sandbox.services()[-1].name == "velero"  # started before the build was removed: `down` still stops it
    monkeypatch.setattr(sandbox.supervisor, "pid", lambda name: None)
    monkeypatch.setattr(toolchain, "velero_built", lambda *a: True)
    assert sandbox.services()[-1].name == "velero"  # last: it needs the API server and S3
