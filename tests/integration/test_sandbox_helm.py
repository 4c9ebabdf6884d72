"""helm v4 installs, upgrades, rolls back and auto-rolls-back the demo chart on the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client

from sandbox.cluster import Sandbox
from sandbox.faults import FAULT_LABEL
from sandbox.registry import DEMO_REPOSITORY


def _history(sandbox: Sandbox, namespace: str) -> list[dict]:
    return json.loads(sandbox.helm("history", "demo", "-n", namespace, "-o", "json").stdout)


def _image(apps: client.AppsV1Api, namespace: str) -> str:
    return apps.read_namespaced_deployment("demo-demo-app", namespace).spec.template.spec.containers[0].image


@pytest.fixture
def repo(sandbox: Sandbox) -> str:
    return f"{sandbox.cfg.registry_host()}/{DEMO_REPOSITORY}"


def test_install_upgrade_history_rollback(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path, repo: str
) -> None:
    common = [str(demo_chart), "-n", namespace, "--set", f"image.repository={repo}", "--wait", "--timeout=60s"]
    sandbox.helm("install", "demo", *common, "--set", "image.tag=1.0.0")
    sandbox.helm("upgrade", "demo", *common, "--set", "image.tag=1.1.0")
    assert _image(apps, namespace) == f"{repo}:1.1.0"
    assert [(r["revision"], r["status"]) for r in _history(sandbox, namespace)] == [(1, "superseded"), (2, "deployed")]

    sandbox.helm("rollback", "demo", "1", "-n", namespace, "--wait", "--timeout=60s")
    assert _image(apps, namespace) == f"{repo}:1.0.0"
    history = _history(sandbox, namespace)
    assert history[-1]["revision"] == 3 and history[-1]["status"] == "deployed"
    assert "Rollback to 1" in history[-1]["description"]


def test_failed_upgrade_rolls_back(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path, repo: str
) -> None:
    common = [str(demo_chart), "-n", namespace, "--set", f"image.repository={repo}"]
    sandbox.helm("install", "demo", *common, "--set", "image.tag=1.0.0", "--wait", "--timeout=60s")
    crash_label = FAULT_LABEL.replace(".", r"\.")  # helm --set treats dots as nesting
    failed = sandbox.helm(
        "upgrade",
        "demo",
        *common,
        "--set",
        "image.tag=1.2.0",
        "--set",
        f"podLabels.{crash_label}=CrashLoopBackOff",
        "--wait",
        "--timeout=15s",
        "--rollback-on-failure",
        check=False,
    )
    assert failed.returncode != 0
    assert "rollback" in failed.stderr.lower() or "rolled back" in failed.stderr.lower()
    history = _history(sandbox, namespace)
    assert [r["status"] for r in history] == ["superseded", "failed", "deployed"]
    assert _image(apps, namespace) == f"{repo}:1.0.0"
