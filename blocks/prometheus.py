"""A Prometheus HTTP API that runbooks query to judge a rollout."""

from __future__ import annotations

import httpx
from pydantic import Field, HttpUrl, SecretStr

from blocks._base import RollbookBlock
from rollbook import redaction
from rollbook.types import FormOptional


class PrometheusConnection(RollbookBlock):
    """Prometheus (or a compatible API such as Thanos or Mimir) with optional bearer-token auth."""

    _block_type_name = "Rollbook Prometheus Connection"
    _block_type_slug = "rollbook-prometheus-connection"
    _description = "Prometheus query API address and optional bearer token."

    url: HttpUrl = Field(description="Base URL of the Prometheus server, e.g. http://prometheus:9090.")
    bearer_token: FormOptional[SecretStr] = Field(default=None, description="Token sent as 'Authorization: Bearer'.")
    timeout_seconds: float = Field(default=10.0, gt=0, le=300, description="Timeout for each HTTP request.")

    def http_client(self) -> httpx.Client:
        """A client with base URL, auth header and timeout set; close it (or use `with`) when done."""
        headers = {}
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {redaction.reveal(self.bearer_token)}"
        return httpx.Client(base_url=str(self.url), headers=headers, timeout=self.timeout_seconds)
