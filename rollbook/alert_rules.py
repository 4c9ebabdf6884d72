"""Routing rules: which alert starts which runbook, with which parameters (one YAML file, checked at start-up).

```yaml
rules:
  - name: demo-error-rate            # shown in the run's tags, events and logs
    match: {alertname: DemoHighErrorRate, severity: critical}   # every label must be equal
    deployment: helm-rollback        # a catalogue deployment
    status: firing                   # or resolved: a rule that reacts to the resolved notification
    cooldown_seconds: 600            # one run per target (deployment + parameters but controls) in this window
    labels: {namespace: dns-label, release: release-name}       # the labels the parameters may use
    parameters:                      # the flow's parameters; "{{ name }}" is replaced by that label's value
      request: {namespace: "{{ namespace }}", release: "{{ release }}", kubeconfig_path: /etc/rollbook/kubeconfig}
      controls: {require_approval: false}
```

An alert can never choose parameters: the rule fixes their shape, and a placeholder (a whole string value, never
part of one) takes one label's value only after that value matched the label's declared kind, then the whole
set is validated against the flow's own parameter model (`rollbook.params.validate_for`), exactly as a run from
the UI would be. `controls.reason` and `controls.requested_by` are filled from the alert when the rule leaves
them out. The first rule that matches wins; an alert no rule matches is acknowledged and only logged.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from rollbook.alerts import Alert, LabelName, Notification
from rollbook.params import ParamError, validate_for
from rollbook.types import DNS_LABEL, DNS_SUBDOMAIN, OCI_TAG, RELEASE_NAME

PLACEHOLDER = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
# What a label used in parameters may hold (matched in full): only these kinds, each a Kubernetes/helm name rule,
# so a label value can never carry spaces, quotes, slashes, flags or template syntax into a parameter.
KINDS: dict[str, tuple[str, int]] = {
    "dns-label": (DNS_LABEL, 63),
    "dns-subdomain": (DNS_SUBDOMAIN, 253),
    "release-name": (RELEASE_NAME, 53),
    "image-tag": (OCI_TAG, 128),
}
MAX_RULES = 200
MAX_RULES_FILE = 1 << 20

FlowFunctions = Mapping[str, Callable[..., Any]]


class RulesError(ValueError):
    """The rules file is wrong; the message is one line naming the file, the rule and the field."""


class RefusedAlert(ValueError):
    """An alert matched a rule but its labels cannot make valid parameters; it starts nothing."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    name: Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]
    match: dict[LabelName, Annotated[str, StringConstraints(max_length=1024)]] = Field(min_length=1)
    deployment: str = Field(description="A catalogue deployment name, e.g. helm-rollback.")
    # not `on:`, which YAML 1.1 (PyYAML) reads as the boolean true
    status: Literal["firing", "resolved"] = Field(default="firing", description="Which notifications it reacts to.")
    cooldown_seconds: int = Field(default=600, ge=0, le=7 * 24 * 3600)
    labels: dict[LabelName, str] = Field(default={}, description="Label -> the kind its value must be.")
    parameters: dict[str, Any] = {}

    @field_validator("labels")
    @classmethod
    def _known_kinds(cls, value: dict[str, str]) -> dict[str, str]:
        for label, kind in value.items():
            if kind not in KINDS:
                raise ValueError(f"{label}: unknown kind {kind!r}; use one of {sorted(KINDS)}")
        return value

    def matches(self, alert: Alert) -> bool:
        return alert.status == self.status and all(alert.labels.get(k) == v for k, v in self.match.items())


@dataclass(frozen=True)
class Launch:
    """One run to start for one alert."""

    rule: Rule
    alert: Alert
    parameters: dict[str, Any]
    idempotency_key: str

    @property
    def deployment(self) -> str:
        """Prefect's `flow/deployment` name: catalogue deployments are named after their flow."""
        return f"{self.rule.deployment}/{self.rule.deployment}"

    @property
    def target(self) -> str:
        """What the cooldown is about: the deployment and the parameters the run gets, hashed; not `controls`,
        whose reason names the alert occurrence (the same release is the same target whichever alert fired)."""
        what = {key: value for key, value in self.parameters.items() if key != "controls"}
        canonical = json.dumps([self.rule.deployment, what], sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class RuleSet:
    def __init__(self, rules: list[Rule], flows: FlowFunctions) -> None:
        self.rules = rules
        self.flows = flows

    def rule_for(self, alert: Alert) -> Rule | None:
        return next((rule for rule in self.rules if rule.matches(alert)), None)

    def parameters(self, rule: Rule, alert: Alert, notification: Notification) -> dict[str, Any]:
        """The rule's parameters with the alert's (checked) label values, validated for the flow."""
        values: dict[str, str] = {}
        for label, kind in rule.labels.items():
            value = alert.labels.get(label)
            if value is None:
                raise RefusedAlert(f"rule {rule.name}: the alert has no {label!r} label")
            if not _fits(kind, value):
                raise RefusedAlert(f"rule {rule.name}: label {label}={_short(value)} is not a {kind}")
            values[label] = value
        params = _fill(copy.deepcopy(rule.parameters), values)
        fn = self.flows[rule.deployment]
        _default_controls(fn, params, alert, notification, rule)
        try:
            validate_for(fn, params)
        except ParamError as exc:
            raise RefusedAlert(f"rule {rule.name}: {exc}") from None
        return params


def _fits(kind: str, value: str) -> bool:
    pattern, limit = KINDS[kind]
    return len(value) <= limit and re.fullmatch(pattern, value) is not None


def _short(value: str) -> str:
    return repr(value[:40] + "…") if len(value) > 40 else repr(value)


def _fill(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _fill(child, values) for key, child in node.items()}
    if isinstance(node, list):
        return [_fill(child, values) for child in node]
    if isinstance(node, str) and (found := PLACEHOLDER.match(node)):
        return values[found.group(1)]
    return node


def _placeholders(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_placeholders(child) for child in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_placeholders(child) for child in node)) if node else set()
    if isinstance(node, str):
        if found := PLACEHOLDER.match(node):
            return {found.group(1)}
        if "{{" in node or "}}" in node:
            raise ValueError(f"{node!r}: a placeholder must be a whole value, like '{{{{ namespace }}}}'")
    return set()


def _default_controls(
    fn: Callable[..., Any], params: dict[str, Any], alert: Alert, notification: Notification, rule: Rule
) -> None:
    """Changing flows take `controls`: who asked (Alertmanager) and why (this alert), unless the rule says."""
    if "controls" not in inspect.signature(fn).parameters:
        return
    controls = params.setdefault("controls", {})
    if not isinstance(controls, dict):
        return  # validate_for names the problem
    since = alert.startsAt.strftime("%Y-%m-%dT%H:%M:%SZ")
    controls.setdefault("reason", f"alert {alert.name[:200]} firing since {since} (rule {rule.name})")
    controls.setdefault("requested_by", f"alertmanager receiver {notification.receiver[:60]}")


def load_rules(path: Path, flows: FlowFunctions) -> RuleSet:
    """Read and check the whole file; any problem is one RulesError line, so the receiver does not start."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from None
    if len(text) > MAX_RULES_FILE:
        raise RulesError(f"{path}: the rules file is {len(text):,} characters; at most {MAX_RULES_FILE:,}")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict) or set(raw) != {"rules"} or not isinstance(raw["rules"], list):
        raise RulesError(f"{path}: expected a mapping with one key, rules: a list of rules")
    if len(raw["rules"]) > MAX_RULES:
        raise RulesError(f"{path}: {len(raw['rules'])} rules; at most {MAX_RULES}")
    rules = [_rule(path, index, item, flows) for index, item in enumerate(raw["rules"])]
    names = [rule.name for rule in rules]
    if duplicate := next((n for n in names if names.count(n) > 1), None):
        raise RulesError(f"{path}: two rules are named {duplicate!r}; names must be unique")
    return RuleSet(rules, flows)


def _rule(path: Path, index: int, item: Any, flows: FlowFunctions) -> Rule:
    where = f"{path}: rules[{index}]"
    if isinstance(item, dict) and (odd := next((k for k in item if not isinstance(k, str)), None)) is not None:
        raise RulesError(f"{where}: key {odd!r} is not text (YAML reads unquoted on/off/yes/no as booleans)")
    try:
        rule = Rule.model_validate(item)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "rule"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise RulesError(f"{where}.{field}: {message}") from None
    where = f"{path}: rule {rule.name}"
    if rule.deployment not in flows:
        raise RulesError(f"{where}.deployment: {rule.deployment!r} is not in the catalogue; known: {sorted(flows)}")
    try:
        used = _placeholders(rule.parameters)
    except ValueError as exc:
        raise RulesError(f"{where}.parameters: {exc}") from None
    if undeclared := sorted(used - set(rule.labels)):
        raise RulesError(f"{where}.parameters: uses labels {undeclared} not declared under labels: (with their kind)")
    _check_with_samples(where, rule, flows)
    return rule


def _check_with_samples(where: str, rule: Rule, flows: FlowFunctions) -> None:
    """Validate the parameters once with a sample value per placeholder, so a typo fails at start-up."""
    samples = dict.fromkeys(rule.labels, "sample")  # valid for every kind
    params = _fill(copy.deepcopy(rule.parameters), samples)
    fn = flows[rule.deployment]
    if "controls" in inspect.signature(fn).parameters and isinstance(params.setdefault("controls", {}), dict):
        params["controls"].setdefault("reason", "sample reason")
        params["controls"].setdefault("requested_by", "sample")
    try:
        validate_for(fn, params)
    except ParamError as exc:
        raise RulesError(f"{where}.parameters: {exc}") from None
