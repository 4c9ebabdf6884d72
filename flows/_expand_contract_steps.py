"""expand-contract's request and steps: each asks the tasks (tasks/schema_migrations.py) and records its
evidence on the run; the flow (flows/expand_contract.py) decides the order and whether to ask a person."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Self
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from blocks import DatabaseConnection
from flows.atomic_upgrade import AtomicUpgradeRequest, atomic_upgrade
from rollbook import expand_contract as rules
from rollbook import redaction
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, Decision, request_approval, subflow_result
from rollbook.expand_contract import Backfill, SchemaState, Step
from rollbook.form_rules import exactly_one, form_rules_schema
from rollbook.reports.expand_contract import StepRecord, StepStatus
from rollbook.types import BlockName, FormOptional, LocalPath
from tasks.cluster import resolve_cluster
from tasks.migrations.base import where
from tasks.release_workloads import release_pods_ready
from tasks.schema_migrations import (
    backfill_batch,
    count_backfill,
    offline_sql,
    read_schema_state,
    upgrade_schema,
    writable_engine,
)

ACTION = "expand-contract"


class ExpandContractRequest(BaseModel):
    """Which database and scripts, the columns to copy between, and the bounds of each phase."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=form_rules_schema)
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        exactly_one("database_block", "dsn", "give exactly one of database_block or dsn"),
    )

    database_block: FormOptional[BlockName] = Field(
        default=None, description="A saved 'Rollbook Database Connection' block."
    )
    dsn: FormOptional[SecretStr] = Field(default=None, description="A DSN instead of a block (direct runs, tests).")
    script_location: LocalPath = Field(
        description="The Alembic script directory (absolute path, the folder holding env.py and versions/); its "
        "env.py must use config.attributes['connection'] when given (examples/alembic-demo/env.py does)."
    )
    expand_target: str = Field(
        default="expand@head", pattern=rules.TARGET_PATTERN, description="What expand upgrades to."
    )
    contract_target: str = Field(
        default="contract@head", pattern=rules.TARGET_PATTERN, description="What contract upgrades to."
    )
    backfill: Backfill = Field(description="The table, its key, the old and the new column.")
    batch_size: int = Field(default=1000, ge=1, le=100_000, description="Rows per backfill batch (transaction).")
    max_batches: int = Field(default=10_000, ge=1, le=1_000_000, description="At most this many batches per run.")
    backfill_timeout_seconds: int = Field(
        default=3600, ge=1, le=24 * 3600, description="Stop backfilling after this long; a re-run continues."
    )
    observe_seconds: int = Field(
        default=60, ge=0, le=24 * 3600, description="How long to watch before asking to contract (0: look once)."
    )
    observe_interval_seconds: int = Field(default=10, ge=1, le=600, description="Between looks while observing.")
    deploy: AtomicUpgradeRequest | None = Field(
        default=None,
        description="Deploy the code that reads both shapes with helm-atomic-upgrade after expand (and watch its "
        "pods while observing); none: that code is deployed some other way.",
    )
    contract: bool = Field(default=True, description="Go on to the approval gate and contract in this run.")
    statement_timeout_seconds: int = Field(default=600, ge=1, le=3600, description="Per SQL statement (PostgreSQL).")
    lock_timeout_seconds: int = Field(
        default=10, ge=1, le=600, description="Longest wait for a table lock (PostgreSQL); a DDL gives up after it."
    )

    @model_validator(mode="after")
    def _one_database(self) -> Self:
        if bool(self.database_block) == bool(self.dsn and self.dsn.get_secret_value()):
            raise ValueError("give exactly one of database_block or dsn")
        return self

    @field_validator("script_location")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "/../" in value + "/":
            raise ValueError("must be an absolute path without '..'")
        return value


def resolve_dsn(request: ExpandContractRequest) -> SecretStr:
    if request.dsn is not None:
        return SecretStr(redaction.reveal(request.dsn))
    block = DatabaseConnection.load(str(request.database_block))
    if not isinstance(block, DatabaseConnection):
        raise TypeError(f"block {request.database_block!r} is not a Rollbook Database Connection")
    return SecretStr(block.reveal_dsn())


class Run:
    """One run: the request, its controls, the DSN, and the evidence gathered so far."""

    def __init__(self, request: ExpandContractRequest, controls: ChangeControls) -> None:
        self.request, self.controls = request, controls
        self.dsn = resolve_dsn(request)
        engine = writable_engine(self.dsn, statement_timeout_seconds=1, lock_timeout_seconds=1, application_name="")
        self.database = where(engine)
        engine.dispose()
        self.key = artifact_key(ACTION, self.database)
        self.application_name = f"rollbook {ACTION} {flow_run.id or ''}".strip()
        self.steps: list[StepRecord] = []
        self.batches = self.rows = 0
        self.changed = False
        self.decision: Decision | None = None
        self.deploy_result: dict[str, Any] | None = None

    @property
    def bounds(self) -> dict[str, Any]:
        return {
            "statement_timeout_seconds": self.request.statement_timeout_seconds,
            "lock_timeout_seconds": self.request.lock_timeout_seconds,
            "application_name": self.application_name,
        }

    def record(self, step: Step, status: StepStatus, detail: str, *, sql: str = "", started: float = 0.0) -> None:
        seconds = round(time.monotonic() - started, 2) if started else 0.0
        self.steps.append(StepRecord(step=step, status=status, detail=detail, sql=sql, seconds=seconds))
        get_run_logger().info("%s: %s (%s)", step, status, detail)


def look(run: Run) -> SchemaState:
    """The database's real state: applied heads, what the targets name, the backfill's counts."""
    state: SchemaState = read_schema_state(
        run.dsn,
        run.request.script_location,
        expand_target=run.request.expand_target,
        contract_target=run.request.contract_target,
        spec=run.request.backfill,
    )
    return state


def _start(revisions: tuple[str, ...]) -> str | None:
    return revisions[0] if len(revisions) == 1 else None


def plan(run: Run, state: SchemaState, todo: tuple[Step, ...]) -> None:
    """Record what each step would run: Alembic's offline SQL for expand and contract, the backfill statement."""
    request = run.request
    for step in todo:
        if step == "expand":
            sql = offline_sql(
                run.dsn, request.script_location, start=_start(state.current), target=request.expand_target
            )
            run.record("expand", "planned", f"alembic upgrade {request.expand_target}", sql=sql)
        elif step == "deploy":
            deploy(run, plan=True)
        elif step == "backfill":
            left = "every row" if state.remaining is None else f"{state.remaining} row(s)"
            detail = f"{left} in batches of {request.batch_size} (at most {request.max_batches} batches)"
            sql = rules.backfill_sql(request.backfill).replace(":batch_size", str(request.batch_size))
            run.record("backfill", "planned", detail, sql=sql)
        elif step == "observe":
            run.record("observe", "planned", f"watch {request.observe_seconds}s: no row left, new code available")
        elif step == "approve":
            run.record("approve", "planned", "contract always asks a person first")
        elif request.contract:
            sql = offline_sql(
                run.dsn, request.script_location, start=_start(state.expand_revisions), target=request.contract_target
            )
            run.record("contract", "planned", f"alembic upgrade {request.contract_target}", sql=sql)


def expand(run: Run) -> None:
    started = time.monotonic()
    target = run.request.expand_target
    done = upgrade_schema(run.dsn, run.request.script_location, target, **run.bounds)
    run.changed = run.changed or done["before"] != done["after"]
    detail = f"alembic upgrade {target}: {', '.join(done['before']) or 'none'} → {', '.join(done['after'])}"
    run.record("expand", "done", detail, started=started)


def deploy(run: Run, *, plan: bool = False) -> None:
    """helm-atomic-upgrade of the dual-read code, as a sub-flow under this run's controls (the plan approval
    already given here is not asked for twice); `plan`: its plan only, whatever this run's controls say (the
    preview shown before this run's own approval)."""
    if run.request.deploy is None:
        run.record("deploy", "skipped", "no deploy given: the code reading both shapes is deployed another way")
        return
    started = time.monotonic()
    planning = plan or run.controls.plan
    controls = run.controls.model_copy(update={"require_approval": False, "plan": planning})
    result = subflow_result(atomic_upgrade(run.request.deploy, controls))
    run.deploy_result = result.model_dump(include={"outcome", "summary"})
    run.changed = run.changed or result.outcome == "changed"
    status: StepStatus = "planned" if planning else "done"
    run.record("deploy", status, f"helm-atomic-upgrade {result.outcome}: {result.summary}", started=started)


def backfill(run: Run, state: SchemaState) -> int:
    """Copy in bounded batches, each its own transaction, with a progress artifact; the rows left at the end
    (counted again). Stops at max_batches or backfill_timeout_seconds: a re-run continues from there."""
    request, started = run.request, time.monotonic()
    remaining, filled = state.remaining or 0, state.filled or 0
    progress = create_progress_artifact(
        rules.progress_percent(filled, remaining), key=f"{run.key}-backfill", description="backfill progress"
    )
    assert isinstance(progress, UUID)  # the sync call (Prefect's sync_compatible types it as maybe a coroutine)
    deadline = started + request.backfill_timeout_seconds
    stop = "done"
    while remaining:
        if run.batches >= request.max_batches:
            stop = f"stopped after max_batches={request.max_batches}"
            break
        if time.monotonic() >= deadline:
            stop = f"stopped after backfill_timeout_seconds={request.backfill_timeout_seconds}"
            break
        copied = backfill_batch(run.dsn, request.backfill, batch_size=request.batch_size, **run.bounds)
        run.batches, run.rows = run.batches + 1, run.rows + copied
        run.changed = run.changed or copied > 0
        remaining, filled = max(remaining - copied, 0), filled + copied
        if copied < request.batch_size:  # the last batch, or rows changed meanwhile: count for real
            remaining, filled = count_backfill(run.dsn, request.backfill)
            if not copied:
                break
        update_progress_artifact(progress, rules.progress_percent(filled, remaining))
    remaining, filled = count_backfill(run.dsn, request.backfill)
    update_progress_artifact(progress, rules.progress_percent(filled, remaining))
    status: StepStatus = "done" if not remaining else "stopped"
    detail = f"{run.rows} row(s) in {run.batches} batch(es), {remaining} left ({stop if remaining else 'done'})"
    sql = rules.backfill_sql(request.backfill).replace(":batch_size", str(request.batch_size))
    run.record("backfill", status, detail, sql=sql, started=started)
    return remaining


def observe(run: Run) -> tuple[bool, str]:
    """Look every interval for observe_seconds: rows left to copy, and (with a deploy) the release's pods."""
    request, started = run.request, time.monotonic()
    cluster = None
    if request.deploy is not None:
        d = request.deploy
        cluster = resolve_cluster(d.cluster_block, d.kubeconfig_path, d.context)
    samples: list[rules.Sample] = []
    while True:
        remaining, _ = count_backfill(run.dsn, request.backfill)
        ready = None
        if cluster is not None and request.deploy is not None:
            pods = release_pods_ready(cluster, request.deploy.namespace, request.deploy.release, settle_seconds=0)
            ready = bool(pods.all_ready)
        samples.append(rules.Sample(seconds=time.monotonic() - started, remaining=remaining, pods_ready=ready))
        if time.monotonic() - started + request.observe_interval_seconds > request.observe_seconds:
            break
        time.sleep(request.observe_interval_seconds)
    ok, why = rules.observe_verdict(samples)
    run.record("observe", "done" if ok else "failed", why, started=started)
    return ok, why


def approve_contract(run: Run, plan_markdown: str) -> Decision:
    """Contract drops the old column: there is no way back, so it is always asked, whatever the controls say."""
    decision = request_approval(run.controls.model_copy(update={"require_approval": True}), plan_markdown)
    run.decision = decision
    status: StepStatus = "done" if decision.approved else "refused"
    who = decision.approver or "nobody"
    run.record("approve", status, f"{'approved' if decision.approved else 'not approved'} by {who}: {decision.comment}")
    return decision


def contract(run: Run) -> None:
    started = time.monotonic()
    target = run.request.contract_target
    done = upgrade_schema(run.dsn, run.request.script_location, target, **run.bounds)
    run.changed = run.changed or done["before"] != done["after"]
    detail = f"alembic upgrade {target}: {', '.join(done['before']) or 'none'} → {', '.join(done['after'])}"
    run.record("contract", "done", detail, started=started)
