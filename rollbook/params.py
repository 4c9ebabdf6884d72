"""Turn `--param k=v` arguments into validated flow parameters before anything runs.

Whatever a person types, the answer is one line naming the field they set (`request.to_revision: ...`), never a
traceback: values are parsed as JSON with their size and depth bounded, and the request models' own types
(`rollbook.types`, strict numbers) decide what is valid, exactly as they do when Prefect validates a run.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError

from rollbook.types import shown

MAX_VALUE_CHARS = 1 << 20  # the same bound as a values document
MAX_PROBLEMS = 3  # more would not fit on one readable line


class ParamError(ValueError):
    """A parameter problem the user can fix; the message is one line."""


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, objects, quoted strings), else the raw string.

    Raises ParamError for JSON that Python refuses to build (nested too deep, a number of more than 4,300
    digits) instead of passing it on as text, which would hide the problem behind a type error.
    """
    if len(text) > MAX_VALUE_CHARS:
        raise ParamError(f"value is {len(text):,} characters; at most {MAX_VALUE_CHARS:,} are accepted")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
    except RecursionError:
        raise ParamError("value is JSON nested too deeply to read") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise ParamError(f"value cannot be read: {str(exc).split(';')[0]}") from None


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Parse `k=v` items; dotted keys (`request.namespace=x`) build nested objects."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"--param needs KEY=VALUE, got {shown(item)}")
        path = key.strip().split(".")
        if not all(part.strip() for part in path):
            raise ParamError(f"--param {shown(key)}: empty part in the dotted key")
        try:
            value = parse_value(raw)
        except ParamError as exc:
            raise ParamError(f"--param {key.strip()}: {exc}") from None
        _set_path(params, path, value)
    return params


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    *parents, leaf = path
    for part in parents:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ParamError(f"--param {'.'.join(path)}: {part!r} is already set to a non-object value")
        target = child
    if isinstance(target.get(leaf), dict) and isinstance(value, dict):
        target[leaf].update(value)
    else:
        target[leaf] = value


def validate_for(fn: Callable[..., Any], params: dict[str, Any]) -> None:
    """Check names and types against the function's signature with pydantic; raise ParamError on the first issue.

    Done here instead of Prefect's `Flow.validate_parameters`, which logs a multi-line ERROR before raising.
    """
    signature = inspect.signature(fn)
    unknown = sorted(set(params) - set(signature.parameters))
    if unknown:
        raise ParamError(f"unknown parameter(s) {unknown}; the flow takes {list(signature.parameters)}")
    missing = [n for n, p in signature.parameters.items() if p.default is p.empty and n not in params]
    if missing:
        raise ParamError(f"missing required parameter(s) {missing}")
    hints = get_type_hints(fn)
    for name, value in params.items():
        try:
            TypeAdapter(hints.get(name, Any)).validate_python(value)
        except ValidationError as exc:
            raise ParamError(_one_line(name, exc)) from None
        except RecursionError:  # a last guard: the types bound depth, but a new field might not yet
            raise ParamError(f"invalid parameter {name}: nested too deeply to check") from None


def _one_line(name: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        location = ".".join([name, *(str(part) for part in error["loc"])])
        problems.append(f"{location}: {_message(error)}")
    unique = list(dict.fromkeys(problems))
    more = f"; and {len(unique) - MAX_PROBLEMS} more" if len(unique) > MAX_PROBLEMS else ""
    return "invalid parameter " + "; ".join(unique[:MAX_PROBLEMS]) + more


def _message(error: Any) -> str:
    """pydantic's message in the user's words, on one line."""
    kind, given = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return "unknown field (not part of this form; check the spelling)"
    if kind == "missing":
        return "required, but not given"
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if (kind == "string_type" or "must be text" in message) and isinstance(given, int | float):
        message += f", got {shown(given)}" if kind == "string_type" else ""
        message += "; quote text that looks like a number or true/false (KEY='\"1.10\"')"
    elif kind in ("int_type", "float_type", "bool_type") or kind.endswith("_parsing"):
        message += f", got {shown(given)}"
    return " ".join(message.split())
