"""The one pod-problem rule (rollbook.pods), on pods as the API server returns them."""

from __future__ import annotations

from typing import Any

from rollbook import pods


def pod(phase: str = "Running", *, ready: bool = True, **status: Any) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}, *status.pop("conditions", [])]
    return {
        "metadata": {"name": "web-1"},
        "spec": {
            "containers": [{"name": "app", "image": "reg/app:2"}],
            "initContainers": [{"name": "init", "image": "reg/init:1"}],
        },
        "status": {"phase": phase, "conditions": conditions, **status},
    }


def waiting(name: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"name": name, "state": {"waiting": {"reason": reason, "message": message}}}


def test_healthy_and_succeeded_pods_have_no_problem() -> None:
    assert pods.problems(pod()) == []
    assert pods.problems(pod("Succeeded", ready=False)) == []
    assert pods.issue(pod()) == ""


def test_waiting_reasons_are_named_with_container_image_and_first_message_line() -> None:
    for reason in ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError"):
        found = pods.problems(pod(ready=False, containerStatuses=[waiting("app", reason, "line one\nline two")]))
        assert found == [pods.PodProblem("web-1", "app", "reg/app:2", reason, "line one")]
        assert found[0].text == f"app: {reason} (line one)"


def test_starting_containers_are_not_problems_but_the_pod_is_not_ready() -> None:
    creating = pod("Pending", ready=False, containerStatuses=[waiting("app", "ContainerCreating")])
    assert pods.problem_texts(creating) == ["phase Pending"]
    assert pods.problem_texts(pod(ready=False)) == ["not Ready"]
    assert pods.problem_texts({"status": {}}) == ["phase unknown"]


def test_terminated_with_error_names_exit_code_but_a_clean_exit_is_fine() -> None:
    crashed = {"name": "app", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    clean = {"name": "init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    found = pods.problems(pod(ready=False, containerStatuses=[crashed], initContainerStatuses=[clean]))
    assert [p.text for p in found] == ["app: OOMKilled (exit code 137)"]


def test_scheduling_first_then_init_then_app_containers_and_long_messages_cut() -> None:
    unscheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 " + "x" * 400}
    found = pods.problems(
        pod(
            "Pending",
            ready=False,
            conditions=[unscheduled],
            containerStatuses=[waiting("app", "ImagePullBackOff", "pull failed"), waiting("side", "ContainerCreating")],
            initContainerStatuses=[waiting("init", "CrashLoopBackOff")],
        )
    )
    assert [(p.container, p.reason) for p in found] == [
        ("", "Unschedulable"),
        ("init", "CrashLoopBackOff"),
        ("app", "ImagePullBackOff"),
    ]
    assert len(found[0].message) == pods.MESSAGE_LIMIT
    assert found[1].image == "reg/init:1"
