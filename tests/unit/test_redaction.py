"""The redaction registry and filter, without a Prefect server."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

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
