"""Hostile and careless parameters, tried as a new user would, through `rollbook run`'s validation for every flow.

Each invalid set must be refused before anything runs, in one line naming the field the user set, with no
traceback; the valid sets must pass, so the table can fail both ways. A few go through the real CLI process.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from flows import FLOWS
from rollbook.params import ParamError, parse_assignments, validate_for
from rollbook.types import shown

ROLLBOOK = shutil.which("rollbook", path=str(Path(sys.executable).parent)) or "rollbook"

CHART = str(Path(__file__).resolve().parents[2] / "charts" / "demo-app")
CONTROLS = {"reason": "bad release 1.2.0", "requested_by": "oncall"}
PROMETHEUS = "http://127.0.0.1:9090"
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
DEEP_YAML = "a: " + "[" * 20_000 + "]" * 20_000
DELETE = object()  # a mutation that removes the field


def _deep_dict(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


RESTORE_CONTROL_PLANE: dict[str, Any] = {
    "etcd_member": {
        "data_dir": "/var/lib/etcd",
        "name": "cp-1",
        "initial_cluster": "cp-1=https://10.0.0.10:2380",
        "initial_advertise_peer_urls": "https://10.0.0.10:2380",
    },
    "stop_controllers": [["systemctl", "stop", "kube-controller-manager", "kube-scheduler"]],
    "start_controllers": [["systemctl", "start", "kube-controller-manager", "kube-scheduler"]],
    "stop_api_servers": [["systemctl", "stop", "kube-apiserver"]],
    "start_api_servers": [["systemctl", "start", "kube-apiserver"]],
    "stop_etcd": [["systemctl", "stop", "etcd"]],
    "start_etcd": [["systemctl", "start", "etcd"]],
}


# One valid parameter set per flow; every invalid set below is one of these with one thing broken.
VALID: dict[str, dict[str, Any]] = {
    "hello-cluster": {"request": {"namespace": "default"}},
    "rollout-history": {"request": {"deployment": "web", "namespace": "shop"}},
    "deployment-undo": {"request": {"deployment": "web", "namespace": "shop"}, "controls": CONTROLS},
    "last-known-good": {"request": {"deployment": "web"}},
    "helm-rollback": {"request": {"namespace": "shop", "release": "shop"}, "controls": CONTROLS},
    "helm-history": {"request": {"namespace": "shop", "release": "shop"}},
    "helm-atomic-upgrade": {"request": {"namespace": "shop", "release": "shop", "chart": CHART}, "controls": CONTROLS},
    "rollback-rehearsal": {"request": {}},
    "predeploy-checklist": {"request": {"namespace": "shop", "release": "shop", "chart": CHART}},
    "canary-rollout": {
        "request": {
            "namespace": "shop",
            "stable_release": "shop",
            "canary_release": "shop-canary",
            "chart": CHART,
            "prometheus_url": PROMETHEUS,
        },
        "controls": CONTROLS,
    },
    "blue-green": {
        "request": {
            "namespace": "shop",
            "blue_release": "shop-blue",
            "green_release": "shop-green",
            "chart": CHART,
            "version": "1.1.0",
            "prometheus_url": PROMETHEUS,
        },
        "controls": CONTROLS,
    },
    "blue-green-retire": {"request": {"namespace": "shop", "release": "shop-blue"}, "controls": CONTROLS},
    # full-cluster recovery (issue 11)
    "etcd-snapshot": {"request": {"endpoint_block": "prod-etcd", "bucket_block": "prod-snaps", "cluster_name": "prod"}},
    "backup-retention": {"request": {"bucket_block": "prod-snaps", "cluster_name": "prod"}, "controls": CONTROLS},
    "etcd-restore": {
        "request": {
            "bucket_block": "prod-snaps",
            "cluster_name": "prod",
            "control_plane": RESTORE_CONTROL_PLANE,
        },
        "controls": CONTROLS,
    },
    "dr-drill": {
        "request": {
            "endpoint_block": "staging-etcd",
            "bucket_block": "staging-snaps",
            "cluster_name": "staging",
            "control_plane": RESTORE_CONTROL_PLANE,
        },
        "controls": CONTROLS,
    },
    # incidents (issue 15)
    "registry-outage": {"request": {"registry_block": "prod-registry", "namespaces": ["shop"]}, "controls": CONTROLS},
    "image-trust-failure": {
        "request": {"registry_block": "prod-registry", "namespace": "shop", "deployment": "web"},
        "controls": CONTROLS,
    },
    "image-prepull": {
        "request": {
            "namespace": "infra",
            "sources": [{"namespace": "shop", "selector": {"app.kubernetes.io/name": "web"}}],
            "sleep_image": "docker.io/library/busybox:1.36.1",
        },
        "controls": CONTROLS,
    },
    # Velero (issue 12)
    "velero-backup": {"request": {"included_namespaces": ["shop"]}, "controls": CONTROLS},
    "velero-restore": {"request": {"namespaces": ["shop"]}, "controls": CONTROLS},
    # database-safe releases (issue 14)
    "expand-contract": {
        "request": {
            "database_block": "app-db",
            "script_location": "/srv/app/migrations",
            "backfill": {"table": "users", "key_column": "id", "old_column": "email", "new_column": "new_email"},
        },
        "controls": CONTROLS,
    },
    "migration-failure": {
        "request": {
            "deployment": "web",
            "schema_guard": {"kind": "alembic", "database_block": "app-db", "script_location": "/srv/app/alembic"},
        },
        "controls": CONTROLS,
    },
}
assert set(VALID) == set(FLOWS), "every flow in FLOWS needs a valid parameter set here"

BAD_NAMES: list[object] = ["", "Prod", "a;rm -rf /", "x" * 10_000, "-shop", "shop_1", "shop\n", 7, True]
BAD_RELEASES: list[object] = [*BAD_NAMES, "r" * 54, "$(reboot)"]
BAD_REVISIONS: list[object] = [True, False, "1", "two", 1.0, 0, -1, 2**63, 10**30, [1]]
BAD_TAGS: list[object] = ["", "1.0 ;rm", "1.0 1", ".hidden", "-x", "t" * 129, "1.0:latest", 1.1, True]
BAD_CHARTS: list[object] = [
    "/c" * 5_000,
    "c" * 10_000,
    "/tmp/" + "c" * 300,
    "./no/such/chart",
    "oci://Bad Host/x",
    "a\x00b",
    "",
]
BAD_VALUES_YAML: list[object] = [
    BILLION_LAUGHS,
    DEEP_YAML,
    "- a\n- b\n",
    "a: : b",
    "a: " + "x" * (1 << 20),
    "a: &x [*x]",
    3,
]
BAD_TEXT: list[object] = ["", "   ", "\t\n", 5, None]
BAD_IMAGES: list[object] = [["nginx:1 ;rm -rf /"], ["Nginx"], ["a b"], ["nginx@sha256:abc"], ["x" * 2000], [7]]
BAD_SECONDS: list[object] = [True, "300", -5, 10**9, 2.5]


@dataclass(frozen=True)
class Case:
    flow: str
    path: str  # dotted, as the user typed it; DELETE removes the field
    value: object
    expect: str  # what the one-line message must name

    @property
    def id(self) -> str:
        value = "<deleted>" if self.value is DELETE else shown(self.value)[:40]
        return f"{self.flow}:{self.path}={value}"


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(flow: str, path: str, values: list[object], expect: str | None = None) -> None:
        cases.extend(Case(flow, path, v, expect or path) for v in values)

    for flow, params in VALID.items():
        fields = _fields(flow)
        add(flow, "request.cluster_block", ["Prod Cluster", "x" * 300, 3])
        add(flow, "request.kubeconfig_path", ["/" + "k" * 10_000, "k/" * 3_000, "a\x00b", 1])
        add(flow, "request.bogus", [1], "request.bogus: unknown field")
        add(flow, "bogus", [1], "unknown parameter(s) ['bogus']")
        for name in ("namespace", "release", "blue_release", "green_release", "stable_release", "canary_release"):
            if name in fields:
                add(flow, f"request.{name}", BAD_NAMES if name == "namespace" else BAD_RELEASES)
                if fields[name]:  # required: leaving it out or null is refused too
                    add(flow, f"request.{name}", [None])
                    add(flow, f"request.{name}", [DELETE], f"request.{name}: required, but not given")
        if "deployment" in fields:
            add(flow, "request.deployment", [*BAD_NAMES, "web..v2", "d" * 254])
            add(flow, "request.deployment", [DELETE], "request.deployment: required, but not given")
        if "chart" in fields:
            add(flow, "request.chart", BAD_CHARTS)
        if "helm_executable" in fields:
            add(flow, "request.helm_executable", ["/" + "h" * 10_000, "helm\x00x", ""])
        if "timeout_seconds" in fields:
            add(flow, "request.timeout_seconds", BAD_SECONDS)
        if "controls" in params:
            add(flow, "controls.reason", [*BAD_TEXT, "ab", "r" * 501])
            add(flow, "controls.requested_by", [*BAD_TEXT, "p" * 101])
            add(flow, "controls.plan", ["yes", "true", 1])
            add(flow, "controls.require_approval", ["no", 0])
            add(flow, "controls.approval_timeout_seconds", [True, "3600", 1])
            add(flow, "controls.bogus", [1], "controls.bogus: unknown field")
            add(flow, "controls", [DELETE], "missing required parameter(s) ['controls']")
        if "prometheus_url" in fields:
            add(flow, "request.prometheus_url", ["not a url", "ftp://x", 5])
            add(flow, "request.prometheus_block", ["Prod Metrics"])
            add(flow, "request.http_route", ["Route;x", "x" * 300])
            add(flow, "request.checklist.cosign_public_key", ["/" + "k" * 10_000])
            add(flow, "request.checklist.registry_block", ["Bad Block"])
            add(flow, "request.checklist.migration", [{"kind": "liquibase"}, ["x"]])
            add(flow, "request.checklist.severity_threshold", ["apocalyptic", 5])
    for flow in ("rollout-history", "helm-rollback"):
        add(flow, "request.revision", BAD_REVISIONS)
    add("deployment-undo", "request.to_revision", BAD_REVISIONS)
    add("deployment-undo", "request.cosign_public_key", ["/" + "k" * 10_000])
    add("deployment-undo", "request.last_known_good", ["yes", 1])
    add("last-known-good", "request.verify_images", ["true", 1])
    for flow in ("deployment-undo", "last-known-good"):
        add(flow, "request.registry_block", ["Bad Block", "x" * 300, 5])
    add("helm-atomic-upgrade", "request.image_tag", BAD_TAGS)
    add("helm-atomic-upgrade", "request.values", [_deep_dict(20_000), ["a"], "a: 1"])
    add("helm-atomic-upgrade", "request.set_values", [_deep_dict(20_000)])
    add("helm-atomic-upgrade", "request.install", ["true"])
    add("helm-atomic-upgrade", "request.settle_seconds", [True, -1])
    add("blue-green", "request.version", BAD_TAGS)
    add("blue-green", "request.green_values", [_deep_dict(20_000), ["a"]])
    add("blue-green", "request.steps", [[True, 100], ["10", 100]])
    add("canary-rollout", "request.analysis.step_weights", [[True, 100], ["50", 100]])
    add("canary-rollout", "request.analysis.threshold", [True, "2"])
    for flow in ("canary-rollout", "blue-green"):
        metrics = "request.analysis.metrics" if flow == "canary-rollout" else "request.metrics"
        webhooks = "request.analysis.webhooks" if flow == "canary-rollout" else "request.webhooks"
        rate = {"name": "request-success-rate", "window": "1m"}
        for bad in ({"min": True}, {"min": "99"}, {"max": [1]}, {"window": 30}, {"window": "1 m"}, {"name": 5}):
            cases.append(Case(flow, metrics, [{**rate, "min": 99, **bad}], f"{metrics.split('.', 1)[1]}.0"))
        hook = {"name": "gate", "type": "rollout", "url": "http://127.0.0.1:1/hook"}
        for bad in ({"timeout_seconds": True}, {"timeout_seconds": "10"}, {"metadata": {"a": 1}}, {"url": "x"}):
            cases.append(Case(flow, webhooks, [{**hook, **bad}], f"{webhooks.split('.', 1)[1]}.0"))
    for flow in ("predeploy-checklist", "canary-rollout"):
        prefix = "request" if flow == "predeploy-checklist" else "request.checklist"
        waiver = {"check": "vulnerabilities", "reason": "accepted until the fix", "expires": "2030-01-01T00:00:00Z"}
        for bad in ({"expires": True}, {"expires": "soon"}, {"reason": 12345}, {"approved_by": 7}):
            cases.append(Case(flow, f"{prefix}.waivers", [{**waiver, **bad}], "waivers.0"))
        migration = {"kind": "golang-migrate", "expected_version": "3", "dsn": "postgresql://u@h/db"}
        for bad in ({"expected_version": 3}, {"expected_version": True}, {"database_block": 5}):
            cases.append(Case(flow, f"{prefix}.migration", {**migration, **bad}, "migration"))
        alembic = {**migration, "kind": "alembic", "expected_version": "ae1027a6acf"}
        for bad in (
            {"script_location": "migrations"},  # relative: resolved against nobody knows which directory
            {"script_location": "/srv/app/../../etc"},
            {"script_location": "/srv/app\nalembic"},
            {"script_location": 5},
            {"advisory_lock_key": "42"},
            {"advisory_lock_key": 2**63},
            {"advisory_lock_key": True},
        ):
            cases.append(Case(flow, f"{prefix}.migration", {**alembic, **bad}, "migration"))
        for kind in ("flyway", "rails", "golang-migrate"):  # Alembic's own fields on another tool
            for bad in ({"script_location": "/srv/app/alembic"}, {"advisory_lock_key": 1}):
                cases.append(Case(flow, f"{prefix}.migration", {**migration, "kind": kind, **bad}, "migration"))
    # the migration-aware rollback guard (issue 14): the checklist's migration shape, expected_version optional
    guarded = ("deployment-undo", "last-known-good", "helm-rollback", "canary-rollout", "blue-green")
    guard = {"kind": "golang-migrate", "dsn": "postgresql://u@h/db"}
    for flow in guarded:
        for bad in (
            {"kind": "liquibase"},
            {"dsn": None},  # no database at all
            {"database_block": "app-db"},  # both
            {"expected_version": 3},
            {"require_declaration": "yes"},
            {"require_declaration": 1},
            {"table": "x; drop table y"},
            {"script_location": "/srv/app/alembic"},  # Alembic's field on golang-migrate
            {"kind": "alembic", "script_location": "migrations"},
            {"kind": "alembic", "script_location": "/srv/app/../../etc"},
            {"bogus": 1},
        ):
            cases.append(Case(flow, "request.schema_guard", {**guard, **bad}, "schema_guard"))
        add(flow, "request.schema_guard", [["x"], "postgresql://u@h/db", 5])
        if flow != "last-known-good":  # read-only: nothing to override
            add(flow, "request.override_schema_guard", ["true", 1])
            cases.append(Case(flow, "request.override_schema_guard", True, "override_schema_guard needs schema_guard"))
    add("last-known-good", "request.override_schema_guard", [True], "request.override_schema_guard: unknown field")
    # migration-failure: an Alembic database is required (it is downgraded), with its scripts
    alembic = {"kind": "alembic", "database_block": "app-db", "script_location": "/srv/app/alembic"}
    for bad in (
        {"kind": "golang-migrate", "script_location": None},
        {"script_location": None},
        {"script_location": "relative/alembic"},
        {"database_block": None},
        {"dsn": "postgresql://u:pw@h/db"},  # both
        {"table": "alembic_version; drop table users"},
    ):
        cases.append(Case("migration-failure", "request.schema_guard", {**alembic, **bad}, "schema_guard"))
    add("migration-failure", "request.schema_guard", [DELETE, None, "postgresql://u@h/db", 5])
    add("migration-failure", "request.downgrade_to", ["0001; drop table users", "head\n", "", "r" * 65, 1, "-1"])
    add("migration-failure", "request.downgrade", ["yes", 2])
    add("migration-failure", "request.statement_timeout_seconds", [0, 3601, "60"])
    add("migration-failure", "request.lock_timeout_seconds", [0, 601])
    add("migration-failure", "request.wait_timeout_seconds", [0, 6 * 3600 + 1])
    add("registry-outage", "request.registry_block", ["Prod Registry", "", "r;m", 5])
    add("registry-outage", "request.namespaces", [[], ["Shop"], ["a;rm -rf /"], "shop", [""], ["n" * 64]])
    add("registry-outage", "request.expected_digests", [{"app:1.0": "sha256:xyz"}, {"App:1": "sha256:" + "a" * 64}])
    add("registry-outage", "request.expected_digests", [["x"], {"a b:1": "sha256:" + "a" * 64}])
    add("registry-outage", "request.recovery_timeout_seconds", [True, "600", -1, 10**9])
    add("registry-outage", "request.rollout_timeout_seconds", [True, 0, "300"])
    add("registry-outage", "request.probe_timeout_seconds", [0, 61, False])
    add("registry-outage", "request.verify_signatures", ["yes", 1])
    add("image-trust-failure", "request.notify_block", ["security", "Slack/Sec", "a/b/c", "x;y/z", 5])
    add("image-trust-failure", "request.deployment", ["", "Web", "w;x", "w" * 300])
    add("image-trust-failure", "request.fall_back", ["yes", 1])
    add("image-trust-failure", "request.wait_timeout_seconds", [True, 0, "60"])
    add("image-prepull", "request.name", [*BAD_NAMES, "n" * 64, "cache.v2"])
    add("image-prepull", "request.sources", [[], "shop", [{"namespace": "Shop"}], [{"selector": {"app": "web"}}]])
    add("image-prepull", "request.sources", [[{"namespace": "shop", "bogus": 1}], [{"namespace": "shop"}] * 51])
    bad_selectors = [{"App Name": "web"}, {"app": "web;rm"}, {"app": "v" * 64}, {"-app": "web"}, {"app": 5}, ["app"]]
    cases.extend(
        Case("image-prepull", "request.sources", [{"namespace": "shop", "selector": s}], "sources.0")
        for s in bad_selectors
    )
    add("image-prepull", "request.sleep_image", ["", "Busybox", "busybox:1 ;rm -rf /", "a b", 7, None])
    add("image-prepull", "request.sleep_image", [DELETE], "request.sleep_image: required, but not given")
    add("image-prepull", "request.sleep_binary", ["sleep", "/bin/sleep now", "/bin/$(reboot)", "", "/" + "s" * 300, 1])
    add("image-prepull", "request.node_selector", [{"pool name": "web"}, {"pool": "a b"}, {"pool": True}, "pool=web"])
    add("image-prepull", "request.rollout_timeout_seconds", [True, "600", 0, 10**9])
    add("rollback-rehearsal", "request.from_tag", BAD_TAGS)
    add("rollback-rehearsal", "request.to_tag", BAD_TAGS)
    add("rollback-rehearsal", "request.image_repository", ["repo:tag", "Repo", "a b", "r;m"])
    add("rollback-rehearsal", "request.values", [_deep_dict(20_000)])
    add("predeploy-checklist", "request.values_yaml", BAD_VALUES_YAML)
    add("predeploy-checklist", "request.values", [_deep_dict(20_000), ["a"]])
    add("predeploy-checklist", "request.images", BAD_IMAGES)
    workload = {"workload": "Deployment/api", "replicas": 2, "cpu_m": 100, "memory": 64 << 20}
    for key, bad in [("replicas", -1), ("replicas", True), ("cpu_m", -100), ("cpu_m", "100"), ("memory", -1)]:
        cases.append(Case("predeploy-checklist", "request.requests", [{**workload, key: bad}], f"requests.0.{key}"))
    add("predeploy-checklist", "request.cosign_public_key", ["/" + "k" * 10_000])
    add("predeploy-checklist", "request.scanner", ["trivy", "grype; rm -rf /"])
    add("predeploy-checklist", "request.severity_threshold", ["urgent"])
    # full-cluster recovery (issue 11)
    for flow in ("etcd-snapshot", "backup-retention", "etcd-restore"):
        add(flow, "request.bucket_block", ["Prod Snaps", "x" * 300, 3, None])
        add(flow, "request.cluster_name", [*BAD_NAMES, None])
        add(flow, "request.cluster_name", [DELETE], "request.cluster_name: required, but not given")
    add("etcd-snapshot", "request.endpoint_block", ["Prod Etcd", None])
    add("etcd-snapshot", "request.part_size_mib", [True, "64", 4, 5121])
    add("etcd-snapshot", "request.upload_concurrency", [0, 33, "8"])
    add("etcd-snapshot", "request.encryption.mode", ["rot13", True])
    add("etcd-snapshot", "request.etcdctl_executable", ["/" + "e" * 10_000, "etcdctl\x00x", ""])
    add("backup-retention", "request.rules.keep_last", [-1, True, "3"])
    add("backup-retention", "request.rules.monthly", [2], "request.rules.monthly: unknown field")
    add("etcd-restore", "request.snapshot", ["../../etc/passwd", "etcd-latest.db", "x" * 100, 7])
    add("etcd-restore", "request.bump_revision", [0, True, "1000", 10**13])
    add("etcd-restore", "request.control_plane.kind", ["talos", 1])
    add("etcd-restore", "request.control_plane.stop_etcd", ["systemctl stop etcd", [["systemctl", ""]], [[]]])
    add("etcd-restore", "request.control_plane.stop_etcd", [[]], "needs commands for stop_etcd")
    add("etcd-restore", "request.control_plane.etcd_member.name", ["a b", "", "x;rm"])
    add("dr-drill", "request.disaster", ["fire", True])
    add("dr-drill", "request.namespaces", [0, 501, True, "3"])
    add("dr-drill", "request.target_seconds", [0, "60"])
    add("dr-drill", "request.keep_workload", ["yes"])
    add("etcd-restore", "request.control_plane.etcd_member.data_dir", ["/" + "d" * 10_000, "a\x00b"])
    # issue 12: Velero's names and selectors reach its objects as they are
    for flow in ("velero-backup", "velero-restore"):
        add(flow, "request.velero_namespace", BAD_NAMES)
        add(flow, "request.backup_name", ["Daily", "a;rm -rf /", "x" * 64, 7, True])
        add(flow, "request.wait_timeout_seconds", [0, 9, 6 * 3600 + 1, "60", True])
    add("velero-backup", "request.included_namespaces", [["Prod"], ["a b"], "shop", [7], ["x"] * 201])
    add("velero-backup", "request.excluded_namespaces", [["-x"], "kube-system"])
    add("velero-backup", "request.label_selector", [{"app": "a b"}, {"a b": "web"}, {"app": 7}, ["app=web"]])
    add("velero-backup", "request.included_resources", [["Deployments"], ["pods;rm"], "pods", [""]])
    add("velero-backup", "request.excluded_resources", [["secrets/*"]])
    add("velero-backup", "request.ttl_hours", [0, -1, "24h", True, 24 * 366 + 1])
    add("velero-backup", "request.storage_location", ["Default", "", None, "s3://bucket"])
    add("velero-backup", "request.snapshot_volumes", ["yes", 1])
    add("velero-restore", "request.namespaces", [[], "shop", ["Shop"], [None]])
    add("velero-restore", "request.namespaces", [DELETE], "request.namespaces: required, but not given")
    add("velero-restore", "request.namespace_mapping", [{"shop": "Shop"}, {"shop": ""}, {"a b": "x"}, ["shop:x"]])
    add("velero-restore", "request.allow_existing_namespaces", ["true", 1])
    add("velero-restore", "request.verify_timeout_seconds", [0, 3601, "300"])
    add("velero-restore", "request.restore_name", ["Restore 1", "x" * 64])
    # issue 17: the policy can only be weakened explicitly, and cross-field rules are refused before a run
    add("predeploy-checklist", "request.policy", [{"required": ["chart"]}], "request.policy.required: unknown field")
    add("predeploy-checklist", "request.policy", [{"warn_only": ["chart"]}], "request.policy.warn_only: unknown field")
    add(
        "predeploy-checklist",
        "request.policy",
        [{"downgrade": ["chart"], "skip": ["chart"]}],
        "both downgrade and skip",
    )
    add("predeploy-checklist", "request.policy", [{"downgrade": ["everything"]}], "request.policy.downgrade.0")
    add("hello-cluster", "request.context", [None, 3, "c" * 254])
    # issue 14: names reach SQL as quoted identifiers, targets reach Alembic, paths the runner
    add("expand-contract", "request.script_location", ["relative/dir", "/a/../etc", "/a\x00b", "", "/" + "s" * 10_000])
    add("expand-contract", "request.expand_target", ["x; rm -rf /", "", "a@b@c", "e" * 200, 5])
    add("expand-contract", "request.contract_target", ["head\n", "../contract", None])
    add("expand-contract", "request.backfill.table", ['users"; DROP TABLE x; --', "a.b.c", "", "1users", 7])
    add("expand-contract", "request.backfill.key_column", ['id"', "id id", "k" * 64])
    add("expand-contract", "request.backfill.new_column", ["email"], "three different columns")
    add("expand-contract", "request.backfill.old_column", [DELETE], "request.backfill.old_column: required")
    add("expand-contract", "request.backfill", [DELETE], "request.backfill: required, but not given")
    add("expand-contract", "request.dsn", ["postgresql://app:pw@db/app"], "exactly one of database_block or dsn")
    add("expand-contract", "request.database_block", ["App DB", "x" * 300])
    add("expand-contract", "request.batch_size", [0, 100_001, "many"])
    add("expand-contract", "request.max_batches", [0, 10**7])
    add("expand-contract", "request.lock_timeout_seconds", [0, 601])
    add("expand-contract", "request.observe_seconds", [-1, 10**9])
    add("expand-contract", "request.deploy", [{"namespace": "shop"}], "request.deploy")
    return cases


def _fields(flow: str) -> dict[str, bool]:
    """The request fields a flow has (and whether each is required), so each mutation goes where it applies."""
    model = get_type_hints(FLOWS[flow].fn)["request"]
    return {name: info.is_required() for name, info in model.model_fields.items()}


def _apply(params: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    out = copy.deepcopy(params)
    *parents, leaf = path.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return out


CASES = _cases()


def test_the_table_is_large_and_covers_every_flow() -> None:
    assert len(CASES) >= 200, len(CASES)
    assert {c.flow for c in CASES} == set(FLOWS)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_parameters_are_refused_naming_the_field(case: Case) -> None:
    params = _apply(VALID[case.flow], case.path, case.value)
    with pytest.raises(ParamError) as excinfo:
        validate_for(FLOWS[case.flow].fn, params)
    message = str(excinfo.value)
    assert case.expect in message, message
    assert "\n" not in message and "Traceback" not in message
    assert len(message) < 700, f"{len(message)} characters: {message[:300]}"


@pytest.mark.parametrize("flow", sorted(VALID))
def test_the_valid_set_of_each_flow_passes(flow: str) -> None:
    validate_for(FLOWS[flow].fn, copy.deepcopy(VALID[flow]))


@pytest.mark.parametrize(
    ("flow", "path", "value"),
    [
        ("deployment-undo", "request.to_revision", 3),
        ("helm-rollback", "request.revision", 2**63 - 1),
        ("rollout-history", "request.revision", 1),
        ("helm-atomic-upgrade", "request.image_tag", "1.2.3-rc.1"),
        ("helm-atomic-upgrade", "request.values", {"image": {"tag": "1.1.0"}, "ports": [80]}),
        ("helm-atomic-upgrade", "request.chart", "oci://127.0.0.1:5000/charts/demo-app"),
        ("blue-green", "request.chart", "bitnami/nginx"),
        ("predeploy-checklist", "request.values_yaml", "base: &b {replicas: 2}\nweb:\n  <<: *b\n"),
        ("predeploy-checklist", "request.images", ["127.0.0.1:5000/rollbook/demo-app:1.0.0@sha256:" + "a" * 64]),
        (
            "predeploy-checklist",
            "request.requests",
            [{"workload": "Deployment/api", "replicas": 0, "cpu_m": 1, "memory": 1}],
        ),
        ("rollback-rehearsal", "request.image_repository", "127.0.0.1:5000/rollbook/demo-app"),
        ("blue-green-retire", "controls.reason", "  retire blue after the switch  "),
        ("hello-cluster", "request.kubeconfig_path", "/home/me/.kube/config"),
        ("image-prepull", "request.sources", [{"namespace": "shop"}, {"namespace": "api", "selector": {"tier": ""}}]),
        ("image-prepull", "request.node_selector", {"kubernetes.io/os": "linux", "pool": "web_1.a"}),
        ("image-prepull", "request.sleep_image", "127.0.0.1:5000/tools/sleep@sha256:" + "a" * 64),
        ("canary-rollout", "request.analysis.metrics", [{"name": "request-duration", "max": 250, "window": "2m"}]),
        (
            "blue-green",
            "request.webhooks",
            [{"name": "gate", "type": "rollout", "url": "http://h/x", "timeout_seconds": 5}],
        ),
        (
            "predeploy-checklist",
            "request.waivers",
            [{"check": "vulnerabilities", "reason": "fix due Friday", "expires": "2030-01-01T00:00:00Z"}],
        ),
        (
            "predeploy-checklist",
            "request.migration",
            {"kind": "golang-migrate", "expected_version": "3", "dsn": "postgresql://u@h/db"},
        ),
        (
            "predeploy-checklist",
            "request.migration",
            {
                "kind": "alembic",
                "expected_version": "ae1027a6acf",
                "dsn": "postgresql://u@h/db",
                "table": "app.alembic_version",
                "script_location": "/srv/app/alembic",
                "advisory_lock_key": -7,
            },
        ),
        (
            "predeploy-checklist",
            "request.migration",
            {"kind": "flyway", "expected_version": "1.10.2", "database_block": "app-db"},
        ),
        (
            "canary-rollout",
            "request.checklist.migration",
            {"kind": "rails", "expected_version": "20260101120000", "dsn": "postgresql://u@h/db"},
        ),
        ("deployment-undo", "request.schema_guard", {"kind": "golang-migrate", "dsn": "postgresql://u@h/db"}),
        ("last-known-good", "request.schema_guard", {"kind": "flyway", "database_block": "app-db"}),
        (
            "helm-rollback",
            "request.schema_guard",
            {"kind": "alembic", "database_block": "app-db", "script_location": "/srv/app/alembic"},
        ),
        (
            "canary-rollout",
            "request.schema_guard",
            {"kind": "rails", "dsn": "postgresql://u@h/db", "require_declaration": True},
        ),
        (
            "blue-green",
            "request.schema_guard",
            {"kind": "golang-migrate", "dsn": "postgresql://u@h/db", "expected_version": "7"},
        ),
    ],
)
def test_careful_values_pass(flow: str, path: str, value: object) -> None:
    validate_for(FLOWS[flow].fn, _apply(VALID[flow], path, value))


@pytest.mark.parametrize(
    ("flow", "params", "expect"),
    [
        ("blue-green-retire", ["request.namespace=a;rm -rf /", "request.release=shop-blue"], "request.namespace"),
        ("deployment-undo", ["request.deployment=web", "request.to_revision=true"], "request.to_revision"),
        (
            "predeploy-checklist",
            [
                "request.namespace=shop",
                "request.release=shop",
                f"request.chart={CHART}",
                "request.values_yaml=" + BILLION_LAUGHS,
            ],
            "request.values_yaml",
        ),
        (
            "helm-rollback",
            ["request.namespace=shop", "request.release=shop", "request.revision=" + "[" * 20_000],
            "request.revision",
        ),
    ],
)
def test_the_cli_refuses_in_one_line_without_a_traceback(
    flow: str, params: list[str], expect: str, child_env: dict[str, str]
) -> None:
    argv = [ROLLBOOK, "run", flow]
    for item in params:
        argv += ["--param", item]
    if flow != "predeploy-checklist":
        argv += ["--param", "controls.reason=   ", "--param", "controls.requested_by=oncall"]
    result = subprocess.run(argv, env=child_env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert expect in lines[0], lines[0]


def test_the_cli_parses_values_the_same_way() -> None:
    """What the CLI hands to validation is what the table feeds it: JSON when it parses, else text."""
    params = parse_assignments(["request.revision=true", "request.namespace=a;rm -rf /", 'request.tag="1.10"'])
    assert params == {"request": {"revision": True, "namespace": "a;rm -rf /", "tag": "1.10"}}
