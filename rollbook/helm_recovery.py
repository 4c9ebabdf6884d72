"""Pure rules for a re-run of a Helm rollback: a release left pending by an interrupted helm, and a rollback
that is already applied.

helm marks a release `pending-*` before it changes anything and `deployed`/`failed` when it is done; a helm
killed in between (worker lost, API server gone) leaves the pending status behind, and every later helm
command refuses with "another operation is in progress". The only way out helm's storage allows is to mark
that revision failed (what helm itself would have written) and act again. These functions decide, on plain
history rows and annotations, whether that is the case, what the evidence is, and which revision the rollback
must still reach, so a re-run finishes the job the first run started instead of reversing it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from rollbook.change import ANNOTATION_PREFIX
from rollbook.helm_releases import (
    RECOVERABLE_STATUSES,
    HelmRollbackRefused,
    RevisionInfo,
    choose_rollback_target,
    latest,
)

ROLLBACK_ACTION = "helm-rollback"
# Audit annotations the helm-rollback flow writes on the release's Deployments before and after helm runs.
TO_REVISION = ANNOTATION_PREFIX + "rolled-back-to-revision"
FROM_REVISION = ANNOTATION_PREFIX + "rollback-from-revision"
RESULT = ANNOTATION_PREFIX + "rollback-result"


class StuckRelease(BaseModel):
    """Evidence that a release is stuck in a pending state, for the refusal message and the approval form."""

    model_config = ConfigDict(frozen=True)

    release: str
    namespace: str
    revision: int
    status: str
    since: dt.datetime | None
    description: str
    last_deployed: int | None
    rollback_to: int | None  # for pending-rollback: the revision the interrupted rollback was restoring

    @property
    def secret(self) -> str:
        """The Secret in which helm stores this revision (helm's `secret` storage driver, the default)."""
        return f"sh.helm.release.v1.{self.release}.v{self.revision}"

    def age_seconds(self, now: dt.datetime) -> float | None:
        return (now - self.since).total_seconds() if self.since else None

    def evidence(self, now: dt.datetime) -> str:
        age = self.age_seconds(now)
        since = f"since {self.since:%Y-%m-%d %H:%M:%S %Z} ({age:.0f}s ago)" if self.since and age is not None else ""
        deployed = f"revision {self.last_deployed}" if self.last_deployed else "none"
        return (
            f"release {self.release!r} in namespace {self.namespace!r} is stuck in {self.status} at revision "
            f"{self.revision} {since} ({self.description or 'no description'}); last deployed revision: {deployed}"
        ).replace("  ", " ")


def stuck_release(history: Iterable[RevisionInfo], *, release: str, namespace: str) -> StuckRelease | None:
    """The evidence when the live revision is pending-install/-upgrade/-rollback, else None."""
    revisions = sorted(history, key=lambda r: r.revision)
    live = latest(revisions)
    if live.status not in RECOVERABLE_STATUSES:
        return None
    deployed = [r.revision for r in revisions if r.status == "deployed" and r.revision < live.revision]
    return StuckRelease(
        release=release,
        namespace=namespace,
        revision=live.revision,
        status=live.status,
        since=live.updated,
        description=live.description,
        last_deployed=deployed[-1] if deployed else None,
        rollback_to=live.rollback_revision if live.status == "pending-rollback" else None,
    )


def as_failed(history: Iterable[RevisionInfo], revision: int) -> list[RevisionInfo]:
    """The history as it reads once `revision` is marked failed (to choose the target before touching anything)."""
    return [r.model_copy(update={"status": "failed"}) if r.revision == revision else r for r in history]


def recovery_target(history: Iterable[RevisionInfo], stuck: StuckRelease, requested: int | None) -> RevisionInfo:
    """Where the rollback goes once the stuck revision is marked failed.

    An interrupted rollback is finished: its target, not the previous revision (which is the bad version the
    rollback was leaving). An interrupted upgrade or install goes back to the previous good revision. An
    explicit `requested` revision wins, with the usual checks.
    """
    revisions = as_failed(history, stuck.revision)
    if requested is None and stuck.rollback_to is not None:
        requested = stuck.rollback_to
    try:
        return choose_rollback_target(revisions, requested)
    except HelmRollbackRefused as exc:
        raise HelmRollbackRefused(f"after marking revision {stuck.revision} failed: {exc}") from None


class RollbackRecord(BaseModel):
    """What a rollbook rollback wrote on the release's Deployments."""

    model_config = ConfigDict(frozen=True)

    to_revision: int
    from_revision: int | None
    result: str


def rollback_record(annotations: Mapping[str, str], *, release: str) -> RollbackRecord | None:
    """The record of the last rollbook rollback of `release` on one Deployment's annotations, if any."""
    if annotations.get(ANNOTATION_PREFIX + "action") != ROLLBACK_ACTION:
        return None
    if annotations.get(ANNOTATION_PREFIX + "release") != release:
        return None
    try:
        to_revision = int(annotations[TO_REVISION])
        from_text = annotations.get(FROM_REVISION)
        from_revision = int(from_text) if from_text else None
    except (KeyError, ValueError):
        return None
    return RollbackRecord(to_revision=to_revision, from_revision=from_revision, result=annotations.get(RESULT, ""))


def _recorded_rollback(live: RevisionInfo, record: RollbackRecord | None, requested: int | None) -> bool:
    """True when `live` is helm's "Rollback to T" made by the rollback rollbook recorded (to T, from the
    revision just before it), and the request asks for T or for "previous"."""
    if record is None or live.rollback_revision is None:
        return False
    if record.to_revision != live.rollback_revision or record.from_revision != live.revision - 1:
        return False
    return requested is None or requested == live.rollback_revision


def applied_rollback(
    history: Iterable[RevisionInfo], record: RollbackRecord | None, requested: int | None
) -> RevisionInfo | None:
    """The live revision when it is a rollbook rollback already done, so a re-run must not roll back again.

    True when the live revision is deployed, helm made it as "Rollback to T", rollbook recorded a rollback to
    T starting from the revision just before it, and the request asks for T or for "previous" (which right
    after such a rollback would otherwise pick the bad version again: the undo of the undo).
    """
    live = latest(history)
    return live if live.status == "deployed" and _recorded_rollback(live, record, requested) else None


def failed_rollback_target(
    history: Iterable[RevisionInfo], record: RollbackRecord | None, requested: int | None
) -> RevisionInfo | None:
    """The revision a failed rollbook rollback was restoring, when a re-run must finish it.

    helm marks a rollback whose --wait fails (an API-server restart while it waits, pods slow to start) as a
    failed "Rollback to T". "Previous good" then skips that revision and picks the one before it: the bad
    version the rollback was leaving. When rollbook's record says it was rolling back to T from the revision
    just before the failed one, and the request asks for "previous" or for T, the target is T again.
    """
    revisions = list(history)
    live = latest(revisions)
    if live.status != "failed" or not _recorded_rollback(live, record, requested) or live.rollback_revision is None:
        return None
    try:
        return choose_rollback_target(revisions, live.rollback_revision)
    except HelmRollbackRefused:
        return None  # the target is gone from the history: the usual rule and its refusal apply


def refusal(stuck: StuckRelease, now: dt.datetime, *, target: int | None) -> str:
    """Why a rollback of a stuck release is refused without `recover_pending`, naming exactly what to run."""
    to = f"rolls back to revision {target}" if target is not None else "rolls back"
    return (
        f"{stuck.evidence(now)}. helm refuses every upgrade of this release while that revision is pending, and "
        f"a plain `helm rollback` would leave it pending in the history for good. If no helm command is still "
        f"working on it, run helm-rollback again with "
        f"request.recover_pending=true (with controls.require_approval=true to review this evidence first): it "
        f"marks revision {stuck.revision} failed in Secret {stuck.secret} and {to}, e.g. `rollbook run helm-rollback "
        f"--param request.namespace={stuck.namespace} --param request.release={stuck.release} "
        f"--param request.recover_pending=true --param controls.reason=... --param controls.requested_by=...`; "
        "nothing was changed"
    )


def too_recent(stuck: StuckRelease, now: dt.datetime, *, grace_seconds: int) -> str | None:
    """A reason to refuse recovery: the pending revision is so young that its helm may still be running."""
    age = stuck.age_seconds(now)
    if age is None or age >= grace_seconds:
        return None
    return (
        f"{stuck.evidence(now)}: it became pending only {age:.0f}s ago and a helm command may still be working on "
        f"it; wait until it is {grace_seconds}s old (request.pending_grace_seconds) or check that no helm runs; "
        "nothing was changed"
    )


# After helm's own --timeout, the time a `--rollback-on-failure` install needs to uninstall what it made.
INSTALL_CLEANUP_SECONDS = 30


def interrupted_install(history: Iterable[RevisionInfo], *, release: str, namespace: str) -> StuckRelease | None:
    """The evidence when a first install never finished: its only revision is pending-install.

    Nothing served traffic from such a release before it (there is no earlier revision), and helm-rollback has
    nothing to roll back to, so the way out is to remove it and install again, once no helm can still be at it.
    """
    revisions = list(history)
    if len(revisions) != 1:
        return None
    stuck = stuck_release(revisions, release=release, namespace=namespace)
    return stuck if stuck is not None and stuck.status == "pending-install" else None


def helm_may_still_run(stuck: StuckRelease, now: dt.datetime, *, helm_timeout_seconds: int) -> float:
    """Seconds until a helm that began the stuck revision with `--timeout helm_timeout_seconds` has certainly
    given up by itself (a killed worker can leave its helm running); the whole span when the age is unknown."""
    span = float(helm_timeout_seconds + INSTALL_CLEANUP_SECONDS)
    age = stuck.age_seconds(now)
    return span if age is None else max(0.0, span - age)


def install_refusal(stuck: StuckRelease, now: dt.datetime, *, install: bool, ours: bool, action: str) -> str | None:
    """Why `action` must not clear an interrupted first install, or None when it is this request's own.

    It is ours when the request installs (`install`) and the pending revision holds exactly the chart and values
    this request would install: a re-run of the request whose run was killed or whose helm lost the API server.
    A pending install of anything else may be a person's or another tool's helm still at work, so it is left
    alone and the refusal names the command that clears it once no helm works on it.
    """
    where = f"`helm uninstall {stuck.release} -n {stuck.namespace}`"
    if not install:
        return (
            f"{stuck.evidence(now)}: a first install never finished, so there is nothing to upgrade. Run {action} "
            f"again with request.install=true and the values of that install: it removes the interrupted install "
            f"once its helm has certainly given up, then installs anew; or, if no helm works on it, {where} removes "
            "it; nothing changed"
        )
    if not ours:
        return (
            f"{stuck.evidence(now)}, with another chart or other values than this request's: not an interrupted "
            f"run of this request, and its helm may still be at work. If no helm works on it, {where} removes it "
            "(it never finished installing), then run again; nothing changed"
        )
    return None


Recheck = Literal["gone", "finished", "stuck", "changed"]


def recheck_install(history: Iterable[RevisionInfo], stuck: StuckRelease) -> Recheck:
    """What became of an interrupted first install once its helm has certainly given up, read again just
    before acting on it: gone (its helm's --rollback-on-failure removed it), finished (revision 1 deployed after
    all), still the very same stuck revision (same revision and timestamp: safe to remove), or changed (someone
    acted on it meanwhile: never touched)."""
    revisions = sorted(history, key=lambda r: r.revision)
    if not revisions:
        return "gone"
    if len(revisions) == 1 and revisions[0].status == "deployed":
        return "finished"
    again = interrupted_install(revisions, release=stuck.release, namespace=stuck.namespace)
    return "stuck" if again == stuck else "changed"
