"""Alertmanager's webhook notification (payload version 4) as a strict model, and the key that makes one alert
start one run.

The shape is Alertmanager's `notify/webhook` `Message` (the same in 0.25, Debian's, and later releases): a group
of alerts (`groupKey`, `status`, `receiver`, `groupLabels`, `commonLabels`, `commonAnnotations`, `externalURL`,
`truncatedAlerts`) and each alert's `status`, `labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL` and
`fingerprint`. Everything is bounded (counts, lengths, label-name syntax), unknown fields and other versions are
refused, and numbers and strings are strict, so a body that is not what Alertmanager sends is a 400, not a
guess. Parsing goes through pydantic's JSON reader, which refuses nesting deeper than it can check.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

MAX_ALERTS = 100  # per notification; Alertmanager's `max_alerts` truncates larger groups (truncatedAlerts)
MAX_LABELS = 64
MAX_LABEL_VALUE = 1024
MAX_ANNOTATION_VALUE = 8192
MAX_TEXT = 4096

# Prometheus' label-name rule (the classic one: letters, digits, '_', not starting with a digit)
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)]
Annotations = Annotated[
    dict[LabelName, Annotated[str, StringConstraints(max_length=MAX_ANNOTATION_VALUE)]], Field(max_length=MAX_LABELS)
]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Status = Literal["firing", "resolved"]


class Alert(BaseModel):
    """One alert of the group; `labels` identify it (Alertmanager's fingerprint is a hash of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    status: Status
    labels: Labels
    annotations: Annotations = {}
    startsAt: AwareDatetime  # noqa: N815 (Alertmanager's field names)
    endsAt: AwareDatetime  # noqa: N815
    generatorURL: Text = ""  # noqa: N815
    fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]

    @model_validator(mode="after")
    def _named(self) -> Alert:
        if not self.labels.get("alertname"):
            raise ValueError("an alert without an alertname label")
        return self

    @property
    def name(self) -> str:
        return self.labels["alertname"]


class Notification(BaseModel):
    """What Alertmanager POSTs to a webhook receiver."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Literal["4"]
    groupKey: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]  # noqa: N815
    truncatedAlerts: Annotated[int, Field(ge=0, le=1_000_000)] = 0  # noqa: N815
    status: Status
    receiver: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    groupLabels: Labels = {}  # noqa: N815
    commonLabels: Labels = {}  # noqa: N815
    commonAnnotations: Annotations = {}  # noqa: N815
    externalURL: Text = ""  # noqa: N815
    alerts: Annotated[list[Alert], Field(min_length=1, max_length=MAX_ALERTS)]


class PayloadError(ValueError):
    """The body is not an Alertmanager v4 notification; the message is one line naming the field."""


def parse_notification(body: bytes) -> Notification:
    try:
        return Notification.model_validate_json(body)
    except ValidationError as exc:
        raise PayloadError(_one_line(exc)) from None
    except RecursionError:  # a last guard: pydantic's reader bounds depth itself
        raise PayloadError("body is nested too deeply to read") from None


def _one_line(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {' '.join(str(first['msg']).split())}"[:300] + more


def idempotency_key(notification: Notification, alert: Alert, *, rule: str) -> str:
    """One key per alert occurrence and rule: receiver, group, fingerprint, start and status.

    Alertmanager re-sends a group on every `group_interval` change and `repeat_interval`, and retries failed
    deliveries; all of those carry the same four values, so Prefect's flow-run idempotency (permanent, per flow)
    turns every repeat into the run that already exists. An alert that fires again later has a new `startsAt`,
    so it is a new occurrence. The status and rule are part of the key so a rule that reacts to the resolved
    notification gets its own run.
    """
    starts = alert.startsAt.astimezone(dt.UTC).isoformat()
    parts = [notification.receiver, notification.groupKey, alert.fingerprint, starts, alert.status, rule]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"alertmanager-{digest[:40]}"
