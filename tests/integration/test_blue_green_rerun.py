"""A blue/green re-run after the first run was killed while helm installed green (issue 16).

helm's install left green `pending-install` at revision 1, its only revision: helm-rollback has nothing to roll
back to, and every helm command on green refuses. The re-run recognises its own interrupted install (the same
values), waits until that helm has certainly given up, removes it and carries on; a pending install of other
values is refused with the command that clears it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helm_helpers import run_in_thread, wait_paused
from kubernetes import client
from test_blue_green import BLUE_SERVICE, GREEN_SERVICE, ingresses, request
from test_canary_rollout import CONTROLS, answer_plan, approve_next, deploy

from flows._blue_green_steps import green_values
from flows.blue_green import blue_green
from sandbox.cluster import Sandbox


def green_history(sandbox: Sandbox, namespace: str) -> list[tuple[int, str]]:
    proc = sandbox.helm("history", "shop-green", "-n", namespace, "-o", "json", check=False)
    return [(r["revision"], r["status"]) for r in json.loads(proc.stdout)] if proc.returncode == 0 else []


def interrupt_green_install(
    sandbox: Sandbox, chart: Path, namespace: str, values: dict[str, Any], tmp_path: Path
) -> None:
    """Leave green as a killed run leaves it: `helm install --wait` SIGKILLed while its pods cannot pull their
    image, so helm never writes the end of the install; then the registry heals and the stuck pods go."""
    values_file = tmp_path / "green-values.json"
    values_file.write_text(json.dumps(values))
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host()])
    argv = [str(sandbox.bins / "helm"), f"--kubeconfig={sandbox.cfg.kubeconfig}", "install", "shop-green",
            str(chart), "-n", namespace, "-f", str(values_file), "--wait", "--timeout=120s"]  # fmt: skip
    helm = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while green_history(sandbox, namespace) != [(1, "pending-install")]:
            assert time.monotonic() < deadline and helm.poll() is None, "helm never went pending-install"
            time.sleep(0.2)
        time.sleep(2)  # helm has created green's objects and waits for pods that cannot start
        assert helm.poll() is None, "helm finished before it could be interrupted"
    finally:
        helm.kill()
        helm.wait(30)
        sandbox.set_unreachable_registries([])
    client.CoreV1Api(sandbox.api_client()).delete_collection_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/instance=shop-green"
    )


def blue_values(sandbox: Sandbox, namespace: str) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(sandbox.helm("get", "values", "shop", "-n", namespace, "-o", "json").stdout)
    return values


def test_rerun_removes_its_own_interrupted_green_install_and_switches(
    sandbox: Sandbox, demo_chart: Path, namespace: str, tmp_path: Path
) -> None:
    deploy(sandbox, demo_chart, namespace, "shop", "1.0.0", "--set", "track=blue")
    ours = green_values(blue_values(sandbox, namespace), version="1.1.0", extra={})
    req = request(sandbox, demo_chart, namespace, version="1.1.0", steps=[100], timeout_seconds=20)

    # someone else's pending install (other values) is refused, with the command that clears it; nothing changes
    interrupt_green_install(sandbox, demo_chart, namespace, {**ours, "replicas": 2}, tmp_path)
    with pytest.raises(ValueError, match=r"pending-install with other values.*`helm uninstall shop-green -n "):
        blue_green(request=req, controls=CONTROLS)
    assert green_history(sandbox, namespace) == [(1, "pending-install")]
    sandbox.helm("uninstall", "shop-green", "-n", namespace)  # what the refusal says works on a pending install
    assert green_history(sandbox, namespace) == []

    # this request's own interrupted install: the plan says what is found and what will be done; nothing changes
    interrupt_green_install(sandbox, demo_chart, namespace, ours, tmp_path)
    plan = blue_green(request=req, controls=CONTROLS.model_copy(update={"plan": True}))
    assert "install of `shop-green` never finished" in plan.plan and "stuck in pending-install" in plan.plan
    assert green_history(sandbox, namespace) == [(1, "pending-install")]

    # approved: the run waits out the killed helm's --timeout, removes the stuck install, installs green again,
    # and shifts all traffic to it
    asking = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    thread, out = run_in_thread(lambda: blue_green(request=req, controls=asking))
    wait_paused()
    assert green_history(sandbox, namespace) == [(1, "pending-install")]  # untouched until approved
    answer_plan(True, "the first run was killed mid-install")
    approve_next()  # before 100%
    approve_next()  # before retiring blue
    thread.join(240)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert (result.outcome, result.stage) == ("changed", "switched"), result.summary
    # installed afresh (revision 1), then given the Ingress (revision 2): nothing pending is left behind
    assert green_history(sandbox, namespace) == [(1, "superseded"), (2, "deployed")]
    releases = json.loads(sandbox.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("shop-green", "deployed")]
    green = client.AppsV1Api(sandbox.api_client()).read_namespaced_deployment(GREEN_SERVICE, namespace)
    assert green.spec.template.spec.containers[0].image.endswith(":1.1.0")
    assert green.spec.replicas == 1  # this request's values, not the other install's
    assert ingresses(sandbox, namespace) == [GREEN_SERVICE]
    assert BLUE_SERVICE not in [d.metadata.name for d in client.AppsV1Api(sandbox.api_client())
                                .list_namespaced_deployment(namespace).items]  # fmt: skip
