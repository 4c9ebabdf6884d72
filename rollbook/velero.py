"""Velero's rules, pure: what a Backup's or Restore's phase means, which backup a restore takes, and whether a
namespace mapping is safe. Tasks read and write Velero's objects (tasks/velero.py); flows decide with these."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Literal

GROUP, VERSION = "velero.io", "v1"
API_VERSION = f"{GROUP}/{VERSION}"

# Velero's final phases (pkg/apis/velero/v1 backup_types.go / restore_types.go); anything else is still running.
SUCCEEDED = frozenset({"Completed"})
PARTIAL = frozenset({"PartiallyFailed"})
FAILED = frozenset({"Failed", "FailedValidation"})
FINAL = SUCCEEDED | PARTIAL | FAILED
PhaseOutcome = Literal["succeeded", "partial", "failed", "running"]

# The kinds a restore is checked for, as Velero names them in a backup's resource list (group/version/Kind)
VERIFIED_KINDS: dict[str, str] = {
    "apps/v1/Deployment": "Deployment",
    "v1/ConfigMap": "ConfigMap",
    "v1/Service": "Service",
    "v1/Secret": "Secret",
}


class VeleroRefused(ValueError):
    """A request Velero's rules say no to (unknown backup, unsafe mapping...): nothing was changed."""


def phase_outcome(phase: str | None) -> PhaseOutcome:
    """What a phase means for the run: only Completed is success; PartiallyFailed is a failure with evidence."""
    if phase in SUCCEEDED:
        return "succeeded"
    if phase in PARTIAL:
        return "partial"
    if phase in FAILED:
        return "failed"
    return "running"


def is_final(phase: str | None) -> bool:
    return phase in FINAL


def _created(obj: Mapping[str, Any]) -> dt.datetime:
    status = obj.get("status") or {}
    stamp = status.get("completionTimestamp") or (obj.get("metadata") or {}).get("creationTimestamp") or ""
    try:
        return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


def newest_completed(backups: Iterable[Mapping[str, Any]], *, namespaces: Iterable[str] = ()) -> Mapping[str, Any]:
    """The newest Completed backup (by completion time, then name), optionally one that included every given
    namespace; a PartiallyFailed backup is never chosen, because it may lack objects."""
    wanted = set(namespaces)
    candidates = [
        b
        for b in backups
        if phase_outcome((b.get("status") or {}).get("phase")) == "succeeded"
        and wanted <= covered_namespaces(b, wanted)
    ]
    if not candidates:
        which = f" including namespaces {sorted(wanted)}" if wanted else ""
        raise VeleroRefused(f"no Completed Velero backup{which} found; nothing changed")
    return max(candidates, key=lambda b: (_created(b), str((b.get("metadata") or {}).get("name"))))


def covered_namespaces(backup: Mapping[str, Any], asked: Iterable[str]) -> set[str]:
    """Which of `asked` a backup's spec includes ("*" or no list means every namespace; excluded ones are not)."""
    spec = backup.get("spec") or {}
    included = set(spec.get("includedNamespaces") or ["*"])
    excluded = set(spec.get("excludedNamespaces") or [])
    return {ns for ns in asked if ("*" in included or ns in included) and ns not in excluded}


def validate_mapping(mapping: Mapping[str, str], *, restored: Iterable[str], existing: Iterable[str],
                     allow_existing: bool) -> None:  # fmt: skip
    """A mapping renames namespaces on restore. Refused: a source that the restore does not include, two sources
    onto one target, a target that is also restored under its own name, and (without consent) a target that
    already exists, since Velero would merge into it and skip the objects already there."""
    restored_set, existing_set = set(restored), set(existing)
    if "*" not in restored_set:
        unknown = sorted(set(mapping) - restored_set)
        if unknown:
            raise VeleroRefused(f"namespace mapping names {unknown}, which the restore does not include")
    targets = list(mapping.values())
    doubled = sorted({t for t in targets if targets.count(t) > 1})
    if doubled:
        raise VeleroRefused(f"namespace mapping sends several namespaces onto {doubled}")
    clash = sorted(set(targets) & (restored_set - set(mapping)))
    if clash:
        raise VeleroRefused(f"namespace mapping targets {clash} are also restored under their own names")
    taken = sorted(set(targets) & existing_set)
    if taken and not allow_existing:
        raise VeleroRefused(
            f"namespace mapping targets {taken} already exist; set allow_existing_namespaces to restore into "
            "them. Nothing changed"
        )


def target_namespace(namespace: str, mapping: Mapping[str, str]) -> str:
    return mapping.get(namespace, namespace)


def expected_objects(resource_list: Mapping[str, Iterable[str]], namespaces: Iterable[str],
                     mapping: Mapping[str, str]) -> list[tuple[str, str, str]]:  # fmt: skip
    """(kind, target namespace, name) of every verified kind the backup held in the restored namespaces,
    from Velero's BackupResourceList ({"apps/v1/Deployment": ["ns/name", ...]})."""
    wanted = set(namespaces)
    out: list[tuple[str, str, str]] = []
    for key, items in resource_list.items():
        kind = VERIFIED_KINDS.get(key)
        if kind is None:
            continue
        for item in items:
            ns, _, name = str(item).partition("/")
            if name and ("*" in wanted or ns in wanted) and not (kind == "ConfigMap" and name == "kube-root-ca.crt"):
                out.append((kind, target_namespace(ns, mapping), name))
    return sorted(out)


def backup_problems(status: Mapping[str, Any]) -> list[str]:
    """Lines a person reads when a backup or restore did not simply complete."""
    lines = []
    if status.get("failureReason"):
        lines.append(f"failure: {status['failureReason']}")
    lines += [f"validation: {e}" for e in status.get("validationErrors") or []]
    if status.get("errors"):
        lines.append(f"{status['errors']} error(s)")
    if status.get("warnings"):
        lines.append(f"{status['warnings']} warning(s)")
    return lines
