"""The pre-deploy checklist as the first gate of a progressive rollout (canary-rollout, blue-green).

The `predeploy-checklist` flow runs as a subflow on the release the rollout will deploy, with the values it will
deploy; its failed verdict (ChecklistFailed) ends the run before any traffic, release or route is touched.
"""

from __future__ import annotations

from typing import Any

from flows._traffic_source import TrafficSource
from flows.predeploy_checklist import ChecklistFailed as ChecklistFailed  # re-exported: callers catch it from here
from flows.predeploy_checklist import ChecklistRequest, predeploy_checklist


def checklist_gate(
    source: TrafficSource, *, namespace: str, release: str, chart: str, values: dict[str, Any], helm: str
) -> str:
    """The checklist's verdict summary, or why it did not run; raises ChecklistFailed on a failed verdict."""
    if not source.run_checklist:
        return "not run (run_checklist is off)"
    request = ChecklistRequest.model_validate(
        {
            "cluster_block": source.cluster_block,
            "kubeconfig_path": source.kubeconfig_path,
            "context": source.context,
            "namespace": namespace,
            "release": release,
            "chart": chart,
            "values": values,
            "helm_executable": helm,
            **source.checklist.model_dump(exclude_defaults=True),
        }
    )
    verdict = predeploy_checklist(request=request)
    return verdict.summary
