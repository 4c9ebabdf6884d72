"""registry-outage's result and the markdown an SRE reads: the blast radius, each workload's detour (or why it
was refused), and how long each phase took (pure)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from rollbook.change import ChangeResult
from rollbook.registry_fallback import WorkloadKind

Action = Literal[
    "switched-to-mirror",
    "would-switch-to-mirror",
    "refused",
    "already-on-mirror",
    "switched-back",
    "would-switch-back",
    "switch-back-failed",
    "left-alone",
]


class ImageRow(BaseModel):
    container: str
    original: str
    digest: str | None = None
    digest_source: str | None = Field(default=None, description="Where the digest came from.")
    mirror_ref: str | None = None
    refused: str = ""


class WorkloadRow(BaseModel):
    kind: WorkloadKind = Field(default="Deployment", description="Deployment, StatefulSet or DaemonSet.")
    namespace: str
    name: str
    action: Action
    stuck_pods: int = Field(description="Pods in ErrImagePull/ImagePullBackOff on the primary when found.")
    since: str = Field(default="", description="The first pull failure of those pods (their events).")
    images: list[ImageRow] = Field(default_factory=list)
    reason: str = ""
    rollout_seconds: float | None = None


class RegistryOutageResult(ChangeResult):
    primary: str
    mirrors: list[str]
    probes: list[dict[str, Any]] = Field(description="Each registry's /v2/ answer when the run started.")
    workloads: list[WorkloadRow]
    primary_recovered: bool | None = Field(
        default=None, description="Whether the primary served every recorded digest again (None: not watched)."
    )
    phases: dict[str, float] = Field(default_factory=dict, description="Seconds per phase.")

    @property
    def refused(self) -> list[WorkloadRow]:
        return [w for w in self.workloads if w.action == "refused"]


def _image_lines(row: WorkloadRow) -> list[str]:
    lines = []
    for image in row.images:
        if image.mirror_ref:
            lines.append(f"  - `{image.container}`: `{image.original}` → `{image.mirror_ref}` ({image.digest_source})")
        elif image.refused:
            lines.append(f"  - `{image.container}`: `{image.original}`: {image.refused}")
    return lines


def plan_markdown(result: RegistryOutageResult, heading: str) -> str:
    """The blast radius and every image change, as the approver and the report show them."""
    lines = [f"### {heading}", "", f"Primary registry `{result.primary}`; mirrors: `{', '.join(result.mirrors)}`", ""]
    lines += ["| registry | up | answer |", "|---|---|---|"]
    lines += [f"| `{p['registry']}` | {'yes' if p['up'] else 'NO'} | {p['detail']} |" for p in result.probes]
    lines += ["", "| workload | stuck pods | since | action | why |", "|---|---|---|---|---|"]
    for row in result.workloads:
        lines.append(
            f"| {row.kind} `{row.namespace}/{row.name}` | {row.stuck_pods} | {row.since or '-'} | {row.action} | "
            f"{row.reason or '-'} |"
        )
    for row in result.workloads:
        detail = _image_lines(row)
        if detail:
            lines += ["", f"- {row.kind} `{row.namespace}/{row.name}`:", *detail]
    return "\n".join(lines) + "\n"


def result_markdown(result: RegistryOutageResult) -> str:
    headings = {
        "changed": "Registry outage: workloads moved",
        "unchanged": "Registry outage: nothing to change",
        "planned": "Registry outage: plan (nothing changed)",
        "not-approved": "Registry outage: not approved (nothing changed)",
    }
    phases = ", ".join(f"{name} {seconds}s" for name, seconds in result.phases.items())
    text = plan_markdown(result, headings.get(result.outcome, result.outcome)) + f"\n{result.summary}\n"
    return text + (f"\nPhases: {phases}\n" if phases else "")
