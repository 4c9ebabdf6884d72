"""The metric provider kinds and how a flow's tasks open one (a `with` block: its connection is closed after)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from blocks.prometheus import PrometheusConnection
from rollbook.plugins import lookup, registry
from tasks.metrics.prometheus import PrometheusProvider
from tasks.metrics.providers import MetricsProvider, ProviderKind

OpenProvider = Callable[[PrometheusConnection], AbstractContextManager[MetricsProvider]]

PROVIDERS: dict[str, OpenProvider] = registry(ProviderKind, {"prometheus": PrometheusProvider.open})


def open_provider(
    connection: PrometheusConnection, kind: ProviderKind = "prometheus"
) -> AbstractContextManager[MetricsProvider]:
    return lookup(PROVIDERS, kind, concern="metrics provider")(connection)
