"""The blue/green runbook's steps under the app's lock: install and check green, hand over, retire blue.

Each function is one step of the runbook and reads the cluster again before acting (a run may wait hours for
an approval between two steps), so `blue_green` reads as the procedure.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from prefect import get_run_logger

from blocks import KubernetesCluster
from flows._canary_steps import RolloutStopped
from rollbook.change import ChangeControls, change_annotations
from rollbook.helm_recovery import StuckRelease, helm_may_still_run, interrupted_install
from rollbook.values import deep_merge
from tasks.helm_changes import upgrade_release
from tasks.helm_errors import ReleaseNotFound
from tasks.helm_release import release_history, release_status, revision_details
from tasks.kube import read_deployment
from tasks.progressive import label_release_deployments, uninstall_release
from tasks.release_workloads import annotate_release_deployments, release_pods_ready
from tasks.routers.registry import Router
from tasks.routers.tasks import hand_over_route
from tasks.webhooks import acceptance_check

ACTION = "blue-green"
ROLE_LABEL = "rollbook.dev/role"
RETIRE_DEPLOYMENT = "blue-green-retire/blue-green-retire"


class HandOverFailed(RuntimeError):
    """Green serves all traffic, but moving the Ingress to it failed; blue is kept. The message says what is
    left to do by hand."""


def live_values(cluster: KubernetesCluster, namespace: str, release: str, helm: str) -> tuple[dict[str, Any], int]:
    """The release's values and live revision, read now."""
    status = release_status(cluster, namespace, release, helm)
    return revision_details(cluster, namespace, release, status.revision, helm).values, status.revision


def green_values(blue_values: dict[str, Any], *, version: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Green runs blue's values with its own image tag, its own track and no Ingress (so it gets 0%)."""
    own = {"image": {"tag": version}, "track": "green", "ingress": {"enabled": False}}
    return deep_merge(blue_values, own, extra)


def install_green(
    cluster: KubernetesCluster,
    *,
    namespace: str,
    release: str,
    chart: str,
    values: dict[str, Any],
    version: str,
    timeout_seconds: int,
    helm: str,
) -> None:
    """helm install --wait beside blue; a failed install (helm removes it again) stops before any traffic moves."""
    installed = upgrade_release(
        cluster,
        namespace,
        release,
        chart,
        values,
        f"rollbook blue/green: green {version}",
        expected_live=None,
        install=True,
        timeout_seconds=timeout_seconds,
        helm=helm,
    )
    if not installed.succeeded:
        raise RolloutStopped(f"green_release {release!r} install failed (no traffic moved): {installed.helm_error}")


def interrupted_green(
    cluster: KubernetesCluster, *, namespace: str, release: str, values: dict[str, Any], helm: str
) -> StuckRelease | None:
    """Evidence of an earlier run's green install that never finished (killed mid-install): its only revision is
    pending-install with exactly the values this run installs. Other pending states are refused as they are
    (helm-rollback clears them); a pending install of other values is someone else's and is refused here."""
    history = release_history(cluster, namespace, release, helm, missing_ok=True)
    stuck = interrupted_install(history, release=release, namespace=namespace)
    if stuck is None:
        return None
    if revision_details(cluster, namespace, release, stuck.revision, helm).values != values:
        raise ValueError(
            f"green_release {release!r} is pending-install with other values than this run's (not an interrupted "
            f"run of this request): {stuck.evidence(dt.datetime.now(dt.UTC))}. If no helm works on it, remove it "
            f"with `helm uninstall {release} -n {namespace}` (it serves no traffic), or pick another green_release"
        )
    return stuck


def clear_interrupted_green(
    cluster: KubernetesCluster, stuck: StuckRelease, *, timeout_seconds: int, helm: str
) -> bool:
    """Remove the interrupted install of green once its helm (same request, same --timeout) has certainly given
    up; True when green must be installed again, False when that helm finished the install after all."""
    log = get_run_logger()
    ns, release = stuck.namespace, stuck.release
    now = dt.datetime.now(dt.UTC)
    wait = helm_may_still_run(stuck, now, helm_timeout_seconds=timeout_seconds)
    if wait:
        log.warning(
            "%s; waiting %.0fs until its helm (--timeout %ds) has certainly given up",
            stuck.evidence(now),
            wait,
            timeout_seconds,
        )
        time.sleep(wait)
    history = release_history(cluster, ns, release, helm, missing_ok=True)
    if not history:
        log.info("the interrupted install of %r was removed by its own helm", release)
        return True
    live = history[-1]
    if live.status == "deployed" and len(history) == 1:
        log.info("the interrupted install of %r finished after all (revision 1 deployed)", release)
        return False
    if interrupted_install(history, release=release, namespace=ns) != stuck:
        raise RolloutStopped(
            f"green_release {release!r} changed while waiting for its interrupted install to time out: now "
            f"revision {live.revision} is {live.status} (no traffic moved); check helm-history and run again"
        )
    log.warning("removing the interrupted install of %r (revision 1 pending-install, no traffic)", release)
    uninstall_release(cluster, ns, release, helm, timeout_seconds)
    return True


def check_green(
    cluster: KubernetesCluster,
    *,
    namespace: str,
    release: str,
    url: str | None,
    command: list[str] | None,
    timeout_seconds: int,
) -> str:
    """Every green pod Ready, then the acceptance check; either failing stops before any traffic moves."""
    pods = release_pods_ready(cluster, namespace, release, 30)
    if not pods.all_ready:
        raise RolloutStopped(
            f"green_release {release!r} is not Ready (no traffic moved): {'; '.join(pods.problems) or 'no pods'}"
        )
    return acceptance_check(url, command, timeout_seconds)


def hand_over(
    cluster: KubernetesCluster,
    controls: ChangeControls,
    router: Router,
    *,
    namespace: str,
    blue: str,
    green: str,
    chart: str,
    move_ingress: bool,
    timeout_seconds: int,
    helm: str,
) -> None:
    """Green takes the Ingress (and blue gives it up), the route sends to green only, the Deployments are
    labelled active / retired and annotated with who asked and why."""
    for release, enabled in ((green, True), (blue, False)) if move_ingress else ():
        values, live = live_values(cluster, namespace, release, helm)
        outcome = upgrade_release(
            cluster,
            namespace,
            release,
            chart,
            deep_merge(values, {"ingress": {"enabled": enabled}}),
            "rollbook blue/green: move the Ingress",
            expected_live=live,
            install=False,
            timeout_seconds=timeout_seconds,
            helm=helm,
        )
        if not outcome.succeeded:
            raise HandOverFailed(
                f"moving the Ingress failed at {release!r}: {outcome.helm_error}. Green still serves 100% through "
                "the canary route and blue is kept; fix the cause, then move the Ingress with helm and uninstall blue"
            )
    hand_over_route(cluster, router)  # nginx: the canary Ingress goes; Gateway API: the route sends to green only
    label_release_deployments(cluster, namespace, green, {ROLE_LABEL: "active"})
    label_release_deployments(cluster, namespace, blue, {ROLE_LABEL: "retired"})
    annotate_release_deployments(cluster, namespace, green, change_annotations(controls, ACTION, replaced=blue))
    annotate_release_deployments(
        cluster, namespace, blue, change_annotations(controls, ACTION, **{"retired-by": green})
    )


def retire_parameters(
    *, namespace: str, release: str, source: dict[str, Any], helm: str, controls: ChangeControls
) -> dict[str, Any]:
    """The parameters of the follow-up blue-green-retire run. Retiring blue was approved at this run's gate, so
    the follow-up does not ask again; its reason says which run decided it."""
    reason = f"keep window of a blue/green switch is over: {controls.reason}"[:500]
    return {
        "request": {"namespace": namespace, "release": release, "helm_executable": helm, **source},
        "controls": {"reason": reason, "requested_by": controls.requested_by},
    }


def schedule_retire(parameters: dict[str, Any], *, keep_seconds: int) -> str:
    """A follow-up run of the blue-green-retire deployment after the keep window; said plainly if it cannot be."""
    from prefect.deployments import run_deployment

    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=keep_seconds)
    try:
        run = run_deployment(RETIRE_DEPLOYMENT, parameters=parameters, scheduled_time=when, timeout=0)
    except Exception as exc:  # no such deployment on this server: keep blue and say how to retire it
        get_run_logger().warning("could not schedule %s: %s; blue is kept", RETIRE_DEPLOYMENT, exc)
        return f"kept; NOT scheduled for removal ({RETIRE_DEPLOYMENT} unavailable: {exc})"
    return f"kept until {when:%Y-%m-%d %H:%M:%S}Z (follow-up run {getattr(run, 'id', run)})"


def retire_blue(
    cluster: KubernetesCluster, *, namespace: str, blue: str, helm: str, keep_seconds: int, parameters: dict[str, Any]
) -> str:
    """Uninstall blue now, or schedule the follow-up run that does after the keep window."""
    if keep_seconds:
        return schedule_retire(parameters, keep_seconds=keep_seconds)
    return "uninstalled" if uninstall_release(cluster, namespace, blue, helm) else "already gone"


def retired_objects(cluster: KubernetesCluster, *, namespace: str, release: str, helm: str) -> list[str] | None:
    """Kind/name of every object the release's uninstall removes; None when the release is already gone.
    Refuses a release that a blue-green run did not retire: every Deployment must carry ROLE_LABEL=retired, so a
    mistyped name never uninstalls a release that serves users."""
    try:
        status = release_status(cluster, namespace, release, helm)
    except ReleaseNotFound:
        return None
    manifest = revision_details(cluster, namespace, release, status.revision, helm).manifest
    objects = [f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}" for o in manifest]
    for name in (o.split("/", 1)[1] for o in objects if o.startswith("Deployment/")):
        labels = (read_deployment(cluster, namespace, name).get("metadata") or {}).get("labels") or {}
        role = labels.get(ROLE_LABEL)
        if role != "retired":
            raise ValueError(
                f"release {release!r} in namespace {namespace!r} is not a retired blue: Deployment {name!r} has "
                f"{ROLE_LABEL}={role or '(unset)'}; blue-green-retire removes only a release a blue-green run "
                "retired (check the release field)"
            )
    return objects
