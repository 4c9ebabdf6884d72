"""The alert receiver (`rollbook webhook`): Alertmanager's webhook notifications in, recovery runs out.

`POST /alerts` answers in this order, so the cheap refusals come first and nothing is started by a request that
fails any of them: 429 over the rate limit; 401 without the bearer token (compared in constant time, never
logged); 415 for a body that is not JSON; 413 for a body over the limit, counted while it is read, so a
client cannot make the receiver buffer more than the limit; 408 for a body that trickles in slower than the read
timeout; 400 for anything that is not an Alertmanager v4 notification; 422 when an alert matched a rule but its
labels cannot make valid parameters (nothing of that notification is started). Then every alert gets one
decision (started, duplicate, cooldown, unmatched, resolved), the answer is 200 once Prefect has accepted each
run, and 503 while Prefect cannot be reached, which Alertmanager retries; the idempotency key makes the retry
find the runs that already exist. `GET /healthz` answers 200 for probes.

Requests that are refused before they are read (401, 413, ...) are logged, not sent to Prefect as events, so
nobody can fill the event feed without the token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rollbook import redaction
from rollbook.alert_rules import Launch, RefusedAlert, RuleSet
from rollbook.alerts import Alert, Notification, PayloadError, idempotency_key, parse_notification

LOG = logging.getLogger("rollbook.webhook")
MIN_TOKEN_CHARS = 16
MAX_CLIENTS = 4096

Kind = Literal["started", "duplicate", "cooldown", "unmatched", "resolved", "refused"]


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 256 * 1024  # 100 alerts with their labels and annotations fit well within it
    read_timeout_seconds: float = 10.0
    rate_per_second: float = 20.0
    burst: int = 40


@dataclass(frozen=True)
class Decision:
    """What happened to one alert of a notification; each one is also a Prefect event."""

    kind: Kind
    alert: Alert
    rule: str | None = None
    deployment: str | None = None
    flow_run_id: str | None = None
    idempotency_key: str | None = None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "alertname": self.alert.name,
            "fingerprint": self.alert.fingerprint,
            "decision": self.kind,
            "rule": self.rule,
            "deployment": self.deployment,
            "flow_run_id": self.flow_run_id,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Outcome:
    kind: Literal["started", "duplicate", "cooldown"]
    flow_run_id: str
    detail: str = ""


class LauncherUnavailable(RuntimeError):
    """Prefect cannot take the run now (down, or the deployment not registered yet); Alertmanager retries."""


class Launcher(Protocol):
    """Starts runs and records decisions; `rollbook.alert_launcher.PrefectLauncher` is the real one."""

    async def launch(self, launch: Launch) -> Outcome: ...

    def record(self, decision: Decision, notification: Notification) -> None: ...


class TooLarge(Exception):
    pass


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _refusal(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def authorized(header: str | None, token: SecretStr) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time over bytes (any length, any characters)."""
    scheme, _, given = (header or "").partition(" ")
    expected = token.get_secret_value().encode()
    return hmac.compare_digest(given.strip().encode(), expected) and scheme.lower() == "bearer"


async def read_limited(stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The body, refusing it the moment it passes `limit` bytes (the rest is never read)."""
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class Receiver:
    def __init__(self, *, rules: RuleSet, launcher: Launcher, token: SecretStr, limits: Limits) -> None:
        if len(token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"the webhook token must have at least {MIN_TOKEN_CHARS} characters")
        redaction.register(token.get_secret_value())
        self.rules, self.launcher, self.token, self.limits = rules, launcher, token, limits
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.lock = asyncio.Lock()  # one notification at a time: the duplicate and cooldown checks stay exact

    async def alerts(self, request: Request) -> JSONResponse:
        client = request.client.host if request.client else "?"
        if not self._bucket(client).take():
            LOG.warning("refused a request from %s: over the rate limit", client)
            return _refusal(429, "too many requests; retry later", **{"Retry-After": "1"})
        if not authorized(request.headers.get("authorization"), self.token):
            LOG.warning("refused a request from %s: missing or wrong bearer token", client)
            return _refusal(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        body = await self._body(request)
        if isinstance(body, JSONResponse):
            LOG.warning("refused a request from %s: %s", client, bytes(body.body).decode()[:300])
            return body
        try:
            notification = parse_notification(body)
        except PayloadError as exc:
            LOG.warning("refused a request from %s: not an Alertmanager v4 notification: %s", client, exc)
            return _refusal(400, f"not an Alertmanager v4 notification: {exc}")
        async with self.lock:
            return await self._handle(notification)

    def _bucket(self, client: str) -> TokenBucket:
        """One bucket per client address (the most recent MAX_CLIENTS), so a flood from elsewhere cannot spend
        Alertmanager's budget: Alertmanager does not retry a 429, so its own notifications must not get one."""
        bucket = self.buckets.pop(client, None) or TokenBucket(self.limits.rate_per_second, self.limits.burst)
        self.buckets[client] = bucket
        while len(self.buckets) > MAX_CLIENTS:
            self.buckets.popitem(last=False)
        return bucket

    async def _body(self, request: Request) -> bytes | JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return _refusal(415, "the body must be application/json")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or len(declared) > 12):
            return _refusal(400, "bad Content-Length")
        if declared is not None and int(declared) > self.limits.max_body_bytes:
            return _refusal(413, f"the body is over {self.limits.max_body_bytes} bytes")
        try:
            async with asyncio.timeout(self.limits.read_timeout_seconds):
                return await read_limited(request.stream(), self.limits.max_body_bytes)
        except TooLarge:
            return _refusal(413, f"the body is over {self.limits.max_body_bytes} bytes")
        except TimeoutError:
            return _refusal(408, f"the body did not arrive within {self.limits.read_timeout_seconds:g} s")

    async def _handle(self, notification: Notification) -> JSONResponse:
        if notification.truncatedAlerts:
            LOG.warning("Alertmanager left %d alerts of group %s out (max_alerts): they are not seen here",
                        notification.truncatedAlerts, notification.groupKey[:200])  # fmt: skip
        planned: list[Decision | Launch] = []
        refused: list[Decision] = []
        for alert in notification.alerts:
            item = self._plan(notification, alert)
            planned.append(item)
            if isinstance(item, Decision) and item.kind == "refused":
                refused.append(item)
        if refused:
            for decision in refused:
                alert = decision.alert
                LOG.warning("refused alert %s (%s): %s", alert.name, alert.fingerprint, decision.detail)
                self.launcher.record(decision, notification)
            body = {"error": "alerts refused; nothing was started", "decisions": [d.as_json() for d in refused]}
            return JSONResponse(body, status_code=422)
        decisions = []
        for item in planned:
            try:
                decision = item if isinstance(item, Decision) else await self._launch(item)
            except LauncherUnavailable as exc:
                LOG.error("Prefect did not take the run (Alertmanager will retry): %s", exc)
                return _refusal(503, f"Prefect is unavailable, retry later: {exc}")
            except Exception as exc:  # noqa: BLE001 - answered, logged with its traceback, retried by Alertmanager
                LOG.exception("starting the run of %s failed", item.deployment if isinstance(item, Launch) else "?")
                return _refusal(500, f"starting the run failed: {type(exc).__name__}")
            LOG.info("alert %s (%s): %s %s", decision.alert.name, decision.alert.fingerprint, decision.kind,
                     decision.detail)  # fmt: skip
            self.launcher.record(decision, notification)
            decisions.append(decision)
        return JSONResponse({"decisions": [d.as_json() for d in decisions]})

    def _plan(self, notification: Notification, alert: Alert) -> Decision | Launch:
        rule = self.rules.rule_for(alert)
        if rule is None:
            kind: Kind = "resolved" if alert.status == "resolved" else "unmatched"
            return Decision(kind, alert, detail="no rule reacts to it; acknowledged, nothing started")
        try:
            parameters = self.rules.parameters(rule, alert, notification)
        except RefusedAlert as exc:
            return Decision("refused", alert, rule=rule.name, deployment=rule.deployment, detail=str(exc))
        key = idempotency_key(notification, alert, rule=rule.name)
        return Launch(rule=rule, alert=alert, parameters=parameters, idempotency_key=key)

    async def _launch(self, launch: Launch) -> Decision:
        outcome = await self.launcher.launch(launch)
        return Decision(
            outcome.kind,
            launch.alert,
            rule=launch.rule.name,
            deployment=launch.deployment,
            flow_run_id=outcome.flow_run_id,
            idempotency_key=launch.idempotency_key,
            detail=outcome.detail,
        )


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(*, rules: RuleSet, launcher: Launcher, token: SecretStr, limits: Limits | None = None) -> Starlette:
    receiver = Receiver(rules=rules, launcher=launcher, token=token, limits=limits or Limits())
    routes = [Route("/alerts", receiver.alerts, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    return Starlette(routes=routes)


TOKEN_ENV = "ROLLBOOK_WEBHOOK_TOKEN"


def token_from(*, file: str | None, env: dict[str, str]) -> str | None:
    """A token file (as Alertmanager's `credentials_file`, one line) or the ROLLBOOK_WEBHOOK_TOKEN variable."""
    if file:
        with open(file) as handle:
            return handle.read().strip()
    return env.get(TOKEN_ENV) or None


def serve(app: Starlette, *, host: str, port: int, tls_cert: str | None = None, tls_key: str | None = None) -> None:
    """uvicorn with bounded connections and headers; TLS when a certificate and key are given."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        limit_concurrency=64,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
        server_header=False,
        log_level="info",
    )
