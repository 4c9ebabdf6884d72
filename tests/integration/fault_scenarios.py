"""The flows' fault trials (tests/integration/faults.py runs them): for each changing flow, the cluster it starts
from, its request, its first write, the answer a person gives to a refusal, and the invariants it must end in.

Common invariants: the run either finished or failed with a reason; the cluster is on exactly one of the two
versions (never between); the change was applied once (audit annotations, ReplicaSet revisions, helm history);
nothing is left pending; a progressive rollout's lock is free at the end and its weight is 0 or gone.
`SCENARIOS` maps each flow to a factory, for benchmarks/fault_campaign.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faults import RunFlow, RunOutcome, Scenario, TrialRecord
from helm_helpers import DEPLOYMENT, RELEASE, helm_deploy, repo, target_fields
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_progressive_traffic import deploy

from rollbook import revisions
from rollbook.helm_releases import PENDING_STATUSES
from rollbook.rollout_lock import lease_name
from sandbox.cluster import Sandbox
from sandbox.observability import prometheus_url
from sandbox.registry import SandboxRegistries
from sandbox.services import wait_until

CHART = Path(__file__).resolve().parents[2] / "charts" / "demo-app"
CONTROLS = {"reason": "fault trial of a changing runbook", "requested_by": "fault-harness"}
APPROVE = {"action": "approve", "approver": "fault-harness", "reason": "the harness approves every gate"}


class _Namespaced:
    """A fresh namespace per trial, deleted afterwards."""

    flow = ""
    approve: dict[str, Any] | None = None

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.api = sandbox.api_client()
        self.core, self.apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        self.namespace = f"fault-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": self.namespace, "labels": {"rollbook.dev/test": "true"}}})

    def cleanup(self) -> None:
        try:
            self.core.delete_namespace(self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def answer(self, refused: RunOutcome, params: dict[str, Any], run: RunFlow) -> dict[str, Any] | None:
        return None

    def deployment(self, name: str) -> dict[str, Any]:
        raw = self.apps.read_namespaced_deployment(name, self.namespace, _preload_content=False)
        value: dict[str, Any] = json.loads(raw.data)
        return value

    def rolled_out(self, name: str, found: list[str]) -> dict[str, Any]:
        try:
            wait_until(lambda: revisions.rollout_state(self.deployment(name)).done, 120, f"{name} to roll out")
        except TimeoutError:
            found.append(f"deployment {name} is not rolled out and ready")
        return self.deployment(name)

    def helm_history(self, release: str) -> list[dict[str, Any]]:
        proc = self.sandbox.helm("history", release, "-n", self.namespace, "-o", "json", check=False)
        rows: list[dict[str, Any]] = json.loads(proc.stdout) if proc.returncode == 0 else []
        return rows

    def images(self, name: str) -> list[str]:
        return revisions.template_images(self.deployment(name)["spec"]["template"])


def common(record: TrialRecord) -> list[str]:
    found = []
    if not record.final.ok and not record.final.reason.strip():
        found.append("the run failed without a reason")
    if not record.final.ok:
        found.append(f"did not converge: {record.final.reason[:300]}")
    return found


# -- deployment-undo ------------------------------------------------------------------------------------------


class UndoTrial(_Namespaced):
    """A Deployment on its bad revision 2 (good revision 1 before it); minReadySeconds stretches the rollback's
    rollout so a fault at a random moment usually lands in its wait, as in a real rollout."""

    flow = "deployment-undo"

    def __init__(self, sandbox: Sandbox, *, replicas: int = 3, min_ready_seconds: int = 3) -> None:
        super().__init__(sandbox)
        registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
        self.good_image, self.bad_image = registries.image("1.0.0"), registries.image("1.1.0")
        ns = ("-n", self.namespace)
        sandbox.kubectl("create", "deployment", "web", f"--image={self.good_image}", f"--replicas={replicas}", *ns)
        sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=120s", *ns)
        sandbox.kubectl("set", "image", "deployment/web", f"demo-app={self.bad_image}", *ns)
        sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=120s", *ns)
        # set last: not a template change, so it starts no rollout, and the two above stay quick
        patch = f'{{"spec": {{"minReadySeconds": {min_ready_seconds}}}}}'
        sandbox.kubectl("patch", "deployment/web", "-p", patch, *ns)

    def params(self) -> dict[str, Any]:
        request = {"kubeconfig_path": str(self.sandbox.cfg.kubeconfig), "namespace": self.namespace}
        return {"request": {**request, "deployment": "web", "wait_timeout_seconds": 120}, "controls": CONTROLS}

    def written(self) -> bool:
        notes = self.apps.read_namespaced_deployment("web", self.namespace, _request_timeout=2).metadata.annotations
        return "rollbook.dev/rolled-back-from-revision" in (notes or {})

    def check(self, record: TrialRecord) -> list[str]:
        found = common(record)
        dep = self.rolled_out("web", found)
        image = revisions.template_images(dep["spec"]["template"])
        if image == [self.bad_image]:
            found.append("the Deployment is on the bad version (rollback missing or undone)")
        elif image != [self.good_image]:
            found.append(f"the Deployment is on neither revision's template: {image}")
        notes = revisions.annotations_of(dep)
        record_pair = (
            notes.get("rollbook.dev/rolled-back-from-revision"),
            notes.get("rollbook.dev/rolled-back-to-revision"),
        )
        if record_pair != ("2", "1"):
            found.append(f"the audit record is not the one rollback 2 -> 1: {notes}")
        if revisions.revision_of(dep) != 3:
            found.append(f"revision {revisions.revision_of(dep)} instead of 3: the template changed more than once")
        sets = self.apps.list_namespaced_replica_set(self.namespace).items
        numbers = sorted(int((rs.metadata.annotations or {}).get(revisions.REVISION_ANNOTATION, "0")) for rs in sets)
        if numbers != [2, 3]:
            found.append(f"ReplicaSet revisions {numbers} instead of [2, 3]")
        final = record.final.result or {}
        if record.final.ok and final.get("outcome") not in ("changed", "unchanged"):
            found.append(f"unexpected outcome {final.get('outcome')!r}")
        if (
            record.final.ok
            and len(record.runs) > 1
            and final.get("outcome") == "unchanged"
            and not final.get("applied_by")
        ):
            found.append("a re-run said unchanged without naming the run that applied the rollback")
        return found


# -- helm-rollback and helm-atomic-upgrade ---------------------------------------------------------------------


class _HelmTrial(_Namespaced):
    """The demo chart's release `demo`; `check_release` holds the invariants both helm flows share."""

    def check_release(self, record: TrialRecord, *, tag: str, last: str) -> list[str]:
        found = common(record)
        self.rolled_out(DEPLOYMENT, found)
        if self.images(DEPLOYMENT) != [f"{repo(self.sandbox)}:{tag}"]:
            found.append(f"the release runs {self.images(DEPLOYMENT)}, not {tag}")
        rows = self.helm_history(RELEASE)
        if not rows or rows[-1]["status"] != "deployed" or not rows[-1]["description"].startswith(last):
            found.append(f"the live revision is not a deployed {last!r}: {rows[-1:] if rows else 'no history'}")
        if pending := [r["revision"] for r in rows if r["status"] in PENDING_STATUSES]:
            found.append(f"revisions {pending} left pending")
        done = [r for r in rows if r["description"].startswith(last) and r["status"] != "failed"]
        if len(done) != 1:
            found.append(f"{len(done)} revisions {last!r} instead of one: the change was applied more than once")
        final = record.final.result or {}
        if record.final.ok and final.get("outcome") not in ("changed", "unchanged"):
            found.append(f"unexpected outcome {final.get('outcome')!r}")
        return found

    def answer(self, refused: RunOutcome, params: dict[str, Any], run: RunFlow) -> dict[str, Any] | None:
        """A release left pending by the killed helm: recover it with helm-rollback as the refusal says."""
        if "recover_pending=true" not in refused.reason:
            return None
        return {**params, "request": {**params["request"], "recover_pending": True, "pending_grace_seconds": 0}}


class HelmRollbackTrial(_HelmTrial):
    """demo 1.0.0 then 1.1.0 (the bad one); the rollback must end on 1.0.0, rolled back once."""

    flow = "helm-rollback"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        assert helm_deploy(sandbox, CHART, self.namespace, "1.0.0")
        assert helm_deploy(sandbox, CHART, self.namespace, "1.1.0")

    def params(self) -> dict[str, Any]:
        return {"request": target_fields(self.sandbox, self.namespace, timeout_seconds=60), "controls": CONTROLS}

    def written(self) -> bool:  # the intent record, written right before helm runs
        notes = self.apps.read_namespaced_deployment(DEPLOYMENT, self.namespace, _request_timeout=2).metadata
        return (notes.annotations or {}).get("rollbook.dev/rollback-result") == "started"

    def check(self, record: TrialRecord) -> list[str]:
        found = self.check_release(record, tag="1.0.0", last="Rollback to 1")
        notes = self.deployment(DEPLOYMENT)["metadata"].get("annotations") or {}
        if record.final.ok and notes.get("rollbook.dev/rollback-result") != "succeeded":
            found.append(f"the audit record says {notes.get('rollbook.dev/rollback-result')!r}, not succeeded")
        return found


class AtomicUpgradeTrial(_HelmTrial):
    """demo 1.0.0, upgraded to 1.1.0; the upgrade must end on 1.1.0, made once (a re-run adds no revision)."""

    flow = "helm-atomic-upgrade"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        assert helm_deploy(sandbox, CHART, self.namespace, "1.0.0")

    def params(self) -> dict[str, Any]:
        request = target_fields(
            self.sandbox, self.namespace, chart=str(CHART), image_tag="1.1.0", timeout_seconds=60, run_checklist=False
        )
        return {"request": request, "controls": CONTROLS}

    def written(self) -> bool:  # helm has stored the upgrade's revision
        return len(self.helm_history(RELEASE)) >= 2

    def answer(self, refused: RunOutcome, params: dict[str, Any], run: RunFlow) -> dict[str, Any] | None:
        """The upgrade's refusal of a release left pending names helm-rollback's recovery: run it as the message
        says, then the upgrade again."""
        if "recover_pending=true" not in refused.reason:
            return None
        recovery = {
            "request": {**target_fields(self.sandbox, self.namespace, timeout_seconds=60), "recover_pending": True,
                        "pending_grace_seconds": 0},
            "controls": CONTROLS,
        }  # fmt: skip
        return params if run("helm-rollback", recovery).ok else None

    def check(self, record: TrialRecord) -> list[str]:
        return self.check_release(record, tag="1.1.0", last="rollbook helm-atomic-upgrade")


# -- canary-rollout and blue-green ------------------------------------------------------------------------------


class _TrafficTrial(_Namespaced):
    """A progressive rollout: judged by the built-in nginx-ingress observer queries on the simulator's traffic."""

    app = ""

    def lock_free(self) -> bool:
        try:
            client.CoordinationV1Api(self.api).read_namespaced_lease(lease_name(self.app), self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    def answer(self, refused: RunOutcome, params: dict[str, Any], run: RunFlow) -> dict[str, Any] | None:
        """A killed run's lock: release it as the refusal says (an operator who knows the run is dead)."""
        if "kubectl delete lease" not in refused.reason:
            return None
        self.sandbox.kubectl("delete", "lease", lease_name(self.app), "-n", self.namespace)
        return params

    def canary_weight(self, ingress: str) -> int | None:
        try:
            found = client.NetworkingV1Api(self.api).read_namespaced_ingress(ingress, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return int((found.metadata.annotations or {}).get("nginx.ingress.kubernetes.io/canary-weight", "0"))

    def releases(self) -> list[str]:
        rows = json.loads(self.sandbox.helm("list", "-n", self.namespace, "-o", "json").stdout)
        return sorted(f"{r['name']}:{r['status']}" for r in rows)

    def analysis(self) -> dict[str, Any]:
        return {
            # Prometheus takes ~5 s after a restart before it scrapes again, so a 5 s blip leaves ~10 s without
            # fresh samples: analyses 10 s apart see it fail at most one of them (a 4 s interval would fail two,
            # i.e. reach threshold 2 and revert, which is what an outage that spans `threshold` analyses must do)
            "interval_seconds": 10,
            "iterations": 1,
            "threshold": 2,  # a single failed check (e.g. a Prometheus blip) is tolerated
            "step_weights": [25, 50, 100],
            # windows longer than an outage plus Prometheus's restart: a rate() over a window with fewer than two
            # samples has no data, which fails a check (as in Flagger), so a 5 s window would turn a 5 s blip into
            # two failed analyses
            "metrics": [
                {"name": "request-success-rate", "min": 99, "window": "20s"},
                {"name": "request-duration", "max": 500, "window": "20s"},
            ],
        }


class CanaryTrial(_TrafficTrial):
    """Stable `web` 1.0.0 and canary `web-next` 1.1.0 (healthy); no gates; promotion at the end. It must end
    promoted (stable on 1.1.0 upgraded once, canary route and release gone) or reverted (weight 0) with a reason
    that says why (a lasting Prometheus outage); never between."""

    flow = "canary-rollout"
    app = "web"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        deploy(sandbox, CHART, self.namespace, "web", "1.0.0")
        deploy(sandbox, CHART, self.namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false")

    def params(self) -> dict[str, Any]:
        request = {
            "kubeconfig_path": str(self.sandbox.cfg.kubeconfig),
            "namespace": self.namespace,
            "stable_release": "web",
            "canary_release": "web-next",
            "chart": str(CHART),
            "helm_executable": str(self.sandbox.bins / "helm"),
            "prometheus_url": prometheus_url(self.sandbox.cfg),
            "analysis": self.analysis(),
            "approve_before_final_step": False,
            "approve_before_promotion": False,
            "run_checklist": False,
            "timeout_seconds": 60,
        }
        return {"request": request, "controls": CONTROLS}

    def written(self) -> bool:
        return bool(self.canary_weight("web-demo-app-canary"))

    def check(self, record: TrialRecord) -> list[str]:
        found: list[str] = []
        if not record.final.ok and not record.final.reason.strip():
            found.append("the run failed without a reason")
        weight = self.canary_weight("web-demo-app-canary")
        stable = f"{repo(self.sandbox)}:1.1.0" in self.images("web-demo-app")
        outcome = (record.final.result or {}).get("outcome")
        if record.final.ok and outcome == "changed":
            if weight is not None or not stable or "web-next:deployed" in self.releases():
                found.append(f"not promoted: weight {weight}, stable new {stable}, releases {self.releases()}")
        elif weight not in (None, 0):
            found.append(f"the canary still serves {weight}% after the run ended ({outcome or 'failed'})")
        if record.final.ok and outcome not in ("changed", "reverted", "unchanged"):
            found.append(f"unexpected outcome {outcome!r}")
        if not record.final.ok:
            found.append(f"did not converge: {record.final.reason[:300]}")
        upgrades = [r for r in self.helm_history("web") if r["status"] != "failed"]
        if len(upgrades) > 2:
            found.append(f"stable has {len(upgrades)} revisions: promoted more than once")
        if not self.lock_free():
            found.append("the rollout lock is still held")
        return found


class BlueGreenTrial(_TrafficTrial):
    """Blue `shop` 1.0.0 serving; green `shop-green` 1.1.0 installed by the run, shifted 50 -> 100 with every gate
    approved; blue uninstalled. It must end switched (green alone, on 1.1.0, serving all) or with blue serving
    everything (weight 0) and a reason; never between."""

    flow = "blue-green"
    app = "shop"
    approve: dict[str, Any] | None = APPROVE

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        deploy(sandbox, CHART, self.namespace, "shop", "1.0.0", "--set", "track=blue")

    def params(self) -> dict[str, Any]:
        analysis = self.analysis()
        request = {
            "kubeconfig_path": str(self.sandbox.cfg.kubeconfig),
            "namespace": self.namespace,
            "blue_release": "shop",
            "green_release": "shop-green",
            "chart": str(CHART),
            "version": "1.1.0",
            "helm_executable": str(self.sandbox.bins / "helm"),
            "prometheus_url": prometheus_url(self.sandbox.cfg),
            "steps": [50, 100],
            "interval_seconds": analysis["interval_seconds"],
            "window_seconds": analysis["interval_seconds"],
            "threshold": analysis["threshold"],
            "metrics": analysis["metrics"],
            "acceptance_command": ["true"],
            "approval_timeout_seconds": 120,
            "run_checklist": False,
            "timeout_seconds": 60,
        }
        return {"request": request, "controls": CONTROLS}

    def written(self) -> bool:
        return any(name.startswith("shop-green:") for name in self.releases())

    def check(self, record: TrialRecord) -> list[str]:
        found: list[str] = []
        if not record.final.ok and not record.final.reason.strip():
            found.append("the run failed without a reason")
        releases = self.releases()
        weight = self.canary_weight("shop-green-demo-app")
        stage = (record.final.result or {}).get("stage")
        if record.final.ok and stage == "switched":
            if releases != ["shop-green:deployed"]:
                found.append(f"switched, but the releases are {releases}")
            elif self.images("shop-green-demo-app") != [f"{repo(self.sandbox)}:1.1.0"]:
                found.append(f"green runs {self.images('shop-green-demo-app')}")
        elif weight not in (None, 0):
            found.append(f"green still serves {weight}% beside blue after the run ended ({stage or 'failed'})")
        if not record.final.ok:
            found.append(f"did not converge: {record.final.reason[:300]}")
        if pending := [r for r in releases if not r.endswith(":deployed")]:
            found.append(f"releases not deployed: {pending}")
        if not self.lock_free():
            found.append("the rollout lock is still held")
        return found


SCENARIOS: dict[str, Callable[[Sandbox], Scenario]] = {
    "deployment-undo": UndoTrial,
    "helm-rollback": HelmRollbackTrial,
    "helm-atomic-upgrade": AtomicUpgradeTrial,
    "canary-rollout": CanaryTrial,
    "blue-green": BlueGreenTrial,
}
