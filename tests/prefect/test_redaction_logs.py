"""Secrets unwrapped inside a flow run never reach the Prefect server's log store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from uuid import UUID

from prefect import flow, get_run_logger, task

from blocks import DatabaseConnection
from rollbook.redaction import MASK, reveal


@task
def leak_from_task(block_name: str) -> None:
    dsn = DatabaseConnection.load(block_name).reveal_dsn()
    get_run_logger().info("task sees %s", dsn)
    print(f"task prints {dsn}")


@flow(log_prints=True)
def leaky_flow(block_name: str) -> None:
    """Does every wrong thing a runbook author might do with a secret."""
    block = DatabaseConnection.load(block_name)
    dsn = reveal(block.dsn)
    logger = get_run_logger()
    logger.info("flow logs %s", dsn)
    logger.warning(f"flow f-string {dsn}")
    print("flow prints", dsn)
    try:
        raise RuntimeError(f"cannot connect to {dsn}")
    except RuntimeError:
        logger.exception("connection failed")
    leak_from_task(block_name)


def test_secret_is_masked_in_server_logs(read_logs: Callable[[UUID, Callable[[list[str]], bool]], list[str]]) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    dsn = f"postgresql://app:{password}@db.internal:5432/app"
    name = f"leaky-{uuid.uuid4().hex[:8]}"
    DatabaseConnection(dsn=dsn).save(name)

    state = leaky_flow(name, return_state=True)
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    expected = ("flow logs", "flow f-string", "flow prints", "connection failed", "task sees", "task prints")
    messages = read_logs(flow_run_id, lambda msgs: all(any(e in m for m in msgs) for e in expected))
    text = "\n".join(messages)
    for marker in expected:
        assert f"{marker}" in text, f"log line {marker!r} never arrived: {messages}"
    assert password not in text
    assert f"{marker} postgresql://" not in text
    assert text.count(MASK) >= len(expected)
    assert "cannot connect to ***" in text  # the traceback is scrubbed too
