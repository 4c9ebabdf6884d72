"""The one rule for "what is wrong with this pod", on pods as the API server returns them (plain JSON dicts).

Every flow that explains a failed rollout (deployment-undo, helm-atomic-upgrade, helm-rollback, the checklist's
current-release check) names the same reasons in the same words, so an operator reading two reports of one
incident sees one story. Callers holding the client's models convert with
`ApiClient().sanitize_for_serialization(pod)` first (the camelCase JSON the API server sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

# Waiting reasons that only mean "not started yet": a pod showing them is slow, not broken, so they are not
# named as a problem (the pod still counts as not Ready below when nothing else is wrong).
BENIGN_WAITING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})
# Long kubelet/scheduler messages are cut here: a report names the cause, the pod's events hold the rest.
MESSAGE_LIMIT = 160


@dataclass(frozen=True)
class PodProblem:
    """One thing wrong with one pod; `container` is empty for pod-level problems (scheduling, readiness)."""

    pod: str
    container: str
    image: str
    reason: str
    message: str = ""

    @property
    def text(self) -> str:
        """`container: Reason (first line of the message)`, the form every report uses."""
        head = f"{self.container}: {self.reason}" if self.container else self.reason
        return f"{head} ({self.message})" if self.message else head


def _first_line(message: Any) -> str:
    text = str(message or "").strip()
    return text.splitlines()[0][:MESSAGE_LIMIT] if text else ""


def _name(pod: JSON) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


def is_ready(pod: JSON) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _scheduling_problems(pod: JSON) -> list[PodProblem]:
    found = []
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            reason = str(cond.get("reason") or "Unschedulable")
            found.append(PodProblem(_name(pod), "", "", reason, _first_line(cond.get("message"))))
    return found


def _container_problems(pod: JSON) -> list[PodProblem]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    images = {
        str(c.get("name")): str(c.get("image") or "")
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    }
    found = []
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            name = str(cs.get("name") or "")
            image = images.get(name) or str(cs.get("image") or "")
            state = cs.get("state") or {}
            waiting = state.get("waiting") or {}
            terminated = state.get("terminated") or {}
            if waiting.get("reason") and waiting["reason"] not in BENIGN_WAITING_REASONS:
                found.append(
                    PodProblem(_name(pod), name, image, str(waiting["reason"]), _first_line(waiting.get("message")))
                )
            elif terminated and int(terminated.get("exitCode") or 0) != 0:
                detail = f"exit code {terminated.get('exitCode')}"
                message = _first_line(terminated.get("message"))
                text = f"{detail}: {message}" if message else detail
                found.append(PodProblem(_name(pod), name, image, str(terminated.get("reason") or "Error"), text))
    return found


def problems(pod: JSON) -> list[PodProblem]:
    """Everything wrong with `pod`, most specific first; empty when it is Running and Ready, or Succeeded.

    1. not scheduled (PodScheduled False, e.g. Unschedulable, with the scheduler's message);
    2. a container waiting for a reason other than starting up (ImagePullBackOff, ErrImagePull,
       CrashLoopBackOff, CreateContainerConfigError...), or terminated with a non-zero exit code;
    3. only when nothing above explains it: not Running (`phase Pending`) or Running but not Ready.
    """
    found = _scheduling_problems(pod) + _container_problems(pod)
    if found:
        return found
    phase = str((pod.get("status") or {}).get("phase") or "")
    if phase == "Succeeded":
        return []
    if phase != "Running":
        return [PodProblem(_name(pod), "", "", f"phase {phase or 'unknown'}")]
    return [] if is_ready(pod) else [PodProblem(_name(pod), "", "", "not Ready")]


def problem_texts(pod: JSON) -> list[str]:
    return [p.text for p in problems(pod)]


def issue(pod: JSON) -> str:
    """One line for a table cell: the problems joined, '' for a healthy pod."""
    return "; ".join(problem_texts(pod))
