"""The user's own checks of a rollout: webhooks (Flagger's model) and blue/green's acceptance check.

A webhook is an HTTP POST with a JSON payload and a timeout at a named phase. A 2xx answer passes; anything else
(an error status, a timeout, a refused connection) fails, with the reason. Whether a failure stops the rollout
is the flow's decision (pre-rollout and confirm-promotion do). The acceptance check is a GET that must answer
2xx and/or a command that must exit 0. Neither is retried (policy USER_HOOK): the first answer is the evidence.
"""

from __future__ import annotations

import subprocess
from typing import Any, Literal

import httpx
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from tasks.policies import USER_HOOK

Phase = Literal["pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback"]


class Webhook(BaseModel):
    # strict: a timeout is a number and metadata text, never coerced
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=63)
    type: Phase = Field(description="When it is called.")
    url: HttpUrl
    timeout_seconds: float = Field(default=10, gt=0, le=300)
    metadata: dict[str, str] = Field(default={}, description="Sent as-is in the payload.")


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


@task(**USER_HOOK)
def run_webhooks(hooks: list[Webhook], phase: Phase, payload: dict[str, Any]) -> list[WebhookResult]:
    """Every webhook of one phase, in order; never raises, the results say what failed."""
    return [call_webhook(h, payload) for h in hooks if h.type == phase]


class AcceptanceFailed(RuntimeError):
    """The new version answered the acceptance check badly; the message names the call or command."""


@task(**USER_HOOK)
def acceptance_check(url: str | None, command: list[str] | None, timeout_seconds: int) -> str:
    """What passed; raises AcceptanceFailed unless the GET answers 2xx and the command (an argv list, never a
    shell string) exits 0."""
    done = []
    if url:
        try:
            resp = httpx.get(url, timeout=timeout_seconds)
        except httpx.HTTPError as exc:
            raise AcceptanceFailed(f"acceptance_url {url} could not be called: {exc}") from None
        if not 200 <= resp.status_code < 300:
            raise AcceptanceFailed(f"acceptance call {url} answered HTTP {resp.status_code}")
        done.append(f"GET {url}: HTTP {resp.status_code}")
    if command:
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_seconds, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AcceptanceFailed(f"acceptance_command {command} could not run: {exc}") from None
        if proc.returncode != 0:
            raise AcceptanceFailed(
                f"acceptance command {command} exited {proc.returncode}: {proc.stderr.strip()[-300:]}"
            )
        done.append(f"{' '.join(command)}: exit 0")
    return "; ".join(done) or "no acceptance check configured"
