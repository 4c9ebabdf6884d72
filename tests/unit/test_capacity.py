"""The capacity arithmetic (rollbook/capacity.py): requests, surge, taints and tolerations, first-fit."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from pydantic import ValidationError

from rollbook.capacity import (
    DAEMONSET_TOLERATIONS,
    Need,
    NodeFacts,
    PodSpec,
    Taint,
    Toleration,
    fits,
    fmt_memory,
    node_facts,
    pod_request,
    refusals,
    release_needs,
)
from tasks.listing import Node, decode_page

GI = 1 << 30
MI = 1 << 20


def node(name: str, cpu_m: int, memory: int, **extra: Any) -> NodeFacts:
    return NodeFacts(
        name=name, ready=extra.pop("ready", True), cordoned=False, cpu_m=cpu_m, memory=memory, pods=110, **extra
    )


def free(*rooms: tuple[str, int, int]) -> list[NodeFacts]:
    return [node(name, cpu, mem) for name, cpu, mem in rooms]


def test_capacity_names_the_short_resource_and_by_how_much() -> None:
    needs = [Need(workload="Deployment/api", replicas=3, cpu_m=500, memory=2 * GI)]
    short = fits(free(("n1", 4000, 2 * GI), ("n2", 4000, 3 * GI)), {}, needs)
    assert not short.fits
    assert short.reason == "memory short by 1.0Gi (need 6.0Gi, free 5.0Gi)"
    cpu = fits(free(("n1", 1000, 64 * GI)), {}, needs)
    assert cpu.reason.startswith("CPU short by 500m (need 1500m, free 1000m)")


def test_capacity_room_spread_over_nodes_is_not_room_for_one_pod() -> None:
    needs = [Need(workload="Deployment/db", replicas=1, cpu_m=100, memory=4 * GI)]
    answer = fits(free(("n1", 1000, 3 * GI), ("n2", 1000, 3 * GI)), {}, needs)
    assert not answer.fits
    assert "not on any single node for Deployment/db: 1 pod(s)" in answer.reason


def test_capacity_subtracts_what_is_requested_and_ignores_overcommitted_nodes() -> None:
    needs = [Need(workload="Deployment/api", replicas=2, cpu_m=100, memory=128 * MI)]
    answer = fits(free(("full", 1000, GI), ("n2", 1000, GI)), {"full": (1500, 2 * GI)}, needs)
    assert answer.fits, answer.reason
    assert answer.evidence["free_cpu_m"] == 1000 and answer.evidence["free_memory"] == "1.0Gi"


def test_capacity_of_an_upgrade_counts_the_rolling_update_surge_only() -> None:
    # the release's running pods are already counted as free (they are replaced); the surge pods are extra
    needs = [Need(workload="Deployment/api", replicas=4, cpu_m=100, memory=GI, surge=1)]
    nodes = free(("n1", 4000, 4 * GI), ("n2", 4000, GI // 2), ("n3", 4000, GI // 2 + 100 * MI))
    assert fits(nodes, {}, needs).fits  # first install: 4 pods
    upgrade = fits(nodes, {}, needs, upgrade=True)
    assert not upgrade.fits
    assert upgrade.reason.startswith("enough room in total but not on any single node for Deployment/api: 1 pod(s)")


def test_capacity_daemonset_needs_room_on_every_node() -> None:
    needs = [Need(workload="DaemonSet/agent", replicas=0, cpu_m=200, memory=MI, per_node=True)]
    answer = fits(free(("n1", 1000, GI), ("n2", 100, GI), ("n3", 1000, GI)), {}, needs)
    assert not answer.fits
    assert answer.evidence["need_cpu_m"] == 600
    assert "DaemonSet/agent: 1 pod(s)" in answer.reason
    assert fits(free(("n1", 1000, GI), ("n3", 1000, GI)), {}, needs).fits


def test_tainted_nodes_count_only_for_pods_that_tolerate_them() -> None:
    nodes = [
        node("gpu", 8000, 32 * GI, taints=["nvidia.com/gpu=present:NoSchedule"]),
        node("drain", 8000, 32 * GI, taints=["maintenance:NoExecute"]),
        node("small", 500, GI),  # PreferNoSchedule taints are not kept by node_facts: a preference, not a refusal
    ]
    web = Need(workload="Deployment/web", replicas=2, cpu_m=400, memory=512 * MI)
    answer = fits(nodes, {}, [web])
    assert not answer.fits
    # only "small" is usable: 800m needed, 500m there, although the tainted nodes have 16 cores free
    assert answer.reason.startswith("CPU short by 300m (need 800m, free 500m)"), answer.reason
    assert answer.evidence["schedulable_nodes"] == 1
    assert answer.evidence["excluded_nodes"] == {
        "gpu": "taint nvidia.com/gpu=present:NoSchedule",
        "drain": "taint maintenance:NoExecute",
    }
    tolerant = web.model_copy(update={"tolerations": [Toleration(key="nvidia.com/gpu", operator="Exists")]})
    assert fits(nodes, {}, [tolerant]).fits
    nowhere = fits(nodes[:2], {}, [web])
    assert nowhere.reason.startswith("Deployment/web: no node its pods may use: gpu (taint nvidia.com/gpu=present")


def test_cordoned_and_not_ready_nodes_give_no_room_except_to_daemonsets_for_cordon() -> None:
    nodes = [
        NodeFacts(name="cordoned", ready=True, cordoned=True, cpu_m=4000, memory=8 * GI, pods=110),
        node("down", 4000, 8 * GI, ready=False),
        node("ok", 4000, 8 * GI),
    ]
    web = Need(workload="Deployment/web", replicas=3, cpu_m=2000, memory=GI)
    answer = fits(nodes, {}, [web])
    assert not answer.fits and answer.reason.startswith("CPU short by 2000m")
    assert answer.evidence["excluded_nodes"] == {"cordoned": "cordoned", "down": "NotReady"}
    agent = release_needs([{"kind": "DaemonSet", "metadata": {"name": "agent"}, "spec": {"template": {"spec": {}}}}])
    assert refusals(nodes[0], agent[0].tolerations) == []  # the DaemonSet controller's tolerations
    assert {t.key for t in agent[0].tolerations} == set(DAEMONSET_TOLERATIONS)


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        (Toleration(key="k", operator="Equal", value="v"), Taint("k", "v", "NoSchedule"), True),
        (Toleration(key="k", value="v"), Taint("k", "other", "NoSchedule"), False),
        (Toleration(key="k", operator="Exists", effect="NoExecute"), Taint("k", "v", "NoSchedule"), False),
        (Toleration(key="k", operator="Exists", effect="NoSchedule"), Taint("k", "v", "NoSchedule"), True),
        (Toleration(operator="Exists"), Taint("anything", "x", "NoExecute"), True),  # empty key + Exists: all
        (Toleration(value="v"), Taint("k", "v", "NoSchedule"), False),  # empty key needs Exists
        (Toleration(key="other", operator="Exists"), Taint("k", "", "NoSchedule"), False),
    ],
)
def test_toleration_matches_like_the_scheduler(toleration: Toleration, taint: Taint, tolerated: bool) -> None:
    assert toleration.tolerates(taint) is tolerated


def test_node_facts_keep_only_hard_taints() -> None:
    raw = {
        "metadata": {"name": "n1", "labels": {"a": "b"}},
        "spec": {
            "unschedulable": True,
            "taints": [
                {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
                {"key": "soft", "effect": "PreferNoSchedule"},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"},
            ],
        },
        "status": {
            "allocatable": {"cpu": "31500m", "memory": "125Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "False"}],
        },
    }
    facts = node_facts(decode_page(json.dumps({"items": [raw]}).encode(), Node)[0][0])
    assert (facts.name, facts.ready, facts.cordoned, facts.cpu_m, facts.memory) == ("n1", False, True, 31500, 125 * GI)
    assert facts.taints == ["dedicated=db:NoSchedule", "node.kubernetes.io/unreachable:NoExecute"]
    assert refusals(facts, []) == [
        "NotReady",
        "cordoned",
        "taint dedicated=db:NoSchedule",
        "taint node.kubernetes.io/unreachable:NoExecute",
    ]


def test_pod_request_counts_init_containers_and_overhead_like_the_scheduler() -> None:
    spec = {
        "containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
            {"resources": {"requests": {"cpu": "0.25", "memory": "64Mi"}}},
        ],
        "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "32Mi"}}}],
        "overhead": {"memory": "10Mi"},
    }
    assert pod_request(msgspec.convert(spec, PodSpec)) == (1000, 138 * MI)


def test_need_refuses_negative_numbers_and_coercion() -> None:
    with pytest.raises(ValidationError, match="replicas"):
        Need(workload="Deployment/a", replicas=-1, cpu_m=1, memory=1)
    with pytest.raises(ValidationError, match="memory"):
        Need(workload="Deployment/a", replicas=1, cpu_m=1, memory=-5)
    with pytest.raises(ValidationError, match="replicas"):
        Need(workload="Deployment/a", replicas=True, cpu_m=1, memory=1)
    assert Need(workload="Deployment/a", replicas=0, cpu_m=0, memory=0).replicas == 0  # a chart may request nothing


def test_memory_is_shown_in_binary_units() -> None:
    assert [fmt_memory(n) for n in (512, 2048, 48 * MI, 3 * GI // 2, -GI)] == [
        "512B",
        "2.0Ki",
        "48.0Mi",
        "1.5Gi",
        "-1.0Gi",
    ]


def test_release_needs_from_rendered_manifests() -> None:
    manifests: list[dict[str, Any]] = [
        {"kind": "Service", "metadata": {"name": "web"}},
        {
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "template": {
                    "spec": {
                        "initContainers": [{"name": "migrate", "image": "reg/migrate:1"}],
                        "containers": [
                            {"name": "web", "image": "reg/web:1", "resources": {"requests": {"memory": "1Gi"}}}
                        ],
                    }
                },
            },
        },
        {"kind": "DaemonSet", "metadata": {"name": "agent"}, "spec": {"template": {"spec": {"containers": []}}}},
        {
            "kind": "Deployment",
            "metadata": {"name": "worker"},
            "spec": {"replicas": 10, "strategy": {"rollingUpdate": {"maxSurge": 2}}, "template": {"spec": {}}},
        },
        {
            "kind": "Deployment",
            "metadata": {"name": "batch"},
            "spec": {"replicas": 10, "strategy": {"type": "Recreate"}, "template": {"spec": {}}},
        },
    ]
    assert release_needs(manifests) == [
        Need(workload="Deployment/web", replicas=3, cpu_m=0, memory=GI, surge=1),  # 25% of 3, rounded up
        Need(
            workload="DaemonSet/agent",
            replicas=0,
            cpu_m=0,
            memory=0,
            per_node=True,
            tolerations=[Toleration(key=key, operator="Exists") for key in DAEMONSET_TOLERATIONS],
        ),
        Need(workload="Deployment/worker", replicas=10, cpu_m=0, memory=0, surge=2),
        Need(workload="Deployment/batch", replicas=10, cpu_m=0, memory=0),
    ]


def test_node_selector_keeps_pods_off_nodes_without_the_labels() -> None:
    nodes = [
        node("ssd-1", 4000, 8 * GI, labels={"disk": "ssd"}),
        node("hdd-1", 64000, 256 * GI, labels={"disk": "hdd"}),
    ]
    manifests = [
        {
            "kind": "Deployment",
            "metadata": {"name": "db"},
            "spec": {"replicas": 2, "template": {"spec": {"nodeSelector": {"disk": "ssd"}, "containers": []}}},
        }
    ]
    (db,) = release_needs(manifests)
    assert db.node_selector == {"disk": "ssd"}
    answer = fits(nodes, {}, [db.model_copy(update={"cpu_m": 3000, "memory": GI})])
    assert not answer.fits and answer.reason.startswith("CPU short by 2000m (need 6000m, free 4000m)"), answer.reason
    assert answer.evidence["excluded_nodes"] == {"hdd-1": "no label disk=ssd (nodeSelector)"}
    assert fits(nodes, {}, [db.model_copy(update={"cpu_m": 1000, "memory": GI})]).fits
