"""Flows: runbooks that orchestrate tasks and never touch a system themselves.

`FLOWS` is the explicit registry the CLI runs from and deployments are built from; add new flows here.
"""

from typing import Any

from prefect import Flow

import rollbook  # noqa: F401  (installs log redaction)
from flows.atomic_upgrade import atomic_upgrade
from flows.blue_green import blue_green, blue_green_retire
from flows.canary_rollout import canary_rollout
from flows.demo import HelloRequest, hello_cluster
from flows.deployment_undo import deployment_undo
from flows.helm_rollback import helm_rollback
from flows.last_known_good import last_known_good
from flows.predeploy_checklist import predeploy_checklist
from flows.rollback_rehearsal import rollback_rehearsal
from flows.rollout_history import rollout_history

FLOWS: dict[str, Flow[..., Any]] = {
    "hello-cluster": hello_cluster,
    "rollout-history": rollout_history,
    "deployment-undo": deployment_undo,
    "last-known-good": last_known_good,
    "helm-rollback": helm_rollback,
    "helm-atomic-upgrade": atomic_upgrade,
    "rollback-rehearsal": rollback_rehearsal,
    "predeploy-checklist": predeploy_checklist,
    "canary-rollout": canary_rollout,
    "blue-green": blue_green,
    "blue-green-retire": blue_green_retire,
}

__all__ = [
    "FLOWS",
    "HelloRequest",
    "atomic_upgrade",
    "blue_green",
    "blue_green_retire",
    "canary_rollout",
    "deployment_undo",
    "hello_cluster",
    "helm_rollback",
    "last_known_good",
    "predeploy_checklist",
    "rollback_rehearsal",
    "rollout_history",
]
