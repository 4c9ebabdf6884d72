"""Pure logic about Helm releases: which revision to roll back to, and what a change would alter.

Nothing here runs helm or talks to a cluster, so every rule can be unit-tested on plain data; the tasks in
`tasks/helm_release.py` and `tasks/helm_changes.py` fetch the data and the flows combine both. Reports are
rendered in `rollbook/reports/helm.py`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

# A revision whose manifests were once fully applied and reported healthy by helm.
GOOD_STATUSES = frozenset({"deployed", "superseded"})
# Another helm operation is running (or died half-way): nothing may be started on top of it.
PENDING_STATUSES = frozenset({"pending-install", "pending-upgrade", "pending-rollback", "uninstalling"})
# Pending states an interrupted helm leaves behind that a rollback can clear (an uninstall is not rolled back).
RECOVERABLE_STATUSES = frozenset({"pending-install", "pending-upgrade", "pending-rollback"})
_ROLLBACK_DESCRIPTION = re.compile(r"^Rollback to (\d+)\b")

# Value paths whose contents must never reach a report, a log or an approval form.
_SENSITIVE_KEY = re.compile(r"(password|passwd|secret|token|api[-_]?key|credential|private[-_]?key)", re.IGNORECASE)
MASK = "***"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


class RevisionInfo(BaseModel):
    """One line of `helm history`."""

    model_config = ConfigDict(frozen=True)

    revision: int
    status: str
    chart: str = ""
    app_version: str = ""
    description: str = ""
    updated: dt.datetime | None = None
    rollback_revision: int | None = None  # the revision a rollback restored (helm's "Rollback to N")


class HelmRollbackRefused(ValueError):
    """The request cannot be honoured as asked; nothing was changed."""


def parse_helm_time(value: Any) -> dt.datetime | None:
    """helm's timestamps (RFC 3339 with nanoseconds) as aware datetimes; None when absent or unreadable."""
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    head, dot, tail = text.partition(".")  # helm prints nanoseconds; Python parses at most microseconds
    if dot:
        digits = tail[: len(tail) - len(tail.lstrip("0123456789"))]
        text = f"{head}.{digits[:6]}{tail[len(digits) :]}"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def revision_from_helm(raw: Mapping[str, Any]) -> RevisionInfo:
    """One row of `helm history -o json`; the rollback target comes from helm's own "Rollback to N"."""
    description = str(raw.get("description", ""))
    restored = raw.get("rollback_revision")
    if restored is None and (match := _ROLLBACK_DESCRIPTION.match(description)):
        restored = int(match.group(1))
    return RevisionInfo(
        revision=int(raw["revision"]),
        status=str(raw.get("status", "unknown")),
        chart=str(raw.get("chart", "")),
        app_version=str(raw.get("app_version", "")),
        description=description,
        updated=parse_helm_time(raw.get("updated")),
        rollback_revision=restored,
    )


def latest(history: Iterable[RevisionInfo]) -> RevisionInfo:
    """The live revision: the newest one, whatever its status (helm status reports the same one)."""
    revisions = list(history)
    if not revisions:
        raise HelmRollbackRefused("the release has no revisions")
    return max(revisions, key=lambda r: r.revision)


def previous_good(history: Iterable[RevisionInfo]) -> RevisionInfo | None:
    """The newest revision before the live one that once ran successfully; failed/pending ones are skipped."""
    revisions = sorted(history, key=lambda r: r.revision)
    if not revisions:
        return None
    live = revisions[-1].revision
    for candidate in reversed(revisions):
        if candidate.revision < live and candidate.status in GOOD_STATUSES:
            return candidate
    return None


def choose_rollback_target(history: Iterable[RevisionInfo], requested: int | None) -> RevisionInfo:
    """The revision to roll back to, or HelmRollbackRefused saying why there is none.

    With `requested` None this is the previous good revision (not blindly live-1). An explicit revision must
    exist, must not be the live one, and must have run successfully once.
    """
    revisions = sorted(history, key=lambda r: r.revision)
    live = latest(revisions)
    if live.status in PENDING_STATUSES:
        raise HelmRollbackRefused(
            f"revision {live.revision} is {live.status}: another helm operation is in progress or was interrupted"
        )
    if requested is None:
        target = previous_good(revisions)
        if target is None:
            statuses = ", ".join(f"{r.revision}={r.status}" for r in revisions)
            raise HelmRollbackRefused(
                f"no deployed or superseded revision before live revision {live.revision} ({statuses})"
            )
        return target
    if requested < 1:
        raise HelmRollbackRefused(f"revision must be >= 1, got {requested}")
    by_number = {r.revision: r for r in revisions}
    if requested not in by_number:
        known = ", ".join(str(r.revision) for r in revisions)
        raise HelmRollbackRefused(f"revision {requested} is not in the release history (known: {known})")
    if requested == live.revision:
        raise HelmRollbackRefused(f"revision {requested} is the live revision; rolling back to it would change nothing")
    target = by_number[requested]
    if target.status not in GOOD_STATUSES:
        raise HelmRollbackRefused(f"revision {requested} is {target.status}, not a revision that ever ran successfully")
    return target


def set_path(values: dict[str, Any], dotted: str, value: Any) -> None:
    """`set_path(v, "image.tag", "1.1.0")` like helm's --set, but on a dict (no escaping rules to get wrong)."""
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ValueError(f"empty value path {dotted!r}")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"image": {"tag": "1"}} -> {"image.tag": "1"}; lists stay whole (a list is one value to helm)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def _shown(path: str, value: Any) -> Any:
    return MASK if value is not None and _SENSITIVE_KEY.search(path) else value


class ValueChange(BaseModel):
    path: str
    before: Any = None
    after: Any = None
    change: str  # added | removed | changed


def values_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[ValueChange]:
    """Leaf-level differences between two sets of values, secrets masked."""
    old, new = flatten(before), flatten(after)
    changes = []
    for path in sorted(set(old) | set(new)):
        if path not in new:
            changes.append(ValueChange(path=path, before=_shown(path, old[path]), change="removed"))
        elif path not in old:
            changes.append(ValueChange(path=path, after=_shown(path, new[path]), change="added"))
        elif old[path] != new[path]:
            changes.append(
                ValueChange(path=path, before=_shown(path, old[path]), after=_shown(path, new[path]), change="changed")
            )
    return changes


def parse_manifest(manifest: str) -> list[dict[str, Any]]:
    """The objects of a rendered manifest (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(manifest or "") if isinstance(doc, dict)]


def _resource_id(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def workload_images(docs: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """'Deployment/web' -> its container images (init containers included), from rendered manifests."""
    images: dict[str, list[str]] = {}
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        pod_spec = (((doc.get("spec") or {}).get("template") or {}).get("spec")) or {}
        containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
        images[_resource_id(doc)] = [str(c.get("image", "")) for c in containers]
    return images


class ImageChange(BaseModel):
    workload: str
    before: list[str]
    after: list[str]


def image_changes(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]) -> list[ImageChange]:
    old, new = workload_images(before), workload_images(after)
    return [
        ImageChange(workload=w, before=old.get(w, []), after=new.get(w, []))
        for w in sorted(set(old) | set(new))
        if old.get(w, []) != new.get(w, [])
    ]


def manifest_changes(
    before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]], max_lines: int = 200
) -> list[str]:
    """Unified diff lines of the objects that differ; Secret contents are never shown, only that they change."""
    old = {_resource_id(d): d for d in before}
    new = {_resource_id(d): d for d in after}
    lines: list[str] = []
    for rid in sorted(set(old) | set(new)):
        a, b = old.get(rid), new.get(rid)
        if a == b:
            continue
        if rid.startswith("Secret/"):
            lines.append(f"~ {rid}: {'added' if a is None else 'removed' if b is None else 'changed'} (content hidden)")
            continue
        a_text = yaml.safe_dump(a, sort_keys=True).splitlines() if a is not None else []
        b_text = yaml.safe_dump(b, sort_keys=True).splitlines() if b is not None else []
        lines.extend(difflib.unified_diff(a_text, b_text, f"{rid} (live)", f"{rid} (new)", lineterm="", n=2))
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... {len(lines) - max_lines} more diff line(s) not shown"]
    return lines


def already_live(
    live: RevisionInfo | None,
    *,
    live_chart: str,
    live_values: Mapping[str, Any],
    live_manifest: Iterable[Mapping[str, Any]],
    chart: str,
    values: Mapping[str, Any],
    manifest: Iterable[Mapping[str, Any]],
) -> bool:
    """Is the deployed revision already this chart with these values and objects? Then an upgrade would only add
    a revision that changes nothing: typically a re-run of an upgrade whose first run finished helm's work and was
    then lost (worker killed, API server away while it reported). helm itself would happily apply it twice."""
    return (
        live is not None
        and live.status == "deployed"
        and live_chart == chart
        and not values_changes(live_values, values)
        and not manifest_changes(live_manifest, manifest)
    )
