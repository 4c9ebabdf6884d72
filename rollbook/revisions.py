"""Pure logic about a Deployment's revisions, on objects as the API server returns them (plain JSON dicts).

Nothing here talks to a cluster, so the rules that must match `kubectl rollout undo` / `rollout status`
exactly are unit-tested on their own. Objects are dicts (read with `_preload_content=False`) rather than the
client's models so a pod template is copied back field for field, including fields the client does not know.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
PROGRESS_DEADLINE_REASON = "ProgressDeadlineExceeded"
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600

# Deployment annotations a rollback keeps from the Deployment instead of taking them from the ReplicaSet:
# the same set kubectl keeps (last-applied config, revision bookkeeping, replica bookkeeping, legacy rollbackTo).
ANNOTATIONS_KEPT_FROM_DEPLOYMENT = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION_ANNOTATION,
        "deployment.kubernetes.io/revision-history",
        DESIRED_REPLICAS_ANNOTATION,
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)

# Written by rollbook on a ReplicaSet when a flow saw its rollout complete. The value starts with the
# ReplicaSet's own uid: the controller copies Deployment annotations onto new ReplicaSets, so a copy that
# travelled to another ReplicaSet (via a kubectl undo) carries a foreign uid and is ignored.
ROLLOUT_COMPLETE_ANNOTATION = "rollbook.dev/rollout-complete"


class RevisionNotFound(ValueError):
    """The requested revision is not in the Deployment's history (permanent: never retried)."""


class RollbackRefused(ValueError):
    """kubectl would refuse this rollback too (paused Deployment, no history)."""


# -- small accessors -------------------------------------------------------------------------------------------


def meta(obj: JSON) -> JSON:
    value = obj.get("metadata") or {}
    return value if isinstance(value, dict) else {}


def annotations_of(obj: JSON) -> dict[str, str]:
    return dict(meta(obj).get("annotations") or {})


def revision_of(obj: JSON) -> int:
    """The revision annotation as kubectl reads it: missing means 0; a non-number is an error."""
    value = annotations_of(obj).get(REVISION_ANNOTATION)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{kind_name(obj)} has a non-numeric revision annotation {value!r}") from None


def kind_name(obj: JSON) -> str:
    return f"{str(obj.get('kind') or 'object').lower()} {meta(obj).get('name')!r}"


def label_selector_string(selector: JSON | None) -> str:
    """A LabelSelector (matchLabels + matchExpressions) as the `labelSelector` query string."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise ValueError(f"unknown label selector operator {op!r}")
    return ",".join(parts)


def is_controlled_by(obj: JSON, owner_uid: str) -> bool:
    """True if `obj`'s controller ownerReference points at `owner_uid` (what kubectl and the controller use)."""
    return any(ref.get("controller") and ref.get("uid") == owner_uid for ref in meta(obj).get("ownerReferences") or [])


def _creation_order_key(obj: JSON) -> tuple[str, str]:
    # RFC 3339 timestamps in UTC sort correctly as strings; the name breaks ties like kubectl does.
    return (str(meta(obj).get("creationTimestamp") or ""), str(meta(obj).get("name") or ""))


# -- templates -------------------------------------------------------------------------------------------------


def _prune(value: Any) -> Any:
    """Drop None, empty maps and empty lists, as Go's `omitempty` and kubectl's semantic equality treat them."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def template_without_hash(template: JSON) -> JSON:
    """A deep copy of a pod template without the `pod-template-hash` label the controller adds to ReplicaSets."""
    result = copy.deepcopy(template or {})
    labels = (result.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return result


def canonical_template(template: JSON) -> JSON:
    """The form two templates are compared in: no hash label, no empty fields."""
    result: JSON = _prune(template_without_hash(template))
    return result


def equal_ignore_hash(a: JSON, b: JSON) -> bool:
    return bool(canonical_template(a) == canonical_template(b))


def template_images(template: JSON) -> list[str]:
    spec = template.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return [str(c.get("image")) for c in containers if c.get("image")]


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        if not value:
            return
        for key in sorted(value):
            _flatten(value[key], f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        # containers, env, ports, volumes...: keyed by name so an insertion does not shift every later index
        for item in value:
            _flatten(
                {k: v for k, v in item.items() if k != "name"} or {"name": item["name"]}, f"{path}[{item['name']}]", out
            )
    elif isinstance(value, list):
        out[path] = json.dumps(value, sort_keys=True)
    elif value is not None:
        out[path] = value


def template_diff(current: JSON, target: JSON) -> list[dict[str, Any]]:
    """Field-level differences between two pod templates (hash label ignored), e.g.
    `{"path": "spec.containers[app].image", "current": "x:1", "target": "x:2"}`; `None` means absent."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    _flatten(_prune(template_without_hash(current)), "", before)
    _flatten(_prune(template_without_hash(target)), "", after)
    return [
        {"path": path, "current": before.get(path), "target": after.get(path)}
        for path in sorted(before.keys() | after.keys())
        if before.get(path) != after.get(path)
    ]


# -- revisions -------------------------------------------------------------------------------------------------


def sort_by_creation(replica_sets: list[JSON]) -> list[JSON]:
    return sorted(replica_sets, key=_creation_order_key)


def live_replica_set(deployment: JSON, replica_sets: list[JSON]) -> JSON | None:
    """The ReplicaSet whose template is the Deployment's (the oldest one if several match, as kubectl picks)."""
    template = (deployment.get("spec") or {}).get("template") or {}
    for rs in sort_by_creation(replica_sets):
        if equal_ignore_hash((rs.get("spec") or {}).get("template") or {}, template):
            return rs
    return None


def rollback_target(deployment: JSON, replica_sets: list[JSON], to_revision: int | None) -> JSON:
    """The ReplicaSet `kubectl rollout undo [--to-revision=N]` restores.

    With a revision: the ReplicaSet carrying that revision annotation. Without: the one with the second
    highest revision among all owned ReplicaSets (old ones in creation order, then the live one), which is
    the "previous" revision even when the live template has no ReplicaSet yet.
    """
    if to_revision is not None and to_revision < 0:
        raise _revision_not_found(deployment, replica_sets, to_revision)
    live = live_replica_set(deployment, replica_sets)
    ordered = [rs for rs in sort_by_creation(replica_sets) if live is None or rs is not live]
    if live is not None:
        ordered.append(live)
    latest: tuple[int, JSON | None] = (-1, None)
    previous: tuple[int, JSON | None] = (-1, None)
    for rs in ordered:
        try:
            rev = revision_of(rs)
        except ValueError:
            continue  # kubectl skips a ReplicaSet whose revision annotation does not parse
        if to_revision:
            if rev == to_revision:
                return rs
        elif latest[0] < rev:
            previous, latest = latest, (rev, rs)
        elif previous[0] < rev:
            previous = (rev, rs)
    if to_revision:
        raise _revision_not_found(deployment, replica_sets, to_revision)
    if previous[1] is None:
        name = meta(deployment).get("name")
        raise RollbackRefused(f"no rollout history found for deployment {name!r}: nothing to roll back to")
    return previous[1]


def _revision_not_found(deployment: JSON, replica_sets: list[JSON], to_revision: int) -> RevisionNotFound:
    """kubectl's words, plus what it leaves the user to find out: which revisions do exist (older ones are
    pruned by revisionHistoryLimit) and how to pick one."""
    name = meta(deployment).get("name")
    known = ", ".join(str(r.revision) for r in history(deployment, replica_sets)) or "none"
    limit = (deployment.get("spec") or {}).get("revisionHistoryLimit")
    pruned = f"; older ones are pruned (revisionHistoryLimit {limit})" if limit is not None else ""
    return RevisionNotFound(
        f"unable to find revision {to_revision} in the history of deployment {name!r}: the revisions that exist "
        f"are {known}{pruned}; pass one of them as to_revision"
    )


def rollback_annotations(deployment: JSON, replica_set: JSON) -> dict[str, str]:
    """The Deployment's annotations after a rollback, computed as kubectl does: bookkeeping annotations stay
    from the Deployment, every other annotation comes from the ReplicaSet (so ones the RS lacks disappear)."""
    current = annotations_of(deployment)
    result = {k: v for k, v in current.items() if k in ANNOTATIONS_KEPT_FROM_DEPLOYMENT}
    result.update({k: v for k, v in annotations_of(replica_set).items() if k not in ANNOTATIONS_KEPT_FROM_DEPLOYMENT})
    return result


def rollback_patch(template: JSON, new_annotations: dict[str, str], resource_version: str | None) -> list[JSON]:
    """JSON patch restoring a template and the annotations; with a resourceVersion the API server rejects the
    patch (409 Conflict) if the Deployment changed since it was read."""
    ops: list[JSON] = []
    if resource_version:
        ops.append({"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version})
    ops.append({"op": "replace", "path": "/spec/template", "value": template_without_hash(template)})
    # "add" replaces an existing member and also works on the (rare) Deployment without any annotations.
    ops.append({"op": "add", "path": "/metadata/annotations", "value": new_annotations})
    return ops


@dataclass(frozen=True)
class Revision:
    """One row of a Deployment's rollout history."""

    revision: int
    replica_set: str
    change_cause: str
    images: list[str]
    created: str
    live: bool
    replicas: int
    available: int
    template: JSON = field(repr=False)

    def row(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "live": self.live,
            "change_cause": self.change_cause or "<none>",
            "images": ", ".join(self.images),
            "created": self.created,
            "replica_set": self.replica_set,
            "replicas": f"{self.available}/{self.replicas} available",
        }


def history(deployment: JSON, replica_sets: list[JSON]) -> list[Revision]:
    """Revisions in ascending order. As in `kubectl rollout history`, ReplicaSets without a parsable revision are
    skipped and a duplicate revision keeps the last one seen."""
    live = live_replica_set(deployment, replica_sets)
    by_revision: dict[int, Revision] = {}
    for rs in sort_by_creation(replica_sets):
        try:
            rev = revision_of(rs)
        except ValueError:
            continue
        template = template_without_hash((rs.get("spec") or {}).get("template") or {})
        status = rs.get("status") or {}
        by_revision[rev] = Revision(
            revision=rev,
            replica_set=str(meta(rs).get("name")),
            change_cause=annotations_of(rs).get(CHANGE_CAUSE_ANNOTATION, ""),
            images=template_images(template),
            created=str(meta(rs).get("creationTimestamp") or ""),
            live=rs is live,
            replicas=int((rs.get("spec") or {}).get("replicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            template=template,
        )
    return [by_revision[r] for r in sorted(by_revision)]


# -- rollout status --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutState:
    done: bool
    failed: bool
    message: str


def rollout_state(deployment: JSON) -> RolloutState:
    """`kubectl rollout status` for one Deployment read: done, failed (progress deadline), or still waiting."""
    name = meta(deployment).get("name")
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    generation = int(meta(deployment).get("generation") or 0)
    if generation > int(status.get("observedGeneration") or 0):
        return RolloutState(False, False, "waiting for the deployment spec update to be observed")
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None)
    if progressing is not None and progressing.get("reason") == PROGRESS_DEADLINE_REASON:
        return RolloutState(False, True, f"deployment {name!r} exceeded its progress deadline")
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    desired = spec.get("replicas")
    if desired is not None and updated < int(desired):
        return RolloutState(False, False, f"{updated} out of {desired} new replicas have been updated")
    if replicas > updated:
        return RolloutState(False, False, f"{replicas - updated} old replicas are pending termination")
    if available < updated:
        return RolloutState(False, False, f"{available} of {updated} updated replicas are available")
    return RolloutState(True, False, f"deployment {name!r} successfully rolled out")


def default_wait_seconds(deployment: JSON) -> int:
    """Default bound for waiting on a rollout: the progress deadline (after which the controller itself declares
    the rollout failed) plus a margin for the controller to notice and report it."""
    deadline = (deployment.get("spec") or {}).get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE_SECONDS
    return int(deadline) + 30


# -- last known good -------------------------------------------------------------------------------------------


def completion_marker(replica_set: JSON, observed_at: str) -> str:
    return f"{meta(replica_set).get('uid')} {observed_at}"


def has_valid_completion_marker(replica_set: JSON) -> bool:
    value = annotations_of(replica_set).get(ROLLOUT_COMPLETE_ANNOTATION, "")
    return bool(value) and value.split(" ", 1)[0] == meta(replica_set).get("uid")


def known_good_evidence(deployment: JSON, replica_set: JSON, live: JSON | None) -> str | None:
    """Why this ReplicaSet's revision is known to have rolled out completely, or None if that is not knowable.

    Evidence, strongest first:
    1. it is the live revision and the Deployment's rollout status is complete right now;
    2. a rollbook flow saw its rollout complete and recorded it on the ReplicaSet (uid-bound marker);
    3. it is an older ReplicaSet that is fully available right now (availableReplicas reaches the Deployment
       size it was last scaled for, and is > 0), e.g. the old side of a stuck rollout.
    A ReplicaSet scaled to zero without a marker carries no trace of having been available: not known good.
    """
    if live is not None and replica_set is live:
        return "live and rolled out" if rollout_state(deployment).done else None
    if has_valid_completion_marker(replica_set):
        return "rollout completion recorded by rollbook"
    desired = annotations_of(replica_set).get(DESIRED_REPLICAS_ANNOTATION)
    available = int((replica_set.get("status") or {}).get("availableReplicas") or 0)
    if desired is not None and desired.isdigit() and available > 0 and available >= int(desired):
        return "fully available now"
    return None


def last_known_good_candidates(deployment: JSON, replica_sets: list[JSON]) -> list[tuple[JSON, str]]:
    """ReplicaSets with evidence of a complete rollout, newest revision first, with the evidence."""
    live = live_replica_set(deployment, replica_sets)
    found: list[tuple[int, JSON, str]] = []
    for rs in replica_sets:
        try:
            rev = revision_of(rs)
        except ValueError:
            continue
        evidence = known_good_evidence(deployment, rs, live)
        if evidence is not None and rev > 0:
            found.append((rev, rs, evidence))
    found.sort(key=lambda item: item[0], reverse=True)
    return [(rs, evidence) for _, rs, evidence in found]
