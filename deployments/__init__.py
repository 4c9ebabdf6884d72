"""Every deployment `rollbook serve` runs and prefect.yaml lists, both derived from `flows.CATALOGUE`."""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from deployments.schedules import ScheduleEntry, load_schedules
from flows import CATALOGUE, CatalogueEntry

# What an exclusive entry's deployment gets: one run at a time, and an overlapping run is cancelled, not queued.
EXCLUSIVE = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def all_deployments() -> list[RunnerDeployment]:
    """The deployments to serve, one per catalogue entry, with its description, tags and schedules.

    Entrypoints are module paths (`flows.demo.hello_cluster`), not file paths: runs execute in subprocesses
    that import the installed package, so they work whatever directory `rollbook serve` was started from.
    """
    schedules = load_schedules()
    return [_catalogued(entry, schedules.get(entry.name, ())) for entry in CATALOGUE]


def _catalogued(entry: CatalogueEntry, schedules: tuple[ScheduleEntry, ...]) -> RunnerDeployment:
    return _deployment(
        entry.flow,
        entry.name,
        description=entry.description,
        tags=list(entry.tags),
        schedules=[
            DeploymentScheduleCreate(schedule=s.prefect_schedule(), active=s.active, parameters=s.parameters)
            for s in schedules
        ]
        or None,
        concurrency_limit=EXCLUSIVE if entry.exclusive else None,
    )


def _deployment(flow: Flow[..., Any], name: str, **kwargs: Any) -> RunnerDeployment:
    """`to_deployment` with rollbook's defaults; called from sync code, so the result is never a coroutine."""
    deployment = flow.to_deployment(name, entrypoint_type=EntrypointType.MODULE_PATH, **kwargs)
    assert isinstance(deployment, RunnerDeployment)
    return deployment
