"""Keep unwrapped secret values out of every log record this process writes.

Prefect masks `SecretStr` fields in API responses, but once code calls `get_secret_value()` the plain
value is an ordinary string: `get_run_logger().info(value)` or a `print` under `log_prints=True` sends it
to the Prefect API and the console as-is (only PREFECT_API_KEY is redacted by Prefect itself).

This module keeps a process-wide set of secret values and is the one masking path for everything a user can
see: log records, and (`install_prefect_egress`) the exception text that becomes a state message, event or
persisted result, and every artifact's data and description.

* `reveal(secret)` is the one sanctioned way to unwrap a `SecretStr`: it records the value, then returns it.
* Blocks in `blocks/` register all their secret fields as soon as they are constructed or loaded
  (`register_model_secrets`), so even a value unwrapped by a third-party library is known.
* `SecretRedactionFilter` rewrites a record's message, args, exception text and stack text.
* `install()` applies that filter inside the logging record factory, i.e. to every record created by any
  logger in the process. That is deliberately below Prefect's logging config: Prefect rebuilds its
  handlers whenever `setup_logging()` runs (and again in each flow-run subprocess), while the record
  factory is untouched by `logging.config.dictConfig`, so nothing per-flow or per-handler can be forgotten.
  Importing `rollbook` calls `install()`.
* A value is scrubbed in the forms it travels in: as given, URL-encoded (`quote`, `quote_plus`), JSON-escaped
  (a table artifact's cells), and a URL's password on its own (decoded and encoded): a DSN's password shows up
  alone in a driver's error, and percent-encoded when the DSN was built from parts.
* `install_prefect_egress()` (called by `flows`, `tasks` and `blocks` on import, as they import Prefect anyway)
  wraps Prefect's exception-to-state converters and its artifact client: an exception is scrubbed in place
  (its args and string attributes) before Prefect turns it into a state message, a result record and an
  event, and artifact payloads are scrubbed before they are sent.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

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


# A URL's password is registered on its own only when at least this long: "pw" would mask half of every text.
MIN_PART_LENGTH = 4


def _candidates(value: str) -> Iterable[str]:
    """The strings to scrub for one secret: the value, its long lines if multi-line, its URL password,
    each also in its encoded forms."""
    plain: list[str] = []
    if value.strip("*"):  # "" and Prefect's "********" mask are not secrets
        plain.append(value)
    if "\n" in value:
        plain.extend(line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_LINE_LENGTH)
    password = _url_password(value)
    if password:
        plain.extend(p for p in {password, unquote(password)} if len(p) >= MIN_PART_LENGTH)
    for item in plain:
        yield from _encoded_forms(item)


def _url_password(value: str) -> str | None:
    """The raw (still percent-encoded) password of a URL-shaped value such as a DSN, else None."""
    if "://" not in value or "@" not in value:
        return None
    try:
        return urlsplit(value.strip()).password
    except ValueError:
        return None


def _encoded_forms(value: str) -> Iterable[str]:
    """The value as given, URL-encoded (path and form style) and JSON-escaped, without duplicates."""
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1]}
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    yield from forms


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


def redact_value(value: Any, depth: int = 0) -> Any:
    """`redact` applied to every string inside plain data (dicts, lists, tuples), e.g. an artifact's rows."""
    if depth > 20 or not _snapshot:
        return value
    if isinstance(value, str):
        return redact(value) if _contains_secret(value) else value
    if isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
        return redact(text).encode() if _contains_secret(text) else value
    if isinstance(value, dict):
        return {key: redact_value(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(redact_value(item, depth + 1) for item in value)
    return value


def scrub_exception(exc: BaseException | None) -> None:
    """Remove registered secrets from an exception and its causes, in place.

    In place, because Prefect keeps the object: it becomes the failed state's message, is pickled as the run's
    result and is re-raised to the caller, whose retry conditions still need its type. Its args and string
    attributes (a CalledProcessError's cmd and stderr, an ApiException's body) are rewritten, so an `__str__`
    built from them renders scrubbed too.
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen or not _snapshot:
            continue
        seen.add(id(current))
        try:
            current.args = redact_value(current.args)
        except (AttributeError, TypeError):  # an exception type with read-only args
            pass
        for name, value in list(getattr(current, "__dict__", {}).items()):
            scrubbed = redact_value(value)
            if scrubbed != value:
                try:
                    setattr(current, name, scrubbed)
                except (AttributeError, TypeError):
                    pass
        pending.extend([current.__cause__, current.__context__, *getattr(current, "exceptions", ())])


def _state_scrubbing(convert: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap one of Prefect's exception-to-state converters: scrub the exception first, then the message."""

    def scrubbed_state(state: Any) -> Any:
        if getattr(state, "message", None):
            state.message = redact(state.message)
        return state

    if getattr(convert, "_rollbook_scrubbing", False):
        return convert
    if _is_coroutine_function(convert):

        @functools.wraps(convert)
        async def async_wrapper(exc: BaseException | None = None, *args: Any, **kwargs: Any) -> Any:
            scrub_exception(exc if exc is not None else sys.exc_info()[1])
            return scrubbed_state(await convert(exc, *args, **kwargs))

        async_wrapper._rollbook_scrubbing = True  # type: ignore[attr-defined]
        return async_wrapper

    @functools.wraps(convert)
    def wrapper(exc: BaseException | None = None, *args: Any, **kwargs: Any) -> Any:
        scrub_exception(exc if exc is not None else sys.exc_info()[1])
        return scrubbed_state(convert(exc, *args, **kwargs))

    wrapper._rollbook_scrubbing = True  # type: ignore[attr-defined]
    return wrapper


def _is_coroutine_function(func: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func)


def _artifact_scrubbing(create: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an artifact client's `create_artifact`: the data and description leave the process scrubbed."""
    if getattr(create, "_rollbook_scrubbing", False):
        return create

    def scrubbed(artifact: Any) -> Any:
        return artifact.model_copy(
            update={"data": redact_value(artifact.data), "description": redact_value(artifact.description)}
        )

    if _is_coroutine_function(create):

        @functools.wraps(create)
        async def async_wrapper(self: Any, artifact: Any) -> Any:
            return await create(self, scrubbed(artifact))

        async_wrapper._rollbook_scrubbing = True  # type: ignore[attr-defined]
        return async_wrapper

    @functools.wraps(create)
    def wrapper(self: Any, artifact: Any) -> Any:
        return create(self, scrubbed(artifact))

    wrapper._rollbook_scrubbing = True  # type: ignore[attr-defined]
    return wrapper


_STATE_CONVERTERS = (
    "exception_to_failed_state",
    "exception_to_crashed_state",
    "exception_to_failed_state_sync",
    "exception_to_crashed_state_sync",
)
# Where Prefect defines the converters and the engines that imported them by name (patched when loaded).
_STATE_MODULES = ("prefect.states", "prefect._internal.states", "prefect.task_engine", "prefect.flow_engine")


def install_prefect_egress() -> None:
    """Scrub what leaves the process through Prefect besides logs; safe to call repeatedly.

    Prefect has no hook between an exception and the state it reports, so its converters are wrapped where
    they are defined (the engines, imported later, pick the wrappers up) and in any engine already imported.
    """
    import importlib

    from prefect.client.orchestration._artifacts import client as artifact_client

    importlib.import_module("prefect.states")
    importlib.import_module("prefect._internal.states")
    for module_name in _STATE_MODULES:
        module = sys.modules.get(module_name)
        for name in _STATE_CONVERTERS:
            original = getattr(module, name, None) if module is not None else None
            if original is not None:
                setattr(module, name, _state_scrubbing(original))
    for cls in (artifact_client.ArtifactClient, artifact_client.ArtifactAsyncClient):
        cls.create_artifact = _artifact_scrubbing(cls.create_artifact)  # type: ignore[method-assign]
