"""image-prepull's result and the markdown an SRE reads: which images every node keeps warm, what a run adds and
removes, and how many nodes hold them (pure)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from rollbook.change import ChangeResult


class SourceRow(BaseModel):
    namespace: str
    selector: dict[str, str]
    deployments: list[str] = Field(description="The Deployments it matched, whose images are kept warm.")


class PrepullResult(ChangeResult):
    namespace: str
    name: str
    images: list[str] = Field(description="Every image the DaemonSet keeps warm after this run (or would).")
    added: list[str]
    removed: list[str]
    created: bool = Field(default=False, description="The DaemonSet did not exist before this run (or would not).")
    sources: list[SourceRow]
    nodes_desired: int | None = Field(default=None, description="Nodes the DaemonSet runs on (None: not waited for).")
    nodes_ready: int | None = Field(default=None, description="Of those, the nodes whose pod is updated and Ready.")
    rollout_seconds: float | None = None


def plan_markdown(result: PrepullResult, heading: str) -> str:
    """The exact images added and removed, as the approver and the report show them."""
    lines = [f"### {heading}", "", f"DaemonSet `{result.namespace}/{result.name}`", ""]
    if result.created:
        lines += ["The DaemonSet does not exist yet: it is created.", ""]
    lines += ["| image | change |", "|---|---|"]
    added, removed = set(result.added), set(result.removed)
    for image in sorted({*result.images, *removed}):
        change = "add" if image in added else "remove" if image in removed else "keep"
        lines.append(f"| `{image}` | {change} |")
    lines += ["", "| source namespace | selector | deployments |", "|---|---|---|"]
    for source in result.sources:
        selector = ",".join(f"{k}={v}" for k, v in sorted(source.selector.items())) or "(every Deployment)"
        lines.append(f"| `{source.namespace}` | `{selector}` | {', '.join(source.deployments) or '(none)'} |")
    return "\n".join(lines) + "\n"


def result_markdown(result: PrepullResult) -> str:
    headings = {
        "changed": "Image pre-pull: DaemonSet written",
        "unchanged": "Image pre-pull: nothing to change",
        "planned": "Image pre-pull: plan (nothing changed)",
        "not-approved": "Image pre-pull: not approved (nothing changed)",
    }
    text = plan_markdown(result, headings.get(result.outcome, result.outcome)) + f"\n{result.summary}\n"
    if result.nodes_desired is not None:
        text += f"\nNodes ready: {result.nodes_ready}/{result.nodes_desired}\n"
    return text
