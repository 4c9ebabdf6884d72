"""Results of the Velero flows and the markdown a person reads for each (pure, unit-tested)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rollbook.change import ChangeResult

_LIST_LIMIT = 50


class VeleroBackupResult(ChangeResult):
    """What a velero-backup run asked Velero for and what Velero answered."""

    backup: str
    velero_namespace: str
    storage_location: str
    spec: dict[str, Any] = Field(description="The Backup's spec as sent (or, in plan mode, as it would be).")
    phase: str | None = None
    errors: int = 0
    warnings: int = 0
    items_backed_up: int | None = None
    problems: list[str] = Field(default_factory=list)
    would_back_up: list[str] = Field(default_factory=list, description="Plan mode: the namespaces it would cover.")


class VeleroRestoreResult(ChangeResult):
    """What a velero-restore run restored, from which backup, and what was found afterwards."""

    restore: str
    backup: str
    velero_namespace: str
    namespaces: list[str]
    namespace_mapping: dict[str, str] = Field(default_factory=dict)
    phase: str | None = None
    errors: int = 0
    warnings: int = 0
    problems: list[str] = Field(default_factory=list)
    expected: list[str] = Field(default_factory=list, description="Objects the backup held, as kind ns/name.")
    missing: list[str] = Field(default_factory=list)
    unavailable: list[str] = Field(default_factory=list)


def _bullets(items: list[str], *, none: str = "none") -> str:
    if not items:
        return f"- {none}\n"
    shown = "".join(f"- `{item}`\n" for item in items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return shown + (f"- … and {more} more\n" if more > 0 else "")


def _spec_rows(spec: dict[str, Any]) -> str:
    return "".join(f"| {key} | `{value}` |\n" for key, value in sorted(spec.items()))


def backup_markdown(result: VeleroBackupResult, title: str = "Velero backup") -> str:
    return (
        f"# {title}: {result.backup}\n\n{result.summary}\n\n| | |\n|---|---|\n"
        f"| outcome | {result.outcome} |\n| phase | {result.phase or '-'} |\n"
        f"| storage location | {result.storage_location} |\n"
        f"| errors / warnings | {result.errors} / {result.warnings} |\n"
        f"| items backed up | {result.items_backed_up if result.items_backed_up is not None else '-'} |\n"
        f"{_spec_rows(result.spec)}\n## Namespaces\n\n{_bullets(result.would_back_up, none='every namespace')}\n"
        f"## Problems\n\n{_bullets(result.problems)}"
    )


def restore_markdown(result: VeleroRestoreResult, title: str = "Velero restore") -> str:
    mapping = [f"{k} -> {v}" for k, v in sorted(result.namespace_mapping.items())]
    return (
        f"# {title}: {result.restore}\n\n{result.summary}\n\n| | |\n|---|---|\n"
        f"| outcome | {result.outcome} |\n| backup | {result.backup} |\n| phase | {result.phase or '-'} |\n"
        f"| errors / warnings | {result.errors} / {result.warnings} |\n\n"
        f"## Namespaces\n\n{_bullets(result.namespaces)}\n## Mapping\n\n{_bullets(mapping)}\n"
        f"## Objects expected from the backup\n\n{_bullets(result.expected)}\n"
        f"## Missing\n\n{_bullets(result.missing)}\n## Not available\n\n{_bullets(result.unavailable)}\n"
        f"## Problems\n\n{_bullets(result.problems)}"
    )
