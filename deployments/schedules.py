"""The one place schedules live: `schedules.yaml` beside this module (or the file `ROLLBOOK_SCHEDULES` names).

Both `rollbook serve` and the generated prefect.yaml read it, so a team edits a cron line once and both ways of
running rollbook agree. Each entry is checked before anything is deployed: the deployment must be in the
catalogue, the cron expression must parse, and the parameters must be valid for the flow, so a typo fails
`rollbook serve` at start-up with one line naming it instead of failing every scheduled run at 3 a.m.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from prefect.client.schemas.schedules import CronSchedule
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flows import FLOWS
from rollbook.params import ParamError, validate_for

DEFAULT_FILE = Path(__file__).resolve().parent / "schedules.yaml"
ENV_FILE = "ROLLBOOK_SCHEDULES"


class ScheduleError(ValueError):
    """The schedules file is wrong; the message is one line naming the file, the deployment and the field."""


class ScheduleEntry(BaseModel):
    """One cron schedule of one deployment, with the parameters its runs get."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str = Field(description="Five-field cron expression, e.g. '0 * * * *' for hourly.")
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression is read in.")
    active: bool = Field(default=True, description="False keeps the schedule registered but paused.")
    parameters: dict[str, Any] = Field(default={}, description="The flow's parameters for scheduled runs.")

    @field_validator("cron")
    @classmethod
    def _parses(cls, value: str) -> str:
        CronSchedule(cron=value)  # raises ValueError naming the bad expression
        return value

    def prefect_schedule(self) -> CronSchedule:
        return CronSchedule(cron=self.cron, timezone=self.timezone)


def schedules_file() -> Path:
    return Path(os.environ.get(ENV_FILE) or DEFAULT_FILE)


def load_schedules(path: Path | None = None) -> dict[str, tuple[ScheduleEntry, ...]]:
    """Every deployment's schedules from the file, validated; deployments it does not name have none."""
    path = path or schedules_file()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScheduleError(f"{path}: cannot read the schedules file: {exc}") from None
    if not isinstance(raw, dict):
        raise ScheduleError(f"{path}: expected a mapping of deployment name to a list of schedules")
    schedules: dict[str, tuple[ScheduleEntry, ...]] = {}
    for name, items in raw.items():
        if name not in FLOWS:
            raise ScheduleError(f"{path}: {name!r} is not a rollbook deployment; known: {', '.join(sorted(FLOWS))}")
        if not isinstance(items, list):
            raise ScheduleError(f"{path}: {name}: expected a list of schedules")
        schedules[name] = tuple(_entry(path, name, index, item) for index, item in enumerate(items))
    return schedules


def _entry(path: Path, name: str, index: int, item: Any) -> ScheduleEntry:
    where = f"{path}: {name}[{index}]"
    try:
        entry = ScheduleEntry.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "entry"
        raise ScheduleError(f"{where}.{field}: {first['msg']}") from None
    try:
        validate_for(FLOWS[name].fn, entry.parameters)
    except ParamError as exc:
        raise ScheduleError(f"{where}.parameters: {exc}") from None
    return entry
