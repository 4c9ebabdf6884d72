"""kwok Stages that make the simulated kubelet misbehave on demand.

kwok runs with the Stage CRD enabled, so a fault is a Stage object: creating it switches the fault on,
deleting it switches it off, and changing its values (which registry hosts are down, which images crash)
takes effect on the next pod kwok sees. Each fault stage has a high weight, so it wins over kwok's
default lifecycle stages whenever both match.
"""

from __future__ import annotations

from typing import Any

FAULT_LABEL = "sandbox.rollbook.dev/fault"
NODE_FAULT_LABEL = "sandbox.rollbook.dev/node-fault"  # on pods whose node is down: their kubelet is silent
STAGE_API = ("kwok.x-k8s.io", "v1alpha1", "stages")
FAULT_WEIGHT = 10000

_NOT_DELETING: dict[str, Any] = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}

# The conditions of a pod whose containers are not ready; `$now` is set by the template that includes it.
_NOT_READY_CONDITIONS = """\
conditions:
- {type: PodScheduled, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: Ready, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }}}
- {type: ContainersReady, status: "False", reason: ContainersNotReady, lastTransitionTime: {{ $now | Quote }}}
"""

_PULL_BACKOFF_STATUS = (
    "{{ $now := Now }}\n"
    + _NOT_READY_CONDITIONS
    + """\
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    waiting:
      reason: ImagePullBackOff
      message: {{ printf "Back-off pulling image %q: registry unreachable" .image | Quote }}
{{ end }}
phase: Pending
startTime: {{ $now | Quote }}
"""
)

_CRASHLOOP_STATUS = (
    "{{ $now := Now }}{{ $pod := . }}\n"
    + _NOT_READY_CONDITIONS
    + """\
containerStatuses:
{{ range $c := .spec.containers }}
{{ $restarts := 0 }}
{{ range $pod.status.containerStatuses }}{{ if eq .name $c.name }}
{{ $restarts = add .restartCount 1 }}
{{ end }}{{ end }}
- name: {{ $c.name | Quote }}
  image: {{ $c.image | Quote }}
  ready: false
  started: false
  restartCount: {{ $restarts }}
  lastState:
    terminated: {exitCode: 1, reason: Error, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}
  state:
    waiting:
      reason: CrashLoopBackOff
      message: {{ printf "back-off restarting failed container %s" $c.name | Quote }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""
)

_NODE_NOT_READY_STATUS = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
{{ if eq .type "Ready" }}
- {type: Ready, status: "False", reason: KubeletNotReady, message: "simulated node failure",
   lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
{{ else }}
- {type: {{ .type | Quote }}, status: {{ .status | Quote }}, reason: {{ .reason | Quote }},
   message: {{ .message | Quote }}, lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
{{ end }}
{{ end }}
"""


_READY_AGAIN_STATUS = """\
{{ $now := Now }}
conditions:
- {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running: {startedAt: {{ $now | Quote }}}
{{ end }}
"""


def _stage(
    name: str,
    kind: str,
    expressions: list[dict[str, Any]],
    status_template: str,
    event: tuple[str, str] | None,
    delay_ms: int,
    jitter_ms: int,
    weight: int = FAULT_WEIGHT,
) -> dict[str, Any]:
    nxt: dict[str, Any] = {"statusTemplate": status_template}
    if event:
        nxt["event"] = {"type": "Warning", "reason": event[0], "message": event[1]}
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "rollbook-sandbox"}},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": kind},
            "selector": {"matchExpressions": expressions},
            "weight": weight,
            "delay": {"durationMilliseconds": delay_ms, "jitterDurationMilliseconds": jitter_ms},
            "next": nxt,
        },
    }


def image_pull_backoff(hosts: list[str]) -> dict[str, Any]:
    """Pods not yet running whose image comes from one of `hosts` wait in ImagePullBackOff.

    The stage keeps matching its own output, so it re-fires every second or two and outbids kwok's pod-ready
    stage each time; once the host is healed, pod-ready picks the still-pending pod up, as a kubelet's next
    pull attempt would.
    """
    expressions = [
        _NOT_DELETING,
        {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
        {"key": '.spec.containers[].image | split("/") | .[0]', "operator": "In", "values": sorted(hosts)},
    ]
    return _stage(
        "rollbook-fault-image-pull-backoff",
        "Pod",
        expressions,
        _PULL_BACKOFF_STATUS,
        ("Failed", "Failed to pull image: registry unreachable"),
        1000,
        1000,
    )


def crashloop_by_label() -> dict[str, Any]:
    """Pods labelled sandbox.rollbook.dev/fault=CrashLoopBackOff crash forever; the stage re-fires on its own
    output, so restartCount climbs as it does on a real node."""
    expressions = [
        _NOT_DELETING,
        {"key": f'.metadata.labels["{FAULT_LABEL}"]', "operator": "In", "values": ["CrashLoopBackOff"]},
    ]
    return _stage(
        "rollbook-fault-crashloop-label",
        "Pod",
        expressions,
        _CRASHLOOP_STATUS,
        ("BackOff", "Back-off restarting failed container"),
        2000,
        2000,
    )


def crashloop_by_image(images: list[str]) -> dict[str, Any]:
    """Pods running any of `images` (exact references) crash forever."""
    expressions = [_NOT_DELETING, {"key": ".spec.containers[].image", "operator": "In", "values": sorted(images)}]
    return _stage(
        "rollbook-fault-crashloop-image",
        "Pod",
        expressions,
        _CRASHLOOP_STATUS,
        ("BackOff", "Back-off restarting failed container"),
        2000,
        2000,
    )


def node_not_ready() -> dict[str, Any]:
    """Nodes labelled sandbox.rollbook.dev/fault=NotReady report Ready=False; removing the label lets kwok's
    node-initialize stage report them Ready again. Like the pull fault, it re-fires to outbid node-initialize."""
    expressions = [{"key": f'.metadata.labels["{FAULT_LABEL}"]', "operator": "In", "values": ["NotReady"]}]
    return _stage("rollbook-fault-node-not-ready", "Node", expressions, _NODE_NOT_READY_STATUS, None, 1000, 1000)


def pod_ready_again() -> dict[str, Any]:
    """Running pods that lost readiness (the controller-manager marks a NotReady node's pods not ready) become
    Ready again once their node is back, as a kubelet's next status sync would make them.

    Pods still on a faulted node carry NODE_FAULT_LABEL and are left alone; fault stages outbid this one.
    """
    expressions: list[dict[str, Any]] = [
        _NOT_DELETING,
        {"key": ".status.phase", "operator": "In", "values": ["Running"]},
        {"key": '.status.conditions[]? | select(.type == "Ready") | .status', "operator": "NotIn", "values": ["True"]},
        {"key": f'.metadata.labels["{FAULT_LABEL}"]', "operator": "DoesNotExist"},
        {"key": f'.metadata.labels["{NODE_FAULT_LABEL}"]', "operator": "DoesNotExist"},
    ]
    return _stage("rollbook-pod-ready-again", "Pod", expressions, _READY_AGAIN_STATUS, None, 1000, 1000, weight=0)
