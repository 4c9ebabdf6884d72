"""Never undo an undo by accident: the rule deployment-undo applies before it resolves "previous".

`kubectl rollout undo` has no memory. Right after it rolls revision 5 back to revision 3, the controller renumbers
the restored ReplicaSet to revision 6, and "previous" is revision 5 again: the bad version. A re-run of the same
undo (after the API server went away mid-wait, or its worker was killed) would therefore roll the application
back onto the version it was just rescued from.

So an undo records what it did on the Deployment it changes, next to the audit annotations (metadata only, so
the record starts no rollout): the revision it restored, the revision it came from, the hash of the template it
wrote and a fingerprint of the request. While the live template is still that template (nobody deployed since),
`rerun_verdict` decides:
- the same request again (the same target chosen the same way, whoever asks), or an explicit `to_revision`
  naming the restored revision: the change is applied; finish the job (wait for its rollout), change nothing;
- a request choosing otherwise, without an explicit revision: refused, naming `to_revision=N` as the way to go
  on purpose;
- an explicit `to_revision` naming another revision: allowed, it is a new decision.
Pure functions on API JSON, unit-tested in tests/unit/test_revisions.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from rollbook import revisions
from rollbook.change import ANNOTATION_PREFIX
from rollbook.revisions import JSON

PREFIX = ANNOTATION_PREFIX
# Detail keys passed to `rollbook.change.change_annotations`, which adds PREFIX.
TO_REVISION = "rolled-back-to-revision"
FROM_REVISION = "rolled-back-from-revision"
TEMPLATE_HASH = "rolled-back-template-hash"
REQUEST = "rollback-request"
RUN_ID = "flow-run-id"
RUN_NAME = "flow-run-name"
CHANGED_AT = "changed-at"

Verdict = Literal["proceed", "already-applied", "refuse"]


def template_hash(template: JSON) -> str:
    """A short, stable hash of a pod template as the API server compares it (hash label and empty fields
    ignored, as `revisions.equal_ignore_hash` does)."""
    canonical = json.dumps(revisions.canonical_template(template), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def request_fingerprint(fields: dict[str, Any]) -> str:
    """What makes two runs "the same request": the target and how its revision was chosen, nothing else. Who
    asks and why are left out on purpose: when the first responder's undo dies mid-wait, the colleague who runs
    it again with their own name and words wants that job finished, not a second undo onto the bad version.
    Waiting bounds, plan and approval switches are left out too: a re-run may wait longer."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_details(*, from_revision: int, to_revision: int, target_template: JSON, fingerprint: str) -> dict[str, str]:
    """The record an undo writes with its audit annotations (keys without PREFIX)."""
    return {
        TO_REVISION: str(to_revision),
        FROM_REVISION: str(from_revision),
        TEMPLATE_HASH: template_hash(target_template),
        REQUEST: fingerprint,
    }


@dataclass(frozen=True)
class RollbackRecord:
    """A rollbook rollback whose template is still the live one."""

    to_revision: int
    from_revision: int
    request: str
    run_id: str
    run_name: str
    changed_at: str

    @property
    def by(self) -> str:
        return f"run {self.run_name or '?'} ({self.run_id or 'unknown id'}) at {self.changed_at or 'an unknown time'}"


def rollback_in_place(deployment: JSON) -> RollbackRecord | None:
    """The rollbook rollback recorded on this Deployment, if its template is still live; None otherwise (no
    record, a malformed one, or a template changed since, e.g. by a new deploy that kept the annotations)."""
    notes = revisions.annotations_of(deployment)
    recorded_hash = notes.get(PREFIX + TEMPLATE_HASH)
    live = (deployment.get("spec") or {}).get("template") or {}
    if not recorded_hash or recorded_hash != template_hash(live):
        return None
    try:
        to_rev, from_rev = int(notes.get(PREFIX + TO_REVISION, "")), int(notes.get(PREFIX + FROM_REVISION, ""))
    except ValueError:
        return None
    return RollbackRecord(
        to_revision=to_rev,
        from_revision=from_rev,
        request=notes.get(PREFIX + REQUEST, ""),
        run_id=notes.get(PREFIX + RUN_ID, ""),
        run_name=notes.get(PREFIX + RUN_NAME, ""),
        changed_at=notes.get(PREFIX + CHANGED_AT, ""),
    )


@dataclass(frozen=True)
class RerunDecision:
    verdict: Verdict
    record: RollbackRecord | None
    message: str


def rerun_verdict(
    deployment: JSON, replica_sets: list[JSON], *, to_revision: int | None, fingerprint: str
) -> RerunDecision:
    """May this undo go ahead, is it already applied, or must it be refused? (See the module docstring.)"""
    record = rollback_in_place(deployment)
    if record is None:
        return RerunDecision("proceed", None, "no rollbook rollback in place")
    name = revisions.meta(deployment).get("name")
    applied = (
        f"the rollback of deployment {name!r} from revision {record.from_revision} to revision "
        f"{record.to_revision} was already applied by {record.by}"
    )
    if to_revision is not None:
        if to_revision == record.to_revision:
            return RerunDecision("already-applied", record, applied)
        return RerunDecision("proceed", record, f"explicit to_revision={to_revision} after {record.by}")
    if fingerprint and fingerprint == record.request:
        return RerunDecision("already-applied", record, applied)
    previous = _previous_revision(deployment, replica_sets)
    now = f"'previous' now means revision {previous}" if previous is not None else "'previous' is ambiguous now"
    known = ", ".join(str(r.revision) for r in revisions.history(deployment, replica_sets)) or "none"
    return RerunDecision(
        "refuse",
        record,
        f"refusing to undo deployment {name!r} without an explicit revision: {applied}, and {now} "
        f"(the revision it rolled back from), so a plain undo would undo that rollback. Nothing changed. To roll "
        f"back on purpose, pass to_revision=N (revisions: {known}; to_revision={record.from_revision} restores "
        "the version the rollback replaced)",
    )


def _previous_revision(deployment: JSON, replica_sets: list[JSON]) -> int | None:
    try:
        return revisions.revision_of(revisions.rollback_target(deployment, replica_sets, None))
    except (revisions.RollbackRefused, revisions.RevisionNotFound):
        return None
