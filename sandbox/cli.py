"""`rollbook sandbox ...`: the local real cluster from the command line."""

from __future__ import annotations

import argparse
import json
import shlex

from sandbox import datastores, toolchain, velero
from sandbox.cluster import Sandbox
from sandbox.observability import alert_webhook_token_file, alertmanager_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="a local Kubernetes control plane (etcd, apiserver, controller-manager, scheduler, kwok), registries, "
        "Prometheus, Alertmanager, an S3 endpoint and PostgreSQL",
        description="Build (once, cached) and run a real local Kubernetes control plane with kwok-simulated nodes, "
        "two OCI registries with signed demo images, and switchable faults. "
        "ROLLBOOK_SANDBOX_DIR / ROLLBOOK_SANDBOX_BASE_PORT select another sandbox.",
    )
    sub = parser.add_subparsers(dest="sandbox_command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start everything (idempotent) and print a summary")
    up.add_argument("--nodes", type=int, default=3, help="number of simulated nodes (default 3)")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop exactly what `up` started and free its ports")
    down.add_argument(
        "--purge", action="store_true", help="also delete etcd data, registries, keys and PostgreSQL data"
    )
    down.set_defaults(func=_down)

    sub.add_parser("status", help="show each service: pid, ready, ports, log file").set_defaults(func=_status)
    sub.add_parser("kubeconfig", help="print the admin kubeconfig path (export KUBECONFIG=$(...))").set_defaults(
        func=_kubeconfig
    )

    env = sub.add_parser(
        "env",
        help="print shell exports (KUBECONFIG, registries, tool directory, cosign, grype and its sandbox database, "
        "S3, Alertmanager and PostgreSQL URLs): "
        'eval "$(rollbook sandbox env)"',
    )
    env.add_argument(
        "--scanner",
        action="store_true",
        help="build grype first if needed (once, minutes); without it, ROLLBOOK_GRYPE and GRYPE_DB_* are exported "
        "only when grype is already built",
    )
    env.set_defaults(func=_env)

    service = sub.add_parser(
        "service",
        help="stop or start one service of a running sandbox (what a control-plane driver calls during a restore)",
    )
    ssub = service.add_subparsers(dest="service_action", required=True, metavar="ACTION")
    for action in ("stop", "start"):
        one = ssub.add_parser(action, help=f"{action} services in the order given (returns once each is done)")
        one.add_argument("names", nargs="+", metavar="NAME", help="e.g. kube-apiserver, etcd")
        one.set_defaults(func=lambda a: _service(a.service_action, a.names))

    fault = sub.add_parser("fault", help="switch simulated failures on or off")
    fsub = fault.add_subparsers(dest="fault", required=True, metavar="FAULT")
    unreachable = fsub.add_parser("unreachable", help="registry hosts whose pulls fail (none: all healthy)")
    unreachable.add_argument("hosts", nargs="*", help="e.g. 127.0.0.1:24306")
    unreachable.set_defaults(func=lambda a: _run(lambda s: s.set_unreachable_registries(a.hosts)))
    crash = fsub.add_parser("crashloop", help="images whose pods crash-loop (none: clear)")
    crash.add_argument("images", nargs="*")
    crash.set_defaults(func=lambda a: _run(lambda s: s.set_crashing_images(a.images)))
    node = fsub.add_parser("node-not-ready", help="make a node report NotReady")
    node.add_argument("node")
    node.add_argument("--clear", action="store_true", help="make it Ready again")
    node.set_defaults(func=lambda a: _run(lambda s: s.set_node_not_ready(a.node, not a.clear)))


def _run(action) -> int:  # type: ignore[no-untyped-def]
    sandbox = Sandbox()
    if not sandbox.is_up():
        print("sandbox is not running: start it with `rollbook sandbox up`")
        return 1
    action(sandbox)
    return 0


def _service(action: str, names: list[str]) -> int:
    """Exit 0 once every service is stopped (or was not running) or started and ready; 2 for an unknown name
    (checked before any service is touched). One process for several services: a restore's downtime pays
    Python's start-up once."""
    sandbox = Sandbox()
    try:
        for name in names:
            sandbox.service_spec(name)
    except ValueError as exc:
        print(exc)
        return 2
    for name in names:
        if action == "stop":
            print(f"{name}: {'stopped' if sandbox.stop_service(name) else 'was not running'}")
        else:
            print(f"{name}: ready (pid {sandbox.start_service(name)})")
    return 0


def _up(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        print("--nodes must be at least 1")
        return 2
    sandbox = Sandbox()
    report = sandbox.up(nodes=args.nodes)
    print(f"sandbox up in {report.seconds}s with {report.nodes} node(s)")
    print(f"export KUBECONFIG={sandbox.cfg.kubeconfig}")
    print(f"registry {sandbox.cfg.registry_host()}  mirror {sandbox.cfg.registry_host(mirror=True)}")
    print("demo images: " + json.dumps(report.images))
    return 0


def _down(args: argparse.Namespace) -> int:
    sandbox = Sandbox()
    if args.purge:
        sandbox.purge()
        print(f"sandbox stopped and {sandbox.cfg.work_dir} removed")
    else:
        stopped = sandbox.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _status(args: argparse.Namespace) -> int:
    statuses = Sandbox().status()
    for s in statuses:
        state = "ready" if s.ready else ("running" if s.running else "stopped")
        print(f"{s.name:<24} {state:<8} pid={s.pid or '-':<8} ports={','.join(map(str, s.ports)):<12} {s.log}")
    return 0 if all(s.ready for s in statuses) else 1


def _kubeconfig(args: argparse.Namespace) -> int:
    print(Sandbox().cfg.kubeconfig)
    return 0


def _env(args: argparse.Namespace) -> int:
    """Product code finds the sandbox's binaries through these variables only: it never imports sandbox/."""
    sandbox = Sandbox()
    exports = {
        "KUBECONFIG": sandbox.cfg.kubeconfig,
        "ROLLBOOK_SANDBOX_REGISTRY": sandbox.cfg.registry_host(),
        "ROLLBOOK_SANDBOX_MIRROR": sandbox.cfg.registry_host(mirror=True),
        "ROLLBOOK_SANDBOX_BIN": sandbox.bins,
        "ROLLBOOK_COSIGN": sandbox.bins / "cosign",
        "ROLLBOOK_SANDBOX_S3_URL": datastores.s3_url(sandbox.cfg),
        "ROLLBOOK_SANDBOX_ALERTMANAGER_URL": alertmanager_url(sandbox.cfg),
        # `rollbook webhook --port $ROLLBOOK_SANDBOX_ALERT_WEBHOOK_PORT --token-file $ROLLBOOK_WEBHOOK_TOKEN_FILE`
        "ROLLBOOK_SANDBOX_ALERT_WEBHOOK_PORT": sandbox.cfg.port("alert-webhook"),
        "ROLLBOOK_WEBHOOK_TOKEN_FILE": alert_webhook_token_file(sandbox.cfg),
    }
    if args.scanner or toolchain.scanner_built():
        exports.update(sandbox.grype_env())
    else:
        print("# grype is not built: `rollbook sandbox env --scanner` builds it and exports ROLLBOOK_GRYPE")
    if toolchain.velero_built():  # the velero CLI for people (flows use Velero's API objects, not the CLI)
        exports["ROLLBOOK_VELERO"] = toolchain.velero_bin_dir() / "velero"
        exports["VELERO_NAMESPACE"] = velero.NAMESPACE  # the CLI's own variable: where the server's objects live
    if datastores.postgres_password_file(sandbox.cfg).exists():  # made by the first `up`
        exports["ROLLBOOK_SANDBOX_DATABASE_URL"] = datastores.database_url(sandbox.cfg)
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(str(value))}")
    return 0
