"""The Prometheus provider: instant queries against Prometheus' HTTP API (`/api/v1/query`), also Thanos or Mimir."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from blocks.prometheus import PrometheusConnection
from tasks.metrics.providers import MetricsUnavailable, MetricsUnreachable


class PrometheusProvider:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    @classmethod
    @contextmanager
    def open(cls, connection: PrometheusConnection) -> Iterator[PrometheusProvider]:
        """A provider whose HTTP client (address, token, timeout from the block) is closed after the block."""
        with connection.http_client() as http:
            yield cls(http)

    def _answer(self, query: str) -> dict[str, Any]:
        try:
            resp = self.http.get("/api/v1/query", params={"query": query})
        except httpx.HTTPError as exc:
            raise MetricsUnreachable(f"prometheus unreachable at {self.http.base_url}: {exc}") from None
        transient = resp.status_code >= 500 or resp.status_code == 429
        try:
            body: dict[str, Any] = resp.json()
        except ValueError:
            raise MetricsUnavailable(
                f"prometheus answered HTTP {resp.status_code} without JSON", transient=transient
            ) from None
        if body.get("status") != "success":
            raise MetricsUnavailable(
                f"query failed (HTTP {resp.status_code}, {body.get('errorType')}): {body.get('error')}; query: {query}",
                transient=transient,
            )
        data: dict[str, Any] = body["data"]
        return data

    def query_scalar(self, query: str) -> float | None:
        """The single value of a query; None for an empty result. More than one series is an error: a check
        must aggregate to one number."""
        data = self._answer(query)
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        result = data["result"]
        if not result:
            return None
        if len(result) > 1:
            raise MetricsUnavailable(f"query returned {len(result)} series, expected one: {query}")
        return float(result[0]["value"][1])

    def ping(self) -> None:
        self.query_scalar("vector(1)")
