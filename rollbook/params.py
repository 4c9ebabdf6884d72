"""Turn `--param k=v` arguments into validated flow parameters before anything runs."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError


class ParamError(ValueError):
    """A parameter problem the user can fix; the message is one line."""


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, objects, quoted strings), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Parse `k=v` items; dotted keys (`request.namespace=x`) build nested objects."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"--param needs KEY=VALUE, got {item!r}")
        _set_path(params, key.strip().split("."), parse_value(raw))
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


def _one_line(name: str, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        location = ".".join([name, *(str(part) for part in error["loc"])])
        problems.append(f"{location}: {error['msg']}")
    return "invalid parameter " + "; ".join(problems)
