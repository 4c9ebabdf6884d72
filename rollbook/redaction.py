"""Keep unwrapped secret values out of every log record this process writes.

Prefect masks `SecretStr` fields in API responses, but once code calls `get_secret_value()` the plain
value is an ordinary string: `get_run_logger().info(value)` or a `print` under `log_prints=True` sends it
to the Prefect API and the console as-is (only PREFECT_API_KEY is redacted by Prefect itself).

This module keeps a process-wide set of secret values and scrubs them from log records:

* `reveal(secret)` is the one sanctioned way to unwrap a `SecretStr`: it records the value, then returns it.
* Blocks in `blocks/` register all their secret fields as soon as they are constructed or loaded
  (`register_model_secrets`), so even a value unwrapped by a third-party library is known.
* `SecretRedactionFilter` rewrites a record's message, args, exception text and stack text.
* `install()` applies that filter inside the logging record factory, i.e. to every record created by any
  logger in the process. That is deliberately below Prefect's logging config: Prefect rebuilds its
  handlers whenever `setup_logging()` runs (and again in each flow-run subprocess), while the record
  factory is untouched by `logging.config.dictConfig`, so nothing per-flow or per-handler can be forgotten.
  Importing `rollbook` calls `install()`.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

MASK = "***"

# Lines of a multi-line secret (PEM keys, kubeconfigs) are registered on their own when at least this long,
# so a single leaked line is caught too; shorter lines ("-----END", "users:") are too generic to scrub.
MIN_LINE_LENGTH = 16

_lock = threading.Lock()
_values: set[str] = set()
# Longest first, so a secret that contains another secret is replaced as a whole. Rebuilt under the lock,
# read without it: replacing the tuple is atomic.
_snapshot: tuple[str, ...] = ()


def _candidates(value: str) -> Iterable[str]:
    """The strings to scrub for one secret: the value itself and, if multi-line, its long lines."""
    if value.strip("*"):  # "" and Prefect's "********" mask are not secrets
        yield value
    if "\n" in value:
        for line in value.splitlines():
            line = line.strip()
            if len(line) >= MIN_LINE_LENGTH:
                yield line


def register(value: str | bytes | None) -> None:
    """Remember a secret value so every later log record containing it is scrubbed."""
    global _snapshot
    if value is None:
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    new = set(_candidates(text)) - _values
    if not new:
        return
    with _lock:
        _values.update(new)
        _snapshot = tuple(sorted(_values, key=len, reverse=True))


def reveal(secret: SecretStr) -> str:
    """Unwrap a `SecretStr` after registering its value; use this instead of `get_secret_value()`."""
    value = secret.get_secret_value()
    register(value)
    return value


def register_model_secrets(model: BaseModel) -> None:
    """Register every `SecretStr`/`SecretBytes` reachable from a model, including nested models and blocks."""
    _register_any(model, depth=0)


def _register_any(obj: Any, depth: int) -> None:
    """Walk models, mappings and sequences; the depth bound protects against self-referencing objects."""
    if depth > 20:
        return
    if isinstance(obj, SecretStr | SecretBytes):
        register(obj.get_secret_value())
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            _register_any(getattr(obj, name, None), depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            _register_any(item, depth + 1)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            _register_any(item, depth + 1)


def registered() -> tuple[str, ...]:
    """The values currently scrubbed (for tests and diagnostics; never log the result)."""
    return _snapshot


def clear() -> None:
    """Forget all registered values; only tests should need this."""
    global _snapshot
    with _lock:
        _values.clear()
        _snapshot = ()


def redact(text: str) -> str:
    """Replace every registered secret in `text` with the mask."""
    for value in _snapshot:
        if value in text:
            text = text.replace(value, MASK)
    return text


def _contains_secret(text: str) -> bool:
    return any(value in text for value in _snapshot)


class SecretRedactionFilter(logging.Filter):
    """Rewrite a record in place so no registered secret survives formatting; never drops a record.

    The message is rendered once (`msg % args`) and stored back with empty args: arguments can be any
    object whose `str()` contains the secret, so scrubbing the rendered text is the only complete way.
    Exception and stack text are pre-rendered into `exc_text`/`stack_info`, which formatters use verbatim.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _snapshot:
            return True
        self._scrub_message(record)
        self._scrub_exception(record)
        if record.stack_info and _contains_secret(record.stack_info):
            record.stack_info = redact(record.stack_info)
        return True

    @staticmethod
    def _scrub_message(record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not leak args through logging's error report
            message = f"{record.msg} {record.args!r}"
        if _contains_secret(message):
            record.msg = redact(message)
            record.args = ()

    @staticmethod
    def _scrub_exception(record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            if _contains_secret(text):
                record.exc_text = redact(text)
                record.exc_info = None  # keep handlers from re-rendering the raw exception
        elif record.exc_text and _contains_secret(record.exc_text):
            record.exc_text = redact(record.exc_text)


_FILTER = SecretRedactionFilter()


def install() -> None:
    """Wrap the process's log record factory with the redaction filter; safe to call repeatedly."""
    current = logging.getLogRecordFactory()
    if getattr(current, "_rollbook_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _FILTER.filter(record)
        return record

    factory._rollbook_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
