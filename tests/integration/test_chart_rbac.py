"""charts/rollbook on the sandbox: `helm lint --strict`, a server-side dry run, and its least-privilege RBAC
proven with a token of the chart's ServiceAccount through the worker's own kubeconfig (tokenFile): helm-rollback
and deployment-undo succeed in a granted namespace; writes outside the grant (another namespace, cluster scope,
RBAC itself) get 403 and change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helm_helpers import CONTROLS, DEPLOYMENT, helm_deploy, image, repo
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flows.deployment_undo import UndoRequest, deployment_undo
from flows.helm_rollback import HelmRollbackRequest, helm_rollback
from rollbook.revisions import ROLLOUT_COMPLETE_ANNOTATION
from sandbox.cluster import Sandbox

CHART = Path(__file__).resolve().parents[2] / "charts" / "rollbook"
RELEASE = "rb"
SERVICE_ACCOUNT = "rb-rollbook"


def chart_args(granted: str) -> list[str]:
    return ["--set", f"namespaces={{{granted}}}", "--set", "rbac.helm=true", "--set", "webhook.tokenSecret.name=tok"]


def test_the_chart_lints_strictly_and_passes_a_server_side_dry_run(sandbox: Sandbox, namespace: str) -> None:
    lint = sandbox.helm("lint", "--strict", str(CHART), *chart_args(namespace), check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dry = sandbox.helm("install", RELEASE, str(CHART), "-n", namespace, "--dry-run=server", *chart_args(namespace),
                       check=False)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "kind: Role" in dry.stdout and "rollbook, webhook" in dry.stdout
    refused = sandbox.helm("template", RELEASE, str(CHART), check=False)  # no token Secret named
    assert refused.returncode != 0 and "webhook.tokenSecret.name" in refused.stderr


@pytest.fixture
def granted(sandbox: Sandbox, namespace: str, tmp_path: Path) -> str:
    """The chart's RBAC installed for `namespace` (the release lives there too), and the worker's own kubeconfig
    from the chart with only the in-cluster locations replaced: the sandbox's API server and CA, and a file
    holding a token minted for the chart's ServiceAccount where the pod's projected token would be."""
    sandbox.helm("install", RELEASE, str(CHART), "-n", namespace, "--set", "webhook.enabled=false",
                 *chart_args(namespace))  # fmt: skip
    minted = yaml.safe_load(sandbox.service_account_kubeconfig(namespace, SERVICE_ACCOUNT).read_text())
    token = tmp_path / "token"
    token.write_text(minted["users"][0]["user"]["token"])
    shipped = client.CoreV1Api(sandbox.api_client()).read_namespaced_config_map(
        f"{RELEASE}-rollbook-kubeconfig", namespace
    )
    text = (
        shipped.data["config"]
        .replace("https://kubernetes.default.svc", sandbox.cfg.api_url)
        .replace("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", str(sandbox.pki.ca))
        .replace("/var/run/secrets/kubernetes.io/serviceaccount/token", str(token))
    )
    assert "tokenFile" in text and minted["users"][0]["user"]["token"] not in text
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    return str(path)


def test_the_service_account_rolls_back_in_its_namespace_and_nowhere_else(
    sandbox: Sandbox, apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, demo_chart: Path, granted: str
) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.1.0")
    assert helm_deploy(sandbox, demo_chart, namespace, "1.2.0")
    helm = str(sandbox.bins / "helm")
    target = {"kubeconfig_path": granted, "namespace": namespace, "release": "demo", "helm_executable": helm}
    result = helm_rollback(HelmRollbackRequest(**target, timeout_seconds=60), CONTROLS)
    assert result.outcome == "changed" and image(apps, namespace) == f"{repo(sandbox)}:1.1.0"
    undo = UndoRequest(kubeconfig_path=granted, namespace=namespace, deployment=DEPLOYMENT, to_revision=2,
                       wait_timeout_seconds=60)  # fmt: skip
    undone = deployment_undo(undo, CONTROLS)
    assert undone.outcome == "changed" and image(apps, namespace) == f"{repo(sandbox)}:1.2.0"
    evidence = [
        rs.metadata.annotations.get(ROLLOUT_COMPLETE_ANNOTATION)
        for rs in apps.list_namespaced_replica_set(namespace).items
        if rs.spec.template.spec.containers[0].image.endswith(":1.2.0")
    ]
    assert evidence and evidence[0], "the completed rollout was not recorded on its ReplicaSet"  # fmt: skip

    # the same token outside the grant: 403 for every write, and nothing changed
    other = f"{namespace[:50]}-other"
    core.create_namespace({"metadata": {"name": other}})
    try:
        apps.create_namespaced_deployment(other, _deployment("victim"))
        limited = client.AppsV1Api(config.new_client_from_config(config_file=granted))
        limited_core = client.CoreV1Api(limited.api_client)
        limited_rbac = client.RbacAuthorizationV1Api(limited.api_client)
        attempts = {
            "patch a Deployment elsewhere": lambda: limited.patch_namespaced_deployment(
                "victim", other, {"spec": {"replicas": 5}}),
            "delete a Deployment it may patch": lambda: limited.delete_namespaced_deployment(DEPLOYMENT, namespace),
            "delete its namespace": lambda: limited_core.delete_namespace(namespace),
            "create a namespace": lambda: limited_core.create_namespace({"metadata": {"name": f"{other}-x"}}),
            "grant itself a Role": lambda: limited_rbac.create_namespaced_role(namespace, {
                "metadata": {"name": "more"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
            "read Secrets elsewhere": lambda: limited_core.list_namespaced_secret(other),
            "list nodes (cluster reads off)": lambda: limited_core.list_node(),
        }  # fmt: skip
        for what, attempt in attempts.items():
            with pytest.raises(ApiException) as info:
                attempt()
            assert info.value.status == 403, what
        assert apps.read_namespaced_deployment("victim", other).spec.replicas == 1
        assert apps.read_namespaced_deployment(DEPLOYMENT, namespace).metadata.deletion_timestamp is None
        assert core.read_namespace(namespace).status.phase == "Active"
    finally:
        core.delete_namespace(other)


def _deployment(name: str) -> dict[str, object]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}},
        },
    }
