"""Will the release's pods fit? The scheduler's arithmetic, without a cluster: pure and unit-tested.

The pre-deploy checklist lists nodes and pods (tasks/checks/capacity.py) and hands the numbers here. The rules
follow the scheduler's, so that "pass" means the pods will be placed:
- a pod's request is the sum of its containers, or its largest init container if larger, plus the pod overhead;
- a node counts only for the pods that may land on it: Ready, not cordoned (unless the pod tolerates
  `node.kubernetes.io/unschedulable`), every NoSchedule/NoExecute taint tolerated (PreferNoSchedule is a
  preference, not a refusal) and every nodeSelector label present (node affinity is not read);
- free room is allocatable minus what the pods already there request, and room spread over many nodes is not room
  for one pod (first-fit, biggest pods first).

The msgspec views below are the few fields of Node and Pod objects these rules read; tasks/listing.py decodes
API pages straight into them.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

import msgspec
from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, ConfigDict, Field

JSON = dict[str, Any]
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
HARD_EFFECTS = ("NoSchedule", "NoExecute")
# The DaemonSet controller adds these tolerations to every DaemonSet pod (pkg/controller/daemon/util).
DAEMONSET_TOLERATIONS = (
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    UNSCHEDULABLE_TAINT,
)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "ReplicaSet", "Job", "DaemonSet")

# ---------------------------------------------------------------- views of API objects (msgspec)

Quantity = str | int | float  # the API always answers strings; a rendered chart may hold plain numbers


class Condition(msgspec.Struct, frozen=True, rename="camel"):
    type: str = ""
    status: str = ""


class ObjectMeta(msgspec.Struct, frozen=True, rename="camel"):
    name: str = ""
    namespace: str = ""
    labels: dict[str, str] = {}


class Taint(msgspec.Struct, frozen=True, rename="camel"):
    key: str = ""
    value: str = ""
    effect: str = ""

    @property
    def text(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


class NodeSpec(msgspec.Struct, frozen=True, rename="camel"):
    unschedulable: bool = False
    taints: list[Taint] = []


class NodeStatus(msgspec.Struct, frozen=True, rename="camel"):
    allocatable: dict[str, str] = {}
    conditions: list[Condition] = []


class Node(msgspec.Struct, frozen=True, rename="camel"):
    metadata: ObjectMeta = ObjectMeta()
    spec: NodeSpec = NodeSpec()
    status: NodeStatus = NodeStatus()


class Resources(msgspec.Struct, frozen=True, rename="camel"):
    requests: dict[str, Quantity] = {}


class Container(msgspec.Struct, frozen=True, rename="camel"):
    resources: Resources = Resources()


class TolerationView(msgspec.Struct, frozen=True, rename="camel"):
    key: str = ""
    operator: str = ""
    value: str = ""
    effect: str = ""


class PodSpec(msgspec.Struct, frozen=True, rename="camel"):
    node_name: str = ""
    containers: list[Container] = []
    init_containers: list[Container] = []
    overhead: dict[str, Quantity] = {}
    tolerations: list[TolerationView] = []


class Pod(msgspec.Struct, frozen=True, rename="camel"):
    """What the scheduler counts against a node: where the pod runs and what its containers request."""

    metadata: ObjectMeta = ObjectMeta()
    spec: PodSpec = PodSpec()


# ---------------------------------------------------------------- quantities


@lru_cache(maxsize=4096)
def quantity(value: Quantity) -> Decimal:
    """Quantity strings repeat across thousands of pods and nodes ("100m", "128Mi"): parse each once."""
    return Decimal(parse_quantity(str(value)))


def fmt_memory(n: int) -> str:
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def pod_request(spec: PodSpec) -> tuple[int, int]:
    """The scheduler's view of a pod's request: (cpu millicores, memory bytes)."""
    out = []
    for key in ("cpu", "memory"):
        main = sum((quantity(c.resources.requests.get(key, "0")) for c in spec.containers), Decimal(0))
        init = max((quantity(c.resources.requests.get(key, "0")) for c in spec.init_containers), default=Decimal(0))
        out.append(max(main, init) + quantity(spec.overhead.get(key, "0")))
    return int(out[0] * 1000), int(out[1])


# ---------------------------------------------------------------- taints and tolerations


class Toleration(BaseModel):
    """A pod template's toleration, as the scheduler matches it against a node's taints."""

    model_config = ConfigDict(frozen=True)

    key: str = ""
    operator: Literal["Equal", "Exists", ""] = ""
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """k8s.io/api/core/v1 Toleration.ToleratesTaint: an empty key with Exists matches every taint."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return bool(self.key) and self.value == taint.value


class NodeFacts(BaseModel):
    """A node reduced to what the health and capacity checks read."""

    name: str
    ready: bool
    cordoned: bool
    cpu_m: int  # allocatable CPU, millicores
    memory: int  # allocatable memory, bytes
    pods: int
    taints: list[str] = Field(default_factory=list, description="NoSchedule/NoExecute taints, key=value:effect.")
    labels: dict[str, str] = Field(default_factory=dict, description="What a pod's nodeSelector is matched with.")


def node_facts(node: Node) -> NodeFacts:
    alloc = node.status.allocatable
    return NodeFacts(
        name=node.metadata.name,
        ready=any(c.type == "Ready" and c.status == "True" for c in node.status.conditions),
        cordoned=node.spec.unschedulable,
        cpu_m=int(quantity(alloc.get("cpu", "0")) * 1000),
        memory=int(quantity(alloc.get("memory", "0"))),
        pods=int(quantity(alloc.get("pods", "0"))),
        taints=[t.text for t in node.spec.taints if t.effect in HARD_EFFECTS],
        labels=node.metadata.labels,
    )


def parse_taint(text: str) -> Taint:
    head, _, effect = text.rpartition(":")
    key, _, value = head.partition("=")
    return Taint(key=key, value=value, effect=effect)


def refusals(node: NodeFacts, tolerations: list[Toleration], node_selector: dict[str, str] | None = None) -> list[str]:
    """Why a pod with `tolerations` (and `node_selector`) cannot be placed on `node` ([] if it can): NotReady,
    cordoned, an untolerated taint, a nodeSelector label the node lacks."""
    found = [] if node.ready else ["NotReady"]
    missing = [f"{k}={v}" for k, v in (node_selector or {}).items() if node.labels.get(k) != v]
    if missing:
        found.append(f"no label {', '.join(missing)} (nodeSelector)")
    if node.cordoned and not any(t.tolerates(Taint(UNSCHEDULABLE_TAINT, "", "NoSchedule")) for t in tolerations):
        found.append("cordoned")
    for text in node.taints:
        taint = parse_taint(text)
        if not any(t.tolerates(taint) for t in tolerations):
            found.append(f"taint {text}")
    return found


# ---------------------------------------------------------------- what the release needs


class Need(BaseModel):
    """One workload's request: `replicas` pods, each asking for cpu_m millicores and `memory` bytes.

    `surge` pods are started on top while a rolling update replaces running pods (an upgrade, not a first
    install); a `per_node` workload (DaemonSet) runs one pod on every node it may use instead of `replicas`."""

    model_config = ConfigDict(extra="forbid")

    workload: str = Field(min_length=1, max_length=300)
    replicas: int = Field(ge=0, strict=True)
    cpu_m: int = Field(ge=0, strict=True)
    memory: int = Field(ge=0, strict=True)
    surge: int = Field(default=0, ge=0, strict=True)
    per_node: bool = False
    tolerations: list[Toleration] = Field(default=[], description="The pod template's tolerations.")
    node_selector: dict[str, str] = Field(default={}, description="The pod template's nodeSelector.")


def surge(spec: JSON, replicas: int) -> int:
    """Extra pods a Deployment's rolling update starts (maxSurge, 25% by default, rounded up like Kubernetes)."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return -(-replicas * int(value[:-1]) // 100)
    return int(value)


def _tolerations(pod_spec: JSON, *, daemon: bool) -> list[Toleration]:
    found = [Toleration.model_validate(t) for t in pod_spec.get("tolerations") or [] if isinstance(t, dict)]
    if daemon:
        found += [Toleration(key=key, operator="Exists") for key in DAEMONSET_TOLERATIONS]
    return found


def release_needs(manifests: list[JSON]) -> list[Need]:
    """What the rendered chart's workloads ask for: Deployments (with their rolling-update surge),
    StatefulSets, ReplicaSets, Jobs, and DaemonSets (one pod per node they tolerate)."""
    needs = []
    for obj in manifests:
        kind = obj.get("kind")
        if kind not in WORKLOAD_KINDS:
            continue
        spec = obj.get("spec") or {}
        replicas = max(int((spec.get("parallelism", 1) if kind == "Job" else spec.get("replicas", 1)) or 0), 0)
        pod_spec = (spec.get("template") or {}).get("spec") or {}
        cpu, mem = pod_request(msgspec.convert(pod_spec, PodSpec))
        needs.append(
            Need(
                workload=f"{kind}/{(obj.get('metadata') or {}).get('name')}",
                replicas=0 if kind == "DaemonSet" else replicas,
                cpu_m=max(cpu, 0),
                memory=max(mem, 0),
                surge=max(surge(spec, replicas), 0) if kind == "Deployment" else 0,
                per_node=kind == "DaemonSet",
                tolerations=_tolerations(pod_spec, daemon=kind == "DaemonSet"),
                node_selector={str(k): str(v) for k, v in (pod_spec.get("nodeSelector") or {}).items()},
            )
        )
    return needs


# ---------------------------------------------------------------- does it fit?

NAMES_SHOWN = 20
Pods = list[tuple[str, int, int, int]]  # (workload, cpu_m, memory, index of its Need) per pod to place


class CapacityAnswer(BaseModel):
    """The capacity check's answer before it becomes a CheckResult: fits or not, why, and the numbers."""

    fits: bool
    reason: str
    evidence: dict[str, Any]


def _eligible(nodes: list[NodeFacts], needs: list[Need]) -> tuple[list[list[int]], dict[str, str]]:
    """Per need, the indexes of the nodes its pods may use; and the nodes no need may use, with the reason."""
    per_need = [
        [i for i, n in enumerate(nodes) if not refusals(n, need.tolerations, need.node_selector)] for need in needs
    ]
    probe = needs[0] if needs else Need(workload="-", replicas=0, cpu_m=0, memory=0)
    used = {i for idx in per_need for i in idx} if needs else {i for i, n in enumerate(nodes) if not refusals(n, [])}
    excluded = {
        n.name: ", ".join(refusals(n, probe.tolerations, probe.node_selector)) or "no workload may use it"
        for n in nodes
    }
    return per_need, {n.name: excluded[n.name] for i, n in enumerate(nodes) if i not in used}


def _pods(needs: list[Need], eligible: list[list[int]], *, upgrade: bool) -> Pods:
    """Every pod to place; a DaemonSet's pods are one per node it may use (placed on that node)."""
    pods: Pods = []
    for k, need in enumerate(needs):
        count = len(eligible[k]) if need.per_node else need.replicas + (need.surge if upgrade else 0)
        pods += [(need.workload, need.cpu_m, need.memory, k)] * count
    return pods


def _first_fit(room: list[list[int]], pods: Pods, needs: list[Need], eligible: list[list[int]]) -> dict[str, int]:
    """Pods per workload that fit on no node they may use: DaemonSet pods on their own node first, then the rest
    first-fit, biggest first."""
    unplaced: dict[str, int] = {}
    daemon_slots = {k: iter(eligible[k]) for k, need in enumerate(needs) if need.per_node}
    ordered = sorted(pods, key=lambda p: (not needs[p[3]].per_node, -p[2], -p[1]))
    for workload, cpu, mem, k in ordered:
        if k in daemon_slots:
            slot = next(daemon_slots[k])
            candidates = [slot] if room[slot][0] >= cpu and room[slot][1] >= mem else []
        else:
            fit = next((i for i in eligible[k] if room[i][0] >= cpu and room[i][1] >= mem), None)
            candidates = [] if fit is None else [fit]
        if not candidates:
            unplaced[workload] = unplaced.get(workload, 0) + 1
            continue
        room[candidates[0]][0] -= cpu
        room[candidates[0]][1] -= mem
    return unplaced


def _shortage(need_cpu: int, free_cpu: int, need_mem: int, free_mem: int) -> list[str]:
    short = []
    if need_cpu > free_cpu:
        short.append(f"CPU short by {need_cpu - free_cpu}m (need {need_cpu}m, free {free_cpu}m)")
    if need_mem > free_mem:
        gap, need, room = fmt_memory(need_mem - free_mem), fmt_memory(need_mem), fmt_memory(free_mem)
        short.append(f"memory short by {gap} (need {need}, free {room})")
    return short


def _named(items: dict[str, str]) -> str:
    shown = "; ".join(f"{k} ({v})" for k, v in list(items.items())[:NAMES_SHOWN])
    return shown + (f" (+{len(items) - NAMES_SHOWN} more)" if len(items) > NAMES_SHOWN else "")


def fits(
    nodes: list[NodeFacts], used: dict[str, tuple[int, int]], needs: list[Need], *, upgrade: bool = False
) -> CapacityAnswer:
    """Free room (allocatable minus `used` requests per node name) against what the release `needs`.

    `used` already leaves out the release's own running pods (they are being replaced); an `upgrade` then also
    needs room for the rolling update's surge pods. Fails when the total over the nodes the pods may use is short
    (naming the resource and by how much), when a workload may use no node at all (naming the taints), or when
    the pods do not fit node by node."""
    eligible, excluded = _eligible(nodes, needs)
    blocked = set(excluded)
    usable = [i for i, n in enumerate(nodes) if n.name not in blocked]
    room = [[n.cpu_m - used.get(n.name, (0, 0))[0], n.memory - used.get(n.name, (0, 0))[1]] for n in nodes]
    pods = _pods(needs, eligible, upgrade=upgrade)
    free_cpu = sum(max(room[i][0], 0) for i in usable)
    free_mem = sum(max(room[i][1], 0) for i in usable)
    need_cpu, need_mem = sum(p[1] for p in pods), sum(p[2] for p in pods)
    evidence: dict[str, Any] = {
        "schedulable_nodes": len(usable),
        "excluded_nodes": dict(list(excluded.items())[:NAMES_SHOWN]),
        "free_cpu_m": free_cpu,
        "free_memory": fmt_memory(free_mem),
        "need_cpu_m": need_cpu,
        "need_memory": fmt_memory(need_mem),
        "upgrade": upgrade,
        "needs": [n.model_dump() for n in needs],
    }
    nowhere = [n.workload for k, n in enumerate(needs) if not eligible[k] and not n.per_node and n.replicas]
    problems = [f"{w}: no node its pods may use: {_named(excluded)}" for w in nowhere]
    problems += _shortage(need_cpu, free_cpu, need_mem, free_mem)
    if not problems:
        unplaced = _first_fit(room, pods, needs, eligible)
        if unplaced:
            evidence["unplaced"] = unplaced
            spread = ", ".join(f"{k}: {v} pod(s)" for k, v in unplaced.items())
            problems.append(f"enough room in total but not on any single node for {spread}")
    if problems:
        return CapacityAnswer(fits=False, reason="; ".join(problems), evidence=evidence)
    reason = (
        f"needs {need_cpu}m CPU and {fmt_memory(need_mem)} memory"
        + (" (with rolling-update surge)" if upgrade else "")
        + f"; {len(usable)} schedulable node(s) have {free_cpu}m and {fmt_memory(free_mem)} free"
        + (f"; not usable: {_named(excluded)}" if excluded else "")
    )
    return CapacityAnswer(fits=True, reason=reason, evidence=evidence)
