"""The redaction registry and filter, without a Prefect server."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from pydantic import SecretStr

from blocks import DatabaseConnection, KubernetesCluster
from rollbook import redaction


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    redaction.clear()
    yield
    redaction.clear()


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger with its own handler: records must be scrubbed before any handler sees them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(f"rollbook.test.{id(stream)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_reveal_registers_then_returns() -> None:
    assert redaction.reveal(SecretStr("hunter2-long")) == "hunter2-long"
    assert redaction.redact("pw=hunter2-long;") == "pw=***;"


def test_empty_and_mask_values_are_not_secrets() -> None:
    redaction.register("")
    redaction.register("********")
    redaction.register(None)
    assert redaction.registered() == ()
    assert redaction.redact("nothing ******** here") == "nothing ******** here"


def test_longest_secret_wins_when_one_contains_another() -> None:
    redaction.register("abc123")
    redaction.register("xxabc123yy")
    assert redaction.redact("xxabc123yy and abc123") == "*** and ***"


def test_multiline_secret_lines_are_registered_alone() -> None:
    key = "-----BEGIN KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldY\n-----END KEY-----"
    redaction.register(key)
    assert redaction.redact("line: QUJDREVGR0hJSktMTU5PUFFSU1RVVldY") == "line: ***"
    assert redaction.redact("-----END KEY-----") == "***"  # 17 chars: long enough to be registered
    assert redaction.redact("END") == "END"


def test_importing_rollbook_installs_the_record_factory(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    redaction.register("s3cr3t-value")
    logger.info("args %s", "s3cr3t-value")
    logger.info("dict %r", {"password": "s3cr3t-value"})
    secret = "s3cr3t-value"
    logger.info(f"inline {secret}")
    logger.info("%s %s", "broken format s3cr3t-value")  # wrong arg count: logging's error report must not leak
    text = stream.getvalue()
    assert "s3cr3t-value" not in text
    assert text.count("***") >= 3


def test_exception_text_is_scrubbed(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    redaction.register("tok-9f8e7d6c")
    try:
        raise RuntimeError("login failed for tok-9f8e7d6c")
    except RuntimeError:
        logger.exception("connect")
    assert "tok-9f8e7d6c" not in stream.getvalue()
    assert "RuntimeError: login failed for ***" in stream.getvalue()


def test_filter_works_on_a_handler_too() -> None:
    redaction.register("pw-on-handler")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value=%s", ("pw-on-handler",), None)
    assert redaction.SecretRedactionFilter().filter(record) is True
    assert record.getMessage() == "value=***"


def test_install_is_idempotent() -> None:
    factory = logging.getLogRecordFactory()
    redaction.install()
    assert logging.getLogRecordFactory() is factory


def test_blocks_register_secrets_on_construction_and_validation() -> None:
    DatabaseConnection(dsn="postgresql://u:dbpw-123456@h/db")
    assert "postgresql://u:dbpw-123456@h/db" in redaction.registered()
    redaction.clear()
    KubernetesCluster.model_validate({"kubeconfig": "users:\n- name: u\n  user:\n    token: tkn-abcdef\n"})
    assert "tkn-abcdef" in redaction.registered()  # credentials inside the kubeconfig, on their own


def test_dsn_password_is_scrubbed_alone_and_in_its_encoded_forms() -> None:
    redaction.register("postgresql://app:p%40ss%2Fw0rd-xyz@db:5432/app")
    assert redaction.redact("password 'p@ss/w0rd-xyz' rejected") == "password '***' rejected"
    assert redaction.redact("raw p%40ss%2Fw0rd-xyz") == "raw ***"
    assert (
        redaction.redact("quoted " + quote("postgresql://app:p%40ss%2Fw0rd-xyz@db:5432/app", safe="")) == "quoted ***"
    )


def test_json_escaped_and_url_encoded_values_are_scrubbed() -> None:
    secret = 'tok"en\\with\nnewline-123'
    redaction.register(secret)
    assert redaction.redact(json.dumps({"cell": secret})) == '{"cell": "***"}'
    assert redaction.redact("q=" + quote_plus(secret)) == "q=***"


def test_short_url_passwords_are_not_registered_alone() -> None:
    redaction.register("postgresql://app:pw@db/app")
    assert redaction.redact("pw is short") == "pw is short"
    assert redaction.redact("postgresql://app:pw@db/app") == "***"


class _ToolFailed(Exception):
    """An exception whose text comes from attributes, not args (like CalledProcessError or ApiException)."""

    def __init__(self, cmd: list[str], stderr: str) -> None:
        super().__init__(cmd)
        self.cmd, self.stderr = cmd, stderr

    def __str__(self) -> str:
        return f"{' '.join(self.cmd)} failed: {self.stderr}"


def test_scrub_exception_rewrites_args_attributes_and_causes_in_place() -> None:
    redaction.register("s3cret-in-exc")
    cause = ValueError("inner s3cret-in-exc")
    exc = _ToolFailed(["tool", "--password=s3cret-in-exc"], "denied for s3cret-in-exc")
    exc.__cause__ = cause
    group = ExceptionGroup("many", [RuntimeError("grouped s3cret-in-exc")])
    redaction.scrub_exception(exc)
    redaction.scrub_exception(group)
    assert str(exc) == "tool --password=*** failed: denied for ***"
    assert str(cause) == "inner ***"
    assert str(group.exceptions[0]) == "grouped ***"
    assert isinstance(exc, _ToolFailed)  # the type survives for retry conditions


def test_redact_value_walks_rows_and_leaves_other_types() -> None:
    redaction.register("row-secret-1")
    rows = [{"check": "db", "detail": "via row-secret-1", "ok": False, "n": 3}]
    assert redaction.redact_value(rows) == [{"check": "db", "detail": "via ***", "ok": False, "n": 3}]


def test_change_results_are_scrubbed_on_construction() -> None:
    from rollbook.change import ChangeResult

    redaction.register("result-secret-9")
    result = ChangeResult(outcome="unchanged", summary="db said result-secret-9")
    assert result.summary == "db said ***"


def test_prefect_failed_states_and_artifacts_are_scrubbed_before_they_leave() -> None:
    import asyncio

    import prefect.states
    from prefect._internal import states as internal_states
    from prefect.client.orchestration._artifacts.client import ArtifactClient
    from prefect.client.schemas.actions import ArtifactCreate

    redaction.install_prefect_egress()
    redaction.install_prefect_egress()  # idempotent: wrapped once
    redaction.register("state-secret-77")
    exc = RuntimeError("cannot connect to postgresql://u:state-secret-77@db/app")
    state = asyncio.run(prefect.states.exception_to_failed_state(exc, message="Task run encountered an exception"))
    assert "state-secret-77" not in (state.message or "") and "***" in (state.message or "")
    assert str(exc) == "cannot connect to postgresql://u:***@db/app"
    sync_state = internal_states.exception_to_failed_state_sync(RuntimeError("state-secret-77"))
    assert sync_state.message == "RuntimeError: ***"

    assert getattr(ArtifactClient.create_artifact, "_rollbook_scrubbing", False)
    sent: list[ArtifactCreate] = []

    def record(self: object, artifact: ArtifactCreate) -> ArtifactCreate:
        sent.append(artifact)
        return artifact

    wrapped = redaction._artifact_scrubbing(record)
    wrapped(object(), ArtifactCreate(type="markdown", data="dsn state-secret-77", description="x state-secret-77"))
    assert sent[0].data == "dsn ***" and sent[0].description == "x ***"
