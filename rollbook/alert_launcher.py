"""The receiver's side of Prefect: find the run an alert already started, honour the cooldown, start the run,
and emit one event per decision so the UI shows why a run started (or did not).

Everything is read from Prefect, nothing from this process's memory, so a restarted receiver (or a second
replica) decides the same way: an alert's run is found by its idempotency key, a target's cooldown by the tag
every alert-started run carries (`alert-target:<hash of deployment and parameters>`). Creating the run passes the
key too, so two receivers racing on one alert still get one run (Prefect's upsert per flow and key).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterIdempotencyKey,
    FlowRunFilterTags,
)
from prefect.deployments import arun_deployment
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from rollbook.alert_rules import Launch
from rollbook.alerts import Notification
from rollbook.webhook import Decision, LauncherUnavailable, Outcome

ALERT_TAG = "alertmanager"
EVENT_PREFIX = "rollbook.alert"


def target_tag(launch: Launch) -> str:
    return f"alert-target:{launch.target}"


class PrefectLauncher:
    def __init__(self, client: Callable[[], PrefectClient] = get_client) -> None:
        self.client = client  # tests point it at another API URL

    async def launch(self, launch: Launch) -> Outcome:
        try:
            async with self.client() as client:
                return await self._launch(client, launch)
        except ObjectNotFound:
            raise LauncherUnavailable(
                f"deployment {launch.deployment} is not registered (is `rollbook serve` running?)"
            ) from None
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code >= 500 or exc.response.status_code == 429:
                raise LauncherUnavailable(f"the Prefect API answered {exc.response.status_code}") from None
            raise
        except (httpx.TransportError, OSError) as exc:
            raise LauncherUnavailable(f"the Prefect API is unreachable: {type(exc).__name__}") from None

    async def _launch(self, client: PrefectClient, launch: Launch) -> Outcome:
        key = launch.idempotency_key
        same = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[key])), limit=1
        )
        if same:
            return Outcome("duplicate", str(same[0].id), "this alert already started this run")
        cooldown = launch.rule.cooldown_seconds
        if cooldown:
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=cooldown)
            recent = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[target_tag(launch)]),
                    expected_start_time=FlowRunFilterExpectedStartTime.model_validate({"after_": since}),
                ),
                limit=1,
            )
            if recent:
                return Outcome("cooldown", str(recent[0].id), f"the same target got a run in the last {cooldown} s")
        run = await arun_deployment(
            launch.deployment,
            client=client,
            parameters=launch.parameters,
            timeout=0,
            idempotency_key=key,
            tags=[ALERT_TAG, f"alert-rule:{launch.rule.name}", target_tag(launch)],
            as_subflow=False,
            flow_run_name=f"alert-{launch.alert.name[:40]}-{launch.alert.fingerprint}",
        )
        return Outcome("started", str(run.id), f"started {launch.deployment}")

    def record(self, decision: Decision, notification: Notification) -> None:
        emit_event(**decision_event(decision, notification))


def decision_event(decision: Decision, notification: Notification) -> dict[str, Any]:
    """The event for one decision: the alert is the resource, the run (when there is one) a related one.

    A started run's event id derives from its idempotency key, so a retried notification does not record the
    start twice."""
    alert = decision.alert
    related = []
    if decision.flow_run_id:
        run = f"prefect.flow-run.{decision.flow_run_id}"
        related.append({"prefect.resource.id": run, "prefect.resource.role": "flow-run"})
    event_id = (
        uuid.uuid5(uuid.NAMESPACE_URL, f"rollbook:{decision.idempotency_key}")
        if decision.kind == "started" and decision.idempotency_key
        else None
    )
    return {
        "event": f"{EVENT_PREFIX}.{decision.kind}",
        "resource": {
            "prefect.resource.id": f"alertmanager.alert.{alert.fingerprint}",
            "prefect.resource.name": alert.name[:200],
            "alertmanager.receiver": notification.receiver[:200],
        },
        "related": related,
        "payload": {
            "status": alert.status,
            "starts_at": alert.startsAt.isoformat(),
            "labels": alert.labels,
            "rule": decision.rule,
            "deployment": decision.deployment,
            "detail": decision.detail,
            "group_key": notification.groupKey,
        },
        "id": event_id,
    }


def token_from_block(name: str) -> str:
    """The bearer token kept in a Prefect Secret block (`prefect block create secret`, or Secret(value=...).save)."""
    from prefect.blocks.system import Secret

    secret = Secret.load(name)  # sync here: the CLI calls it before the server's event loop exists
    assert isinstance(secret, Secret)
    value = secret.get()
    if not isinstance(value, str):
        raise ValueError(f"Secret block {name!r} must hold the token as text")
    return value
