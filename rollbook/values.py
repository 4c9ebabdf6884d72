"""Helm values from people: bounded YAML loading and the one deep merge every flow uses.

Values arrive from a form or a command line and are handed to helm, so a careless or hostile document must fail
here, quickly and with a message naming the field, never later as a RecursionError or a process eating memory:
- size: at most `MAX_BYTES` of text;
- depth: at most `MAX_DEPTH` nested mappings/lists, counted on the parser's events before anything is built
  (PyYAML builds documents recursively, so a document nested 20,000 levels deep would overflow the stack);
- aliases: allowed (values files use `<<: *defaults`), but the document as expanded, with every alias
  replaced by what it points to, must stay under `MAX_NODES` values and `MAX_DEPTH` levels, which refuses a
  "billion laughs" document after counting its few hundred nodes instead of expanding it; an alias that
  refers to itself is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 250_000

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: faster


class ValuesError(ValueError):
    """A values document or mapping that cannot be used; the message names the field and the limit."""


def load_yaml(text: str, *, field: str) -> dict[str, Any]:
    """A YAML (or JSON) values document as a mapping; empty text is an empty mapping.

    `field` names the parameter in every error message, e.g. `values_yaml is nested more than 64 levels deep`.
    """
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_BYTES:
        raise ValuesError(f"{field} is {size:,} bytes; at most {MAX_BYTES:,} bytes of YAML are accepted")
    if not text.strip():
        return {}
    loader = _Loader(text)
    try:
        _check_events(loader, field=field)
    finally:
        loader.dispose()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _check_expanded(node, field=field)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ValuesError(_yaml_problem(field, exc)) from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValuesError(f"{field} must be a mapping of keys to values at the top level, got a {_kind(data)}")
    if not all(isinstance(key, str) for key in data):
        raise ValuesError(f"{field}: every top-level key must be text")
    return data


def _check_events(loader: yaml.SafeLoader, *, field: str) -> None:
    """Depth and document count from the parser's event stream, which is built without recursion."""
    depth = documents = 0
    try:
        while (event := loader.get_event()) is not None:
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ValuesError(f"{field} is nested more than {MAX_DEPTH} levels deep; flatten it")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise ValuesError(f"{field} holds more than one YAML document ('---'); give one")
    except yaml.YAMLError as exc:
        if "nesting depth" in str(getattr(exc, "problem", "")):  # libyaml's own limit (1,000) met while scanning
            raise ValuesError(f"{field} is nested more than {MAX_DEPTH} levels deep; flatten it") from None
        raise ValuesError(_yaml_problem(field, exc)) from None


def _check_expanded(root: yaml.Node, *, field: str) -> None:
    """Count the document as expanded (aliases repeat their anchor's node object) without expanding it.

    Iterative with memoised sizes per node object, so the work is proportional to the text, not to the
    expansion; a node met again while it is being counted is an alias to itself.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, expanded depth)
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            kids = [sizes[id(child)] for child in _children(node)]
            count = 1 + sum(c for c, _ in kids)
            depth = 1 + max((d for _, d in kids), default=0) if _is_collection(node) else 0
            if count > MAX_NODES:
                raise ValuesError(
                    f"{field} expands to more than {MAX_NODES:,} values (YAML aliases repeat what they point to)"
                )
            if depth > MAX_DEPTH:
                raise ValuesError(f"{field} is nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
            sizes[key] = (count, depth)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise ValuesError(f"{field} has a YAML alias that refers to itself")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _is_collection(node: yaml.Node) -> bool:
    return isinstance(node, yaml.SequenceNode | yaml.MappingNode)


def _yaml_problem(field: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{field} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"


def _kind(data: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(data), "value")


def check_values(values: Mapping[str, Any], *, field: str) -> None:
    """The same depth and size limits for values given as a mapping (JSON from a form or `--param`).

    Iterative, so a mapping nested 20,000 levels deep is refused instead of overflowing a recursive walk.
    """
    count = 0
    stack: list[tuple[object, int]] = [(values, 1)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ValuesError(f"{field} holds more than {MAX_NODES:,} values")
        if isinstance(item, Mapping | list | tuple):
            if depth > MAX_DEPTH:
                raise ValuesError(f"{field} is nested more than {MAX_DEPTH} levels deep; flatten it")
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)


def deep_merge(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of values files, applied left to right: mappings merge key by key, anything else
    (lists included) is replaced by the later value.

    The result shares no mutable object with the inputs, so a caller may change it (or the inputs) freely.
    """
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for override in overrides:
        for key, value in override.items():
            current = merged.get(key)
            if isinstance(value, Mapping) and isinstance(current, Mapping):
                merged[key] = deep_merge(current, value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged
