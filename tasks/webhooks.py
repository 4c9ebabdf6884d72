"""Rollout webhooks (Flagger's model): an HTTP POST with a JSON payload and a timeout at named phases.

A 2xx answer passes; anything else (an error status, a timeout, a refused connection) fails, with the reason.
Whether a failure stops the rollout is the flow's decision (pre-rollout and confirm-promotion do).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

Phase = Literal["pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback"]


class Webhook(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    type: Phase = Field(description="When it is called.")
    url: HttpUrl
    timeout_seconds: float = Field(default=10, gt=0, le=300)
    metadata: dict[str, str] = Field(default_factory=dict, description="Sent as-is in the payload.")


class WebhookResult(BaseModel):
    name: str
    type: Phase
    passed: bool
    detail: str


def call_webhook(hook: Webhook, payload: dict[str, Any]) -> WebhookResult:
    body = {**payload, "phase": hook.type, "metadata": hook.metadata}
    try:
        resp = httpx.post(str(hook.url), json=body, timeout=hook.timeout_seconds)
    except httpx.TimeoutException:
        return WebhookResult(
            name=hook.name, type=hook.type, passed=False, detail=f"timed out after {hook.timeout_seconds}s"
        )
    except httpx.HTTPError as exc:
        return WebhookResult(name=hook.name, type=hook.type, passed=False, detail=f"unreachable: {exc}")
    passed = 200 <= resp.status_code < 300
    return WebhookResult(
        name=hook.name, type=hook.type, passed=passed, detail=f"HTTP {resp.status_code} {resp.text[:200]}"
    )


@task(timeout_seconds=330)
def run_webhooks(hooks: list[Webhook], phase: Phase, payload: dict[str, Any]) -> list[WebhookResult]:
    """Every webhook of one phase, in order; never raises, the results say what failed."""
    return [call_webhook(h, payload) for h in hooks if h.type == phase]
