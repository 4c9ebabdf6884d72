"""Flows: runbooks that orchestrate tasks and never touch a system themselves.

`CATALOGUE` is the one list of runbooks: `FLOWS` (what `rollbook run` runs), `rollbook serve`'s deployments
(deployments/) and prefect.yaml (generated: `rollbook catalogue --write prefect.yaml`) all come from it. A new flow
is one `CatalogueEntry` here, then regenerate prefect.yaml (tests/unit/test_prefect_yaml.py checks it).
"""

from dataclasses import dataclass
from typing import Any

from prefect import Flow

import rollbook  # noqa: F401  (installs log redaction)
import tasks  # noqa: F401  (before any flow module: state messages, results and artifacts are scrubbed too)
from flows.atomic_upgrade import atomic_upgrade
from flows.backup_retention import backup_retention
from flows.blue_green import blue_green, blue_green_retire
from flows.canary_rollout import canary_rollout
from flows.demo import HelloRequest, hello_cluster
from flows.deployment_undo import deployment_undo
from flows.dr_drill import dr_drill
from flows.etcd_restore import etcd_restore
from flows.etcd_snapshot import etcd_snapshot
from flows.expand_contract import expand_contract
from flows.helm_history import helm_history
from flows.helm_rollback import helm_rollback
from flows.image_prepull import image_prepull
from flows.image_trust_failure import image_trust_failure
from flows.last_known_good import last_known_good
from flows.migration_failure import migration_failure
from flows.predeploy_checklist import predeploy_checklist
from flows.registry_outage import registry_outage
from flows.rollback_rehearsal import rollback_rehearsal
from flows.rollout_history import rollout_history
from flows.velero_backup import velero_backup
from flows.velero_restore import velero_restore


@dataclass(frozen=True)
class CatalogueEntry:
    """One runbook as every surface lists it; its name is the flow's own, so the two can never disagree."""

    flow: Flow[..., Any]
    description: str  # one line, shown by the Prefect UI for the deployment
    tags: tuple[str, ...]
    # At most one run of the deployment at a time: a run that would overlap the one in progress (a schedule
    # firing while the last snapshot still uploads) is cancelled by the server instead of running twice.
    exclusive: bool = False

    @property
    def name(self) -> str:
        return self.flow.name


CATALOGUE: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(hello_cluster, "Check that a cluster answers: version and pod count.", ("demo",)),
    CatalogueEntry(
        rollout_history,
        "Revisions of a Deployment: change-cause, images, created, which one is live.",
        ("rollback", "read-only"),
    ),
    CatalogueEntry(
        deployment_undo,
        "Undo a Deployment to its previous, a chosen or the last known good revision (kubectl semantics).",
        ("rollback",),
    ),
    CatalogueEntry(
        last_known_good,
        "The newest Deployment revision known to have rolled out (optionally with verified images).",
        ("rollback", "read-only"),
    ),
    CatalogueEntry(
        helm_history,
        "Revisions of a Helm release: status, chart, app version, description, which one is deployed.",
        ("rollback", "helm", "read-only"),
    ),
    CatalogueEntry(
        helm_rollback,
        "Roll a Helm release back to its previous good revision (or a chosen one), then verify.",
        ("rollback", "helm"),
    ),
    CatalogueEntry(
        atomic_upgrade, "Upgrade a Helm release; on failure helm rolls back and the run says why.", ("deploy", "helm")
    ),
    CatalogueEntry(
        rollback_rehearsal,
        "Drill: deploy v1, upgrade to v2, roll back, verify, in a scratch namespace.",
        ("drill", "helm"),
    ),
    CatalogueEntry(
        predeploy_checklist,
        "Pre-deploy checklist: every check concurrently, one verdict; fails when a required check fails.",
        ("deploy", "read-only"),
    ),
    CatalogueEntry(
        canary_rollout,
        "Shift traffic to a canary in steps with metric analysis; revert automatically, approve before 100%.",
        ("deploy", "progressive"),
    ),
    CatalogueEntry(
        blue_green,
        "Install green beside blue, check it, shift traffic with analysis, retire blue.",
        ("deploy", "progressive"),
    ),
    CatalogueEntry(
        blue_green_retire, "Remove a retired blue release after its keep window.", ("deploy", "progressive")
    ),
    # database-safe releases (issue 14)
    CatalogueEntry(
        expand_contract,
        "Expand/contract a schema change: expand, deploy dual-read code, backfill, observe, approve, contract.",
        ("deploy", "database"),
    ),
    CatalogueEntry(
        migration_failure,
        "Migration failed: pause, roll back to schema-compatible code, downgrade when possible, capture evidence.",
        ("recovery", "database"),
    ),
    # incidents (issue 15): an alert or a person starts them while pods cannot pull
    CatalogueEntry(
        registry_outage,
        "Registry down: move stuck workloads to a verified mirror by digest, then back once it recovers.",
        ("recovery", "registry"),
    ),
    CatalogueEntry(
        image_trust_failure,
        "cosign failed: outage or trust? Try the mirror, fall back to the last signed good image, tell security.",
        ("recovery", "registry", "security"),
    ),
    # prevention (issue 15): keep the images on every node before the registry goes down
    CatalogueEntry(
        image_prepull,
        "Keep chosen Deployments' images on every node with a pre-pull DaemonSet, before a registry outage.",
        ("prevention", "registry"),
    ),
    # full-cluster recovery (issue 11): scheduled snapshots and retention never overlap their previous run
    CatalogueEntry(
        etcd_snapshot,
        "Snapshot etcd over TLS, verify it, record the inventory, upload it with its manifest to S3.",
        ("backup", "etcd"),
        exclusive=True,
    ),
    CatalogueEntry(
        velero_backup,
        "Back up namespaces with a Velero Backup (labels, resources, TTL), wait for it, surface errors/warnings.",
        ("backup", "velero"),
    ),
    CatalogueEntry(
        velero_restore,
        "Restore namespaces from a named or the newest Completed Velero backup (optionally mapped), then verify.",
        ("restore", "velero"),
    ),
    CatalogueEntry(
        backup_retention,
        "Delete etcd snapshots no keep-last/hourly/daily/weekly rule keeps; never the newest verified one.",
        ("backup", "etcd"),
        exclusive=True,
    ),
    CatalogueEntry(
        etcd_restore,
        "Full cluster restore from a verified etcd snapshot: approve, stop, restore, restart, verify.",
        ("recovery", "etcd"),
    ),
    CatalogueEntry(
        dr_drill,
        "DR drill: snapshot, disaster (namespaces deleted or etcd lost), restore, verify, scored report.",
        ("drill", "recovery", "etcd"),
        exclusive=True,
    ),
)

FLOWS: dict[str, Flow[..., Any]] = {entry.name: entry.flow for entry in CATALOGUE}

__all__ = [
    "CATALOGUE",
    "FLOWS",
    "CatalogueEntry",
    "HelloRequest",
    "atomic_upgrade",
    "blue_green",
    "blue_green_retire",
    "canary_rollout",
    "deployment_undo",
    "hello_cluster",
    "helm_history",
    "helm_rollback",
    "image_trust_failure",
    "image_prepull",
    "last_known_good",
    "predeploy_checklist",
    "registry_outage",
    "rollback_rehearsal",
    "rollout_history",
    "etcd_snapshot",
    "expand_contract",
    "migration_failure",
    "backup_retention",
    "etcd_restore",
    "dr_drill",
]
