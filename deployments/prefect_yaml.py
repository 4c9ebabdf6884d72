"""prefect.yaml, generated from `flows.CATALOGUE` so `prefect deploy --all` offers what `rollbook serve` serves.

Regenerate with `rollbook catalogue --write prefect.yaml`; tests/unit/test_prefect_yaml.py fails while the file
differs from what `render()` makes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from deployments.schedules import ScheduleEntry
from flows import CatalogueEntry

HEADER = """\
# GENERATED from flows.CATALOGUE by `rollbook catalogue --write prefect.yaml`: edit the catalogue, not this file.
# Deployments for `prefect deploy --all` with a process work pool, for teams that run Prefect workers;
# `rollbook serve` serves the same deployments from one process without a work pool.
name: rollbook
prefect-version: 3.9.1

build: null
push: null
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{ $ROLLBOOK_CHECKOUT }}"

definitions:
  work_pool: &process_pool
    name: rollbook
    work_queue_name: default

deployments:
"""


def entrypoint(entry: CatalogueEntry) -> str:
    """`flows/demo.py:hello_cluster`: a file path, because the work pool's worker runs from the checkout."""
    fn = entry.flow.fn
    return f"{fn.__module__.replace('.', '/')}.py:{fn.__name__}"


def render(catalogue: Iterable[CatalogueEntry], schedules: Mapping[str, tuple[ScheduleEntry, ...]]) -> str:
    """The whole file. Strings are written as JSON, which YAML reads as double-quoted scalars."""
    blocks = [
        f"  - name: {entry.name}\n"
        f"    entrypoint: {entrypoint(entry)}\n"
        f"    description: {json.dumps(entry.description)}\n"
        f"    tags: [{', '.join(json.dumps(tag) for tag in entry.tags)}]\n"
        + _schedules(schedules.get(entry.name, ()))
        + (EXCLUSIVE if entry.exclusive else "")
        + "    work_pool: *process_pool\n"
        for entry in catalogue
    ]
    return HEADER + "\n".join(blocks)


# The server cancels a run that would overlap the one in progress (flows.CatalogueEntry.exclusive).
EXCLUSIVE = "    concurrency_limit:\n      limit: 1\n      collision_strategy: CANCEL_NEW\n"


def _schedules(entries: tuple[ScheduleEntry, ...]) -> str:
    if not entries:
        return ""
    lines = ["    schedules:"]
    for entry in entries:
        lines += [
            f"      - cron: {json.dumps(entry.cron)}",
            f"        timezone: {json.dumps(entry.timezone)}",
            f"        active: {json.dumps(entry.active)}",
            f"        parameters: {json.dumps(entry.parameters, sort_keys=True)}",
        ]
    return "\n".join(lines) + "\n"
