"""The toolchain builds only the sets asked for (the demo: the base set), says what it is building, and the
sandbox's exports leave grype out unless it is built or asked for."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from rollbook.cli import main as rollbook_main
from sandbox import toolchain
from sandbox.cluster import Sandbox


def test_no_argument_builds_the_base_set_only() -> None:
    assert toolchain.plan([]) == [("base", None)]
    assert toolchain.DEFAULT_SETS == ("base",)
    assert not {c.name for c in toolchain.SCANNER_COMPONENTS} & {c.name for c in toolchain.COMPONENTS}


def test_sets_and_components_by_name() -> None:
    assert toolchain.plan(["scanner"]) == [("scanner", None)]
    assert toolchain.plan(["all"]) == [(name, None) for name in toolchain.SETS]
    assert toolchain.plan(["grype", "helm"]) == [("base", ["helm"]), ("scanner", ["grype"])]
    with pytest.raises(toolchain.ToolchainError, match="unknown set or component.*: nope; sets: base, scanner"):
        toolchain.plan(["nope"])


def test_main_builds_what_the_plan_names(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, list[str] | None]] = []
    for name in toolchain.SETS:
        components, _ = toolchain.SETS[name]
        monkeypatch.setitem(
            toolchain.SETS, name, (components, lambda only, n=name: calls.append((n, only)) or Path(f"/bins/{n}"))
        )
    toolchain.main([])
    assert calls == [("base", None)] and capsys.readouterr().out == "/bins/base\n"
    with pytest.raises(SystemExit, match="toolchain: unknown set"):
        toolchain.main(["grype-typo"])


def test_progress_names_the_component_its_step_and_the_time() -> None:
    beat = toolchain._Heartbeat("[3/6] kubernetes")
    beat.start -= 125  # as if it had been building for a while
    beat.step = "compile kubernetes"
    assert beat.line() == "[3/6] kubernetes: still building (compile kubernetes), 2m05s so far"


def test_a_go_failure_names_the_step_and_shows_the_output_tail(tmp_path: Path) -> None:
    with pytest.raises(toolchain.ToolchainError, match=r"step 'compile nothing' failed \(go build .*\):\n.*"):
        toolchain._go(["build", "./does-not-exist"], tmp_path, "compile nothing")


def _exports(out: str) -> dict[str, str]:
    return {
        name: shlex.split(value)[0]
        for line in out.splitlines()
        if line.startswith("export ")
        for name, _, value in [line.removeprefix("export ").partition("=")]
    }


@pytest.fixture
def env_without_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """`rollbook sandbox env` with a base set that is "built" in tmp_path and grype that must not be built."""
    monkeypatch.setenv("ROLLBOOK_SANDBOX_DIR", str(tmp_path / "sandbox"))
    monkeypatch.setattr(toolchain, "ensure", lambda *a, **k: tmp_path / "bin")

    def no_grype_build(self: Sandbox) -> dict[str, str]:
        raise AssertionError("grype built without --scanner")

    monkeypatch.setattr(Sandbox, "grype_env", no_grype_build)
    return tmp_path / "bin"


def test_env_exports_cosign_and_skips_grype_until_it_is_built(
    env_without_builds: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(toolchain, "scanner_built", lambda *a: False)
    assert rollbook_main(["sandbox", "env"]) == 0
    out = capsys.readouterr().out
    exports = _exports(out)
    assert exports["ROLLBOOK_COSIGN"] == str(env_without_builds / "cosign")
    assert exports["ROLLBOOK_SANDBOX_BIN"] == str(env_without_builds)
    assert "ROLLBOOK_GRYPE" not in exports and "rollbook sandbox env --scanner" in out


def test_env_exports_the_velero_cli_only_once_it_is_built(
    env_without_builds: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(toolchain, "scanner_built", lambda *a: False)
    monkeypatch.setattr(toolchain, "velero_built", lambda *a: False)
    assert rollbook_main(["sandbox", "env"]) == 0
    assert "ROLLBOOK_VELERO" not in _exports(capsys.readouterr().out)
    monkeypatch.setattr(toolchain, "velero_built", lambda *a: True)
    assert rollbook_main(["sandbox", "env"]) == 0
    exports = _exports(capsys.readouterr().out)
    assert exports["ROLLBOOK_VELERO"] == str(toolchain.velero_bin_dir() / "velero")
    assert exports["VELERO_NAMESPACE"] == "velero"


def test_env_exports_grype_when_asked(
    env_without_builds: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(toolchain, "scanner_built", lambda *a: False)
    monkeypatch.setattr(Sandbox, "grype_env", lambda self: {"ROLLBOOK_GRYPE": "/scanner/grype"})
    assert rollbook_main(["sandbox", "env", "--scanner"]) == 0
    assert _exports(capsys.readouterr().out)["ROLLBOOK_GRYPE"] == "/scanner/grype"
