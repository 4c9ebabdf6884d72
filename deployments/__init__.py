"""Every deployment `rollbook serve` runs and prefect.yaml lists, both derived from `flows.CATALOGUE`."""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from flows import CATALOGUE


def all_deployments() -> list[RunnerDeployment]:
    """The deployments to serve, one per catalogue entry, with its description and tags.

    Entrypoints are module paths (`flows.demo.hello_cluster`), not file paths: runs execute in subprocesses
    that import the installed package, so they work whatever directory `rollbook serve` was started from.
    """
    return [
        _deployment(entry.flow, entry.name, description=entry.description, tags=list(entry.tags)) for entry in CATALOGUE
    ]


def _deployment(flow: Flow[..., Any], name: str, **kwargs: Any) -> RunnerDeployment:
    """`to_deployment` with rollbook's defaults; called from sync code, so the result is never a coroutine."""
    deployment = flow.to_deployment(name, entrypoint_type=EntrypointType.MODULE_PATH, **kwargs)
    assert isinstance(deployment, RunnerDeployment)
    return deployment
