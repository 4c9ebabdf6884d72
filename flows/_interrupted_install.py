"""helm-atomic-upgrade's steps for a first install that never finished (revision 1 left pending-install).

The rule, in `rollbook.helm_recovery`: such a release is cleared only when the request installs and the
pending revision holds exactly this request's chart and values (a re-run of the request that was interrupted),
only once a helm that began it with this request's `--timeout` has certainly given up, only under the app's
rollout lock (no other rollbook run clears or installs it meanwhile), and only if a fresh read just before
still shows that very revision (same timestamp). Then `helm uninstall --wait` removes it and the flow installs
anew. Anything else is refused with its evidence and the command that clears it by hand.
"""

from __future__ import annotations

import datetime as dt
import time

from prefect import get_run_logger

from blocks import KubernetesCluster
from rollbook.helm_recovery import Recheck, StuckRelease, helm_may_still_run, install_refusal, recheck_install
from tasks.helm_release import RenderedUpgrade, release_history, revision_details
from tasks.progressive import uninstall_release


class InterruptedInstallChanged(RuntimeError):
    """The interrupted install changed while the run waited for its helm to give up: left as it is."""


def refuse_unless_installing(stuck: StuckRelease | None, *, install: bool, action: str) -> None:
    """A release whose first install never finished has nothing to upgrade: only a request that installs may
    clear it (ValueError, nothing changed)."""
    if stuck is not None and not install:
        raise ValueError(install_refusal(stuck, dt.datetime.now(dt.UTC), install=False, ours=False, action=action))


def own_interrupted_install(
    cluster: KubernetesCluster,
    stuck: StuckRelease,
    *,
    install: bool,
    rendered: RenderedUpgrade,
    values: dict[str, object],
    action: str,
    helm: str,
) -> None:
    """Raise ValueError (nothing changed) unless the interrupted install is this request's own: same chart, same
    values, and the request installs."""
    ours = False
    if install:
        details = revision_details(cluster, stuck.namespace, stuck.release, stuck.revision, helm)
        ours = details.chart == rendered.chart and details.values == values
    refused = install_refusal(stuck, dt.datetime.now(dt.UTC), install=install, ours=ours, action=action)
    if refused:
        raise ValueError(refused)


def clear_interrupted_install(
    cluster: KubernetesCluster, stuck: StuckRelease, *, timeout_seconds: int, helm: str
) -> Recheck:
    """Wait until the interrupted install's helm has certainly given up, read the release again, and remove
    it when it is still that very revision. Returns what was found: "stuck" (now removed), "gone", "finished"
    (its helm completed the install after all); raises InterruptedInstallChanged when someone acted on it."""
    log = get_run_logger()
    wait = helm_may_still_run(stuck, dt.datetime.now(dt.UTC), helm_timeout_seconds=timeout_seconds)
    if wait:
        log.warning(
            "%s; waiting %.0fs until its helm (--timeout %ds) has certainly given up",
            stuck.evidence(dt.datetime.now(dt.UTC)),
            wait,
            timeout_seconds,
        )
        time.sleep(wait)
    history = release_history(cluster, stuck.namespace, stuck.release, helm, missing_ok=True)
    found = recheck_install(history, stuck)
    if found == "changed":
        live = history[-1]
        raise InterruptedInstallChanged(
            f"release {stuck.release!r} in {stuck.namespace!r} changed while waiting for its interrupted install to "
            f"time out: revision {live.revision} is now {live.status} ({live.description or 'no description'}); "
            "it was left as it is. Check `helm history` (helm-history) and run again; nothing changed"
        )
    if found == "stuck":
        log.warning("removing the interrupted first install of %r (revision 1 pending-install)", stuck.release)
        uninstall_release(cluster, stuck.namespace, stuck.release, helm, timeout_seconds)
    elif found == "gone":
        log.info("the interrupted install of %r was removed by its own helm", stuck.release)
    else:
        log.info("the interrupted install of %r finished after all (revision 1 deployed)", stuck.release)
    return found
