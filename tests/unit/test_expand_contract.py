"""expand-contract on SQLite files with the demo schema (examples/alembic-demo): the phase rules, the Alembic and
backfill tasks (branch labels, offline SQL, a broken script, an unknown label), and the flow in plan mode, with
contract refused, and resumed after a crash mid-backfill. Approvals are faked at `request_approval`, the one
place the flow pauses. PostgreSQL (transactional DDL, lock and password errors) is proven on the sandbox in
tests/integration/test_expand_contract_sandbox.py."""

from __future__ import annotations

import importlib
import runpy
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from flows.expand_contract import ExpandContractRequest, SchemaNotReady, expand_contract
from rollbook import expand_contract as rules
from rollbook.change import ChangeControls, ChangeResult, Decision, subflow_result
from rollbook.expand_contract import Backfill, SchemaState
from tasks.schema_migrations import (
    SchemaMigrationError,
    backfill_batch,
    count_backfill,
    offline_sql,
    read_schema_state,
    upgrade_schema,
)

steps = importlib.import_module("flows._expand_contract_steps")
flow_module = importlib.import_module("flows.expand_contract")  # `flows.expand_contract` is also the flow's name
DEMO = str(Path(__file__).resolve().parents[2] / "examples" / "alembic-demo")
SPEC = Backfill(table="users", key_column="id", old_column="email", new_column="new_email")
BOUNDS: dict[str, Any] = {"statement_timeout_seconds": 5, "lock_timeout_seconds": 5, "application_name": "pytest"}
CONTROLS = ChangeControls(reason="rename users.email", requested_by="pytest")
E, C = "0002_expand_new_email", "0003_contract_drop_email"


def seed(dsn: SecretStr, rows: int, start: int = 1) -> int:
    from sqlalchemy import create_engine

    engine = create_engine(dsn.get_secret_value())
    try:
        inserted: int = runpy.run_path(f"{DEMO}/seed.py")["seed"](engine, rows, start=start)
    finally:
        engine.dispose()
    return inserted


@pytest.fixture
def db(tmp_path: Path) -> SecretStr:
    """A SQLite database at the demo's root revision with 25 users in the old shape."""
    dsn = SecretStr(f"sqlite:///{tmp_path / 'app.db'}")
    upgrade_schema.fn(dsn, DEMO, "0001_users", **BOUNDS)
    assert seed(dsn, 25) == 25
    return dsn


def rows(dsn: SecretStr, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(dsn.get_secret_value().removeprefix("sqlite:///")) as conn:
        return conn.execute(sql).fetchall()


def columns(dsn: SecretStr) -> list[str]:
    return [r[1] for r in rows(dsn, "PRAGMA table_info(users)")]


def state(dsn: SecretStr, expand: str = "expand@head", contract: str = "contract@head") -> SchemaState:
    result: SchemaState = read_schema_state.fn(dsn, DEMO, expand_target=expand, contract_target=contract, spec=SPEC)
    return result


def request(dsn: SecretStr, **more: Any) -> ExpandContractRequest:
    fields: dict[str, Any] = {
        "dsn": dsn,
        "script_location": DEMO,
        "backfill": SPEC.model_dump(),
        "batch_size": 10,
        "observe_seconds": 0,
        **more,
    }
    return ExpandContractRequest.model_validate(fields)


def answer(monkeypatch: pytest.MonkeyPatch, *decisions: Decision) -> list[str]:
    """Fake the approval gate: each call takes the next decision; returns what each was asked."""
    asked: list[str] = []
    queue = list(decisions)

    def fake(controls: ChangeControls, markdown: str) -> Decision:
        assert controls.require_approval, "contract is always asked"
        asked.append(markdown)
        return queue.pop(0)

    monkeypatch.setattr(steps, "request_approval", fake)
    return asked


YES = Decision(approved=True, approver="alice", comment="all pods on 1.1")
NO = Decision(approved=False, approver="bob", comment="not on a Friday")


# --- the rules ---


def _state(current: tuple[str, ...], applied: set[str], remaining: int | None = 3) -> SchemaState:
    return SchemaState(
        current=current,
        applied=frozenset(applied),
        expand_revisions=("e",),
        contract_revisions=("c",),
        columns=frozenset({"id", "email", "new_email"}),
        remaining=remaining,
        filled=2,
    )


@pytest.mark.parametrize(
    ("current", "applied", "remaining", "phase", "todo"),
    [
        ((), set(), None, "not-expanded", rules.STEPS),
        (("r",), {"r"}, None, "not-expanded", rules.STEPS),
        (("e",), {"r", "e"}, 3, "expanded", rules.STEPS[1:]),
        (("e",), {"r", "e"}, 0, "backfilled", rules.STEPS[1:]),
        (("c",), {"r", "e", "c"}, None, "contracted", ()),
        (("c",), {"r", "c"}, None, "inconsistent", ()),
    ],
)
def test_phase_from_the_database_state(
    current: tuple[str, ...], applied: set[str], remaining: int | None, phase: str, todo: tuple[str, ...]
) -> None:
    found, why = rules.phase_of(_state(current, applied, remaining), SPEC)
    assert found == phase, why
    assert rules.steps_to_run(found) == todo


def test_expand_applied_but_new_column_missing_is_inconsistent() -> None:
    gone = SchemaState(("e",), frozenset({"e"}), ("e",), ("c",), frozenset({"id", "email"}), None, None)
    phase, why = rules.phase_of(gone, SPEC)
    assert phase == "inconsistent" and "no column new_email" in why


def test_backfill_statement_is_bounded_ordered_and_quoted() -> None:
    sql = rules.backfill_sql(Backfill(table="app.users", key_column="id", old_column="email", new_column="new_email"))
    assert sql == (
        'UPDATE "app"."users" SET "new_email" = "email" WHERE "id" IN (SELECT "id" FROM "app"."users" '
        'WHERE "new_email" IS NULL AND "email" IS NOT NULL ORDER BY "id" LIMIT :batch_size)'
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"table": "users; DROP TABLE x", "key_column": "id", "old_column": "a", "new_column": "b"},
        {"table": "users", "key_column": 'id"', "old_column": "a", "new_column": "b"},
        {"table": "users", "key_column": "id", "old_column": "a", "new_column": "a"},
        {"table": "a.b.c", "key_column": "id", "old_column": "a", "new_column": "b"},
    ],
)
def test_hostile_backfill_names_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Backfill.model_validate(bad)


def test_observe_verdict_and_progress() -> None:
    ok, why = rules.observe_verdict([rules.Sample(0, 0, True), rules.Sample(30, 0, True)])
    assert ok and "stayed available" in why
    ok, why = rules.observe_verdict([rules.Sample(0, 0, True), rules.Sample(30, 2, True)])
    assert not ok and "2 row(s)" in why
    ok, why = rules.observe_verdict([rules.Sample(0, 0, False), rules.Sample(30, 0, True)])
    assert not ok and "not available in 1 of 2" in why
    assert not rules.observe_verdict([])[0]
    assert (rules.progress_percent(0, 0), rules.progress_percent(1, 3), rules.progress_percent(4, 0)) == (100, 25, 100)


# --- the tasks, on SQLite ---


def test_branch_labels_expand_then_contract(db: SecretStr) -> None:
    first = state(db)
    assert (first.current, first.expand_revisions, first.contract_revisions) == (("0001_users",), (E,), (C,))
    assert rules.phase_of(first, SPEC)[0] == "not-expanded" and first.remaining is None
    done = upgrade_schema.fn(db, DEMO, "expand@head", **BOUNDS)
    assert (done["before"], done["after"]) == (["0001_users"], [E])
    assert columns(db) == ["id", "name", "email", "new_email"]
    expanded = state(db)
    assert (expanded.remaining, expanded.filled, rules.phase_of(expanded, SPEC)[0]) == (25, 0, "expanded")
    assert upgrade_schema.fn(db, DEMO, "expand@head", **BOUNDS)["after"] == [E]  # a retry does nothing
    assert [backfill_batch.fn(db, SPEC, batch_size=10, **BOUNDS) for _ in range(4)] == [10, 10, 5, 0]
    assert count_backfill.fn(db, SPEC) == (0, 25)
    assert rows(db, "SELECT count(*) FROM users WHERE new_email = email") == [(25,)]
    assert upgrade_schema.fn(db, DEMO, "contract@head", **BOUNDS)["after"] == [C]
    assert columns(db) == ["id", "name", "new_email"]
    final = state(db)
    assert rules.phase_of(final, SPEC)[0] == "contracted" and final.applied == {"0001_users", E, C}


def test_offline_sql_shows_each_phase_and_touches_nothing(db: SecretStr) -> None:
    expand = offline_sql.fn(db, DEMO, start="0001_users", target="expand@head")
    assert "ALTER TABLE users ADD COLUMN new_email VARCHAR(255)" in expand
    assert f"UPDATE alembic_version SET version_num='{E}'" in expand
    contract = offline_sql.fn(SecretStr("postgresql://u:pw@db:5432/app"), DEMO, start=E, target="contract@head")
    assert "ALTER TABLE users DROP COLUMN email" in contract and "SET NOT NULL" in contract and "pw" not in contract
    assert rows(db, "SELECT version_num FROM alembic_version") == [("0001_users",)]
    assert "new_email" not in columns(db)


def test_unknown_branch_label_is_a_clear_error(db: SecretStr) -> None:
    unknown = r"'nope@head' is not in the scripts.*branches there: contract, expand"
    with pytest.raises(SchemaMigrationError, match=unknown):
        state(db, expand="nope@head")
    with pytest.raises(SchemaMigrationError, match="nope@head"):
        upgrade_schema.fn(db, DEMO, "nope@head", **BOUNDS)
    assert rows(db, "SELECT version_num FROM alembic_version") == [("0001_users",)]


def test_a_failing_script_is_a_clear_error_and_the_version_stays(db: SecretStr, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(DEMO, broken)
    script = broken / "versions" / "0002_expand_new_email.py"
    script.write_text(
        script.read_text().replace(
            '    op.add_column("users", sa.Column("new_email", sa.String(255), nullable=True))',
            '    op.add_column("users", sa.Column("new_email", sa.String(255), nullable=True))\n'
            '    op.execute("UPDATE no_such_table SET x = 1")',
        )
    )
    with pytest.raises(SchemaMigrationError) as failed:
        upgrade_schema.fn(db, str(broken), "expand@head", **BOUNDS)
    message = str(failed.value)
    assert "alembic upgrade expand@head failed" in message and "no such table: no_such_table" in message
    assert "database was at 0001_users" in message and "sqlite DDL is not transactional" in message
    assert not failed.value.transient
    assert rows(db, "SELECT version_num FROM alembic_version") == [("0001_users",)]  # never recorded as applied


def test_scripts_that_do_not_import_and_a_missing_directory(db: SecretStr, tmp_path: Path) -> None:
    with pytest.raises(SchemaMigrationError, match="no Alembic script directory"):
        state_of = read_schema_state.fn
        state_of(db, str(tmp_path / "none"), expand_target="expand@head", contract_target="contract@head", spec=SPEC)
    broken = tmp_path / "syntax"
    shutil.copytree(DEMO, broken)
    (broken / "versions" / "0004_bad.py").write_text("revision = 'x'\ndown_revision = (\n")
    with pytest.raises(SchemaMigrationError, match="cannot read the Alembic scripts"):
        upgrade_schema.fn(db, str(broken), "expand@head", **BOUNDS)


def test_a_dsn_that_is_not_a_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(SchemaMigrationError) as refused:
        upgrade_schema.fn(SecretStr("not a url hunter2"), DEMO, "expand@head", **BOUNDS)
    assert "not a valid URL" in str(refused.value) and "hunter2" not in str(refused.value)


# --- the flow ---


def test_plan_shows_the_sql_of_every_phase_and_changes_nothing(db: SecretStr, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = answer(monkeypatch)
    result = subflow_result(expand_contract(request(db), CONTROLS.model_copy(update={"plan": True})))
    assert result.outcome == "planned" and (result.phase_before, result.phase_after) == ("not-expanded",) * 2
    planned = {s.step: s for s in result.steps}
    assert list(planned) == ["expand", "deploy", "backfill", "observe", "approve", "contract"]
    assert planned["deploy"].status == "skipped"
    assert "ADD COLUMN new_email" in planned["expand"].sql
    # SQLite cannot drop a column in place: Alembic's batch mode rebuilds the table without it
    assert "CREATE TABLE _alembic_tmp_users" in planned["contract"].sql and C in planned["contract"].sql
    assert "LIMIT 10" in planned["backfill"].sql
    assert not asked and "new_email" not in columns(db)
    assert rows(db, "SELECT version_num FROM alembic_version") == [("0001_users",)]


def test_the_whole_procedure_with_contract_approved(db: SecretStr, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = answer(monkeypatch, YES)
    result = subflow_result(expand_contract(request(db), CONTROLS))
    assert result.outcome == "changed" and result.finished and result.phase_after == "contracted", result.summary
    assert [(s.step, s.status) for s in result.steps] == [
        ("expand", "done"), ("deploy", "skipped"), ("backfill", "done"), ("observe", "done"),
        ("approve", "done"), ("contract", "done"),
    ]  # fmt: skip
    assert (result.backfilled_rows, result.backfill_batches, result.approval) == (25, 3, "all pods on 1.1")
    assert len(asked) == 1 and "_alembic_tmp_users" in asked[0] and "cannot be undone" in asked[0]
    assert columns(db) == ["id", "name", "new_email"]
    assert rows(db, "SELECT count(*) FROM users WHERE new_email LIKE 'user%@example.test'") == [(25,)]
    again = subflow_result(expand_contract(request(db), CONTROLS))
    assert again.outcome == "unchanged" and "already contracted" in again.summary


def test_contract_refused_keeps_both_columns(db: SecretStr, monkeypatch: pytest.MonkeyPatch) -> None:
    answer(monkeypatch, NO, NO)
    first = subflow_result(expand_contract(request(db), CONTROLS))
    assert first.outcome == "changed" and "contract not approved" in first.summary
    assert first.phase_after == "backfilled" and not first.finished
    assert columns(db) == ["id", "name", "email", "new_email"]
    assert rows(db, "SELECT version_num FROM alembic_version") == [(E,)]
    second = subflow_result(expand_contract(request(db), CONTROLS))  # nothing left but the gate: refused again
    assert second.outcome == "not-approved" and "nothing changed" in second.summary
    assert columns(db) == ["id", "name", "email", "new_email"]


def test_plan_approval_refused_changes_nothing(db: SecretStr, monkeypatch: pytest.MonkeyPatch) -> None:
    answer(monkeypatch)
    seen: list[str] = []

    def refuse(controls: ChangeControls, markdown: str) -> Decision:
        seen.append(markdown)
        return NO

    monkeypatch.setattr(flow_module, "request_approval", refuse)
    result = subflow_result(expand_contract(request(db), CONTROLS.model_copy(update={"require_approval": True})))
    assert result.outcome == "not-approved" and len(seen) == 1 and "ADD COLUMN new_email" in seen[0]
    assert "new_email" not in columns(db)


def test_a_crash_mid_backfill_resumes_from_the_database(db: SecretStr, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(db, 75, start=26)  # 100 rows
    real: Callable[..., int] = steps.backfill_batch
    calls = {"n": 0}

    def crashing(*args: Any, **kwargs: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("worker killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(steps, "backfill_batch", crashing)
    answer(monkeypatch, YES)
    with pytest.raises(RuntimeError, match="worker killed"):
        expand_contract(request(db), CONTROLS)
    assert rows(db, "SELECT count(*) FROM users WHERE new_email IS NOT NULL") == [(30,)]
    assert rows(db, "SELECT version_num FROM alembic_version") == [(E,)]
    monkeypatch.setattr(steps, "backfill_batch", real)
    result = subflow_result(expand_contract(request(db), CONTROLS))
    assert result.phase_before == "expanded" and result.finished, result.summary
    assert (result.backfilled_rows, result.backfill_batches) == (70, 7)  # only the rows left: none copied twice
    assert [s.step for s in result.steps][0] == "deploy"  # expand already applied: skipped


def test_the_backfill_stops_at_its_bound_and_a_rerun_continues(db: SecretStr, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = answer(monkeypatch, YES)
    first = subflow_result(expand_contract(request(db, max_batches=2), CONTROLS))
    assert first.outcome == "changed" and "run the same request again" in first.summary
    assert (first.backfilled_rows, first.remaining, first.phase_after) == (20, 5, "expanded")
    assert not asked and "email" in columns(db)
    second = subflow_result(expand_contract(request(db, max_batches=2), CONTROLS))
    assert second.finished and second.backfilled_rows == 5


def test_rows_written_in_the_old_shape_while_observing_stop_contract(
    db: SecretStr, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer(monkeypatch)
    real = steps.count_backfill
    looks = {"n": 0}

    def old_code_still_writing(*args: Any, **kwargs: Any) -> tuple[int, int]:
        looks["n"] += 1
        if looks["n"] == 3:  # after the backfill's own counts: old code inserts a row in the old shape
            seed(db, 1, start=500)
        result: tuple[int, int] = real(*args, **kwargs)
        return result

    monkeypatch.setattr(steps, "count_backfill", old_code_still_writing)
    with pytest.raises(SchemaNotReady, match="1 row"):
        expand_contract(request(db), CONTROLS)
    assert "email" in columns(db)


def test_request_is_validated() -> None:
    base = {"script_location": DEMO, "backfill": SPEC.model_dump()}
    with pytest.raises(ValidationError, match="exactly one of database_block or dsn"):
        ExpandContractRequest.model_validate(base)
    with pytest.raises(ValidationError, match="absolute"):
        ExpandContractRequest.model_validate({**base, "dsn": "sqlite://", "script_location": "rel/dir"})
    with pytest.raises(ValidationError):
        ExpandContractRequest.model_validate({**base, "dsn": "sqlite://", "expand_target": "x; rm -rf /"})


def _deploying(monkeypatch: pytest.MonkeyPatch, ready: list[bool]) -> list[ChangeControls]:
    """Fake the deploy sub-flow and the pods' readiness at the steps' boundary; returns the deploy's controls."""
    calls: list[ChangeControls] = []

    def fake_upgrade(deploy: Any, controls: ChangeControls) -> ChangeResult:
        calls.append(controls)
        return ChangeResult(outcome="planned" if controls.plan else "changed", summary="web to 1.1.0 (dual-read)")

    looks = iter(ready)
    monkeypatch.setattr(steps, "atomic_upgrade", fake_upgrade)
    monkeypatch.setattr(steps, "resolve_cluster", lambda *a: object())
    monkeypatch.setattr(steps, "release_pods_ready", lambda *a, **k: SimpleNamespace(all_ready=next(looks, True)))
    return calls


DEPLOY = {"namespace": "shop", "release": "web", "chart": str(Path(DEMO).parents[1] / "charts" / "demo-app")}


def test_the_dual_read_code_is_deployed_through_helm_atomic_upgrade(
    db: SecretStr, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _deploying(monkeypatch, [True, True])
    answer(monkeypatch, YES)
    plan = subflow_result(expand_contract(request(db, deploy=DEPLOY), CONTROLS.model_copy(update={"plan": True})))
    assert calls[-1].plan and {s.step: s.status for s in plan.steps}["deploy"] == "planned"
    monkeypatch.setattr(flow_module, "request_approval", lambda controls, md: YES)
    controls = CONTROLS.model_copy(update={"require_approval": True})
    result = subflow_result(expand_contract(request(db, deploy=DEPLOY, observe_seconds=1), controls))
    assert result.finished and result.deploy == {"outcome": "changed", "summary": "web to 1.1.0 (dual-read)"}
    # the preview before this run's approval was a plan; the deploy itself is not asked for twice
    assert calls[1].plan and not calls[2].plan and not calls[2].require_approval
    assert "stayed available" in {s.step: s.detail for s in result.steps}["observe"]


def test_new_code_not_available_while_observing_stops_contract(db: SecretStr, monkeypatch: pytest.MonkeyPatch) -> None:
    _deploying(monkeypatch, [False])
    asked = answer(monkeypatch, YES)
    with pytest.raises(SchemaNotReady, match="new code was not available"):
        expand_contract(request(db, deploy=DEPLOY), CONTROLS)
    assert not asked and "email" in columns(db)
