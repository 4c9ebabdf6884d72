"""`kubectl rollout status` for StatefulSets and DaemonSets, as pure functions on one read (a Deployment's rules
are `rollbook.revisions.rollout_state`). Flows that change a workload's pod template wait with these.

The rules follow kubectl's status viewers: the controller must have observed the latest spec; a DaemonSet is done
when every node it schedules on runs an updated, available pod; a StatefulSet when every replica is ready and
updated (up to its partition). Only RollingUpdate has a rollout to watch: with OnDelete nothing replaces a pod
until someone deletes it, which these rules report instead of waiting for ever.
"""

from __future__ import annotations

from rollbook import revisions
from rollbook.revisions import JSON, RolloutState


def _observed(obj: JSON) -> bool:
    generation = int(revisions.meta(obj).get("generation") or 0)
    return int((obj.get("status") or {}).get("observedGeneration") or 0) >= generation


def _strategy(obj: JSON, key: str) -> str:
    return str(((obj.get("spec") or {}).get(key) or {}).get("type") or "RollingUpdate")


def daemonset_state(daemonset: JSON) -> RolloutState:
    name = revisions.meta(daemonset).get("name")
    if _strategy(daemonset, "updateStrategy") != "RollingUpdate":
        return RolloutState(False, False, f"daemonset {name!r} uses OnDelete: its pods change only when deleted")
    if not _observed(daemonset):
        return RolloutState(False, False, "waiting for the daemonset spec update to be observed")
    status = daemonset.get("status") or {}
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    if updated < desired:
        return RolloutState(False, False, f"{updated} out of {desired} new pods have been updated")
    if available < desired:
        return RolloutState(False, False, f"{available} of {desired} updated pods are available")
    return RolloutState(True, False, f"daemonset {name!r} successfully rolled out")


def statefulset_state(statefulset: JSON) -> RolloutState:
    name = revisions.meta(statefulset).get("name")
    if _strategy(statefulset, "updateStrategy") != "RollingUpdate":
        return RolloutState(False, False, f"statefulset {name!r} uses OnDelete: its pods change only when deleted")
    if not _observed(statefulset):
        return RolloutState(False, False, "waiting for the statefulset spec update to be observed")
    spec, status = statefulset.get("spec") or {}, statefulset.get("status") or {}
    replicas = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    ready = int(status.get("readyReplicas") or 0)
    if ready < replicas:
        return RolloutState(False, False, f"{ready} of {replicas} pods are ready")
    partition = int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition") or 0)
    if partition > 0:
        updated = int(status.get("updatedReplicas") or 0)
        if updated < replicas - partition:
            return RolloutState(False, False, f"{updated} of {replicas - partition} pods above the partition updated")
    elif status.get("updateRevision") != status.get("currentRevision"):
        updated = int(status.get("updatedReplicas") or 0)
        return RolloutState(False, False, f"{updated} of {replicas} pods are on the update revision")
    return RolloutState(True, False, f"statefulset {name!r} successfully rolled out")


def rollout_state(kind: str, obj: JSON) -> RolloutState:
    """The rollout of a Deployment, StatefulSet or DaemonSet, as `kubectl rollout status` would tell it."""
    if kind == "DaemonSet":
        return daemonset_state(obj)
    if kind == "StatefulSet":
        return statefulset_state(obj)
    return revisions.rollout_state(obj)
