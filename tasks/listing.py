"""The one way rollbook lists from the API server: page by page (limit/continue), keeping only what is read.

`pages()` yields each page, `list_all()` collects them, `count()` counts them. Every task that lists objects uses
one of the three, so page size, per-request timeout and continue handling are the same everywhere.

A page of 500 pods is megabytes of JSON, and turning all of it into Python dicts costs far more than the
request itself (about 3 s of CPU for 20,000 pods). msgspec decodes each page straight into small typed views
and skips every other field without building it, which is an order of magnitude cheaper in time and memory;
`Raw` pages keep whole objects for the few places that list a handful of them. The views (Node, Pod...) live
in rollbook/capacity.py beside the arithmetic that reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import msgspec

from rollbook.capacity import Node, Pod, PodSpec

__all__ = ["PAGE_SIZE", "Node", "Pod", "PodSpec", "Raw", "count", "decode_page", "list_all", "pages"]

PAGE_SIZE = 500
T = TypeVar("T")
# Per page request: a page of 500 pods is megabytes, slower than the 10 s single-object reads get. Kept here,
# not imported from tasks.cluster, so tasks.cluster (count_pods) can page with this module without a cycle.
PAGE_TIMEOUT_SECONDS = 30


class _ListMeta(msgspec.Struct, frozen=True):
    continue_: str = msgspec.field(default="", name="continue")


class _Page(msgspec.Struct, Generic[T], frozen=True):
    items: list[T] | None = None
    metadata: _ListMeta = _ListMeta()


Raw = dict[str, Any]

_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(item: Any) -> msgspec.json.Decoder[Any]:
    if item not in _DECODERS:
        _DECODERS[item] = msgspec.json.Decoder(_Page[item])
    return _DECODERS[item]


def decode_page(data: bytes, item: type[T]) -> tuple[list[T], str]:
    """One list response: (its items as `item` views, the continue token or '')."""
    page = _decoder(item).decode(data)
    return page.items or [], page.metadata.continue_


def pages(list_fn: Callable[..., Any], item: type[T], *args: Any, **kwargs: Any) -> Iterator[list[T]]:
    """Items of a kubernetes-client list call, one page (PAGE_SIZE, limit/continue) at a time, as `item`.

    `list_fn` is a bound list method (`CoreV1Api(api).list_namespaced_pod`); `args`/`kwargs` are its own
    (namespace, label_selector=..., field_selector=...)."""
    token: str | None = None
    while True:
        resp = list_fn(
            *args,
            limit=PAGE_SIZE,
            _continue=token,
            _preload_content=False,
            _request_timeout=PAGE_TIMEOUT_SECONDS,
            **kwargs,
        )
        items, token = decode_page(resp.data, item)
        yield items
        if not token:
            return


def list_all(list_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Raw]:
    """Every item of a list call as plain JSON dicts (for the few places that need whole objects)."""
    return [obj for page in pages(list_fn, Raw, *args, **kwargs) for obj in page]


class _Item(msgspec.Struct, frozen=True):
    """An item with none of its fields decoded: what counting needs."""


def count(list_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """How many items a list call returns, page by page, without decoding any of their fields."""
    return sum(len(page) for page in pages(list_fn, _Item, *args, **kwargs))
