"""What an observer renders and for which traffic: the interface every data plane's observer implements."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

ObserverKind = Literal["nginx-ingress", "envoy-gateway"]
BuiltinCheck = Literal["request-success-rate", "request-duration"]
SUCCESS_RATE: BuiltinCheck = "request-success-rate"
DURATION: BuiltinCheck = "request-duration"

# Kubernetes object names (DNS-1123 subdomains): they go into PromQL label matchers, so nothing else may.
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class Target(BaseModel):
    """The traffic a check judges: what reaches the canary's Service through the rollout's route, as seen by the
    data plane `observer` names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    observer: ObserverKind
    namespace: str = Field(pattern=K8S_NAME)
    service: str = Field(pattern=K8S_NAME, description="The canary's Service (where the judged requests go).")
    route: str = Field(pattern=K8S_NAME, description="The object carrying the split: stable Ingress or HTTPRoute.")
    version: str = Field(default="", pattern=r"^[A-Za-z0-9._+-]*$", description="For custom queries only.")


class Observer(Protocol):
    """Writes the PromQL of a built-in check over `window` (a Prometheus duration such as 1m)."""

    def query(self, check: BuiltinCheck, target: Target, window: str) -> str: ...


def success_rate(metric: str, matchers: str, not_error: str, window: str) -> str:
    """Percent of `metric` (a request counter) whose series also match `not_error`. No error series at all means
    100 %; no requests at all stays empty (no data: a failed check, never a pass)."""
    ok = f"(sum(rate({metric}{{{matchers},{not_error}}}[{window}])) or vector(0))"
    return f"100 * {ok} / sum(rate({metric}{{{matchers}}}[{window}]))"


def p99(buckets: str, matchers: str, window: str) -> str:
    """The 99th percentile of a histogram's buckets, in the histogram's own unit."""
    return f"histogram_quantile(0.99, sum by (le) (rate({buckets}{{{matchers}}}[{window}])))"
