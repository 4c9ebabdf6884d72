"""registry-outage's way back from the mirror: put the original references back one workload at a time, and
make sure the cluster's nodes can really pull them before going on.

The worker seeing the primary again proves little: a firewall, a node-level proxy or a DNS entry may still keep
the nodes away from it. So each switch-back is watched until the workload has rolled out on the original
images. If its new pods get stuck pulling from the primary instead, the detour is put back at once (the same
mirror references and record) and the remaining workloads stay on the mirror: production never trades a
working mirror for a registry its nodes cannot reach. The same request run later tries again.
"""

from __future__ import annotations

import time

from prefect import get_run_logger

from flows._registry_outage_steps import Run, stuck_now, wait_ready, workload_now
from rollbook import controller_rollouts
from rollbook import registry_fallback as rules
from rollbook.change import ChangeControls, change_annotations, request_approval
from rollbook.reports.registry import WorkloadRow
from tasks.workload_images import read_workload, set_workload_images

POLL_SECONDS = 2.0


def _still_failing(run: Run, row: WorkloadRow) -> str | None:
    """Watch a workload just switched back: None once it has rolled out on the original images, else why not
    (its pods stuck pulling from the primary, or no rollout within the request's bound)."""
    deadline = time.monotonic() + run.request.rollout_timeout_seconds
    message = ""
    while time.monotonic() < deadline:
        workload, _ = stuck_now(run, row.kind, row.namespace, row.name)
        if workload is not None and workload.stuck:
            pod = workload.stuck[0]
            return (
                f"the worker reaches {run.primary} again, but the nodes cannot pull from it: pod {pod.pod} "
                f"{pod.reason} on {pod.image} ({pod.message or 'no message'})"
            )
        state = controller_rollouts.rollout_state(
            row.kind, read_workload(run.cluster, row.kind, row.namespace, row.name)
        )
        if state.done:
            return None
        message = state.message
        time.sleep(POLL_SECONDS)
    return f"did not roll out on the original images within {run.request.rollout_timeout_seconds}s: {message}"


def _back_to_mirror(run: Run, controls: ChangeControls, row: WorkloadRow, detour: rules.Workload) -> None:
    """The detour as it was (the mirror references and their record), written over the failed switch-back."""
    record = detour.record or {}
    mirrored = {str(c): str(ref) for c, ref in (record.get("mirrored") or {}).items()}
    text = rules.record_text(
        primary=str(record.get("primary") or run.primary),
        mirror=str(record.get("mirror") or ",".join(run.mirrors)),
        originals={str(c): str(ref) for c, ref in (record.get("originals") or {}).items()},
        mirrored=mirrored,
    )
    now = workload_now(run, row.kind, row.namespace, row.name)
    _write(run, controls, row, images=mirrored, action="registry-fallback", record=text, version=now.resource_version)
    wait_ready(run, row)


def _write(
    run: Run, controls: ChangeControls, row: WorkloadRow, *, images: dict[str, str], action: str,
    record: str | None, version: str,
) -> None:  # fmt: skip
    """One guarded write: the images, this run's audit annotations and the detour record (None: removed)."""
    annotations = {**change_annotations(controls, action), rules.FALLBACK_ANNOTATION: record}
    set_workload_images(
        run.cluster, row.kind, row.namespace, row.name,
        images=images, annotations=annotations, resource_version=version,
    )  # fmt: skip


def switch_back(run: Run, controls: ChangeControls, rows: list[WorkloadRow]) -> bool:
    """Put the original references back (approval first when asked for, or when this run has not been through
    a gate yet and the controls want one). Returns whether anything was written."""
    ask = run.request.approve_switch_back or (controls.require_approval and not run.approved_in_run)
    gate = controls.model_copy(update={"require_approval": ask})
    decision = request_approval(
        gate, f"### {run.primary} serves the images again: switch {len(rows)} workload(s) back?\n"
    )
    if not decision.approved:
        for row in rows:
            row.reason = f"switch-back not approved ({decision.comment}): still on the mirror"
        return False
    written = False
    for index, row in enumerate(rows):
        workload = workload_now(run, row.kind, row.namespace, row.name)
        originals = rules.switch_back_images(workload)
        if workload.state != "on-mirror" or not originals:
            row.action, row.reason = "left-alone", "its images changed since the detour: not switched back"
            continue
        _write(
            run, controls, row, images=originals, action="registry-switch-back", record=None,
            version=workload.resource_version,
        )  # fmt: skip
        written = True
        why = _still_failing(run, row)
        if why is None:
            row.action, row.reason = "switched-back", ""
            continue
        get_run_logger().warning("%s %s/%s: %s; putting the mirror back", row.kind, row.namespace, row.name, why)
        _back_to_mirror(run, controls, row, workload)
        row.action, row.reason = "switch-back-failed", f"{why}: back on the mirror"
        for rest in rows[index + 1 :]:
            rest.reason = f"not switched back: {row.kind} {row.namespace}/{row.name} could not pull from {run.primary}"
        break
    run.phase("switch-back")
    return written
