"""The `rollbook` command line: run the local Prefect server, serve deployments, run a flow once, list the catalogue.

Prefect is imported only inside the subcommands, after `_prepare_prefect_env()`: Prefect reads its settings
from the environment at import time, so PREFECT_HOME and PREFECT_API_URL must be decided first.

This module is the application's entry point, the one place in rollbook/ allowed to import flows/ and
deployments/ (lazily, inside the subcommands; tests/unit/test_layers.py holds every other module to its layer).
Commands of other packages (the sandbox's) come in through `rollbook.commands` entry points, never an import.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from prefect.states import State

from rollbook import redaction
from rollbook.params import ParamError, parse_assignments, validate_for
from rollbook.paths import DEFAULT_SERVER_PORT, local_api_url, prefect_home
from rollbook.server import is_healthy, run_server, secure_home

USAGE_ERROR = 2


def _prepare_prefect_env(api_url: str | None = None) -> None:
    """Point Prefect at rollbook's home and at a server: `--api-url` first, else PREFECT_API_URL, else a running
    `rollbook server` on the default port.

    Without any, Prefect falls back to a temporary server on the SQLite database in that same home.
    Does nothing once Prefect is imported (e.g. when `main()` is called from tests), because it would no
    longer have any effect (the console script always runs it before Prefect's import).
    """
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
    if "prefect" in sys.modules:
        return
    home = os.environ.setdefault("PREFECT_HOME", str(prefect_home()))
    # Prefect creates only the last path component and warns otherwise; private, as a temporary server keeps
    # its database (saved blocks and the key that decrypts them) there.
    secure_home(Path(home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect gives its temporary server 20 s to answer. On a fresh machine that start also creates the SQLite
    # database and runs every migration, which takes longer on two busy cores: the first `make demo` failed so.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if not os.environ.get("PREFECT_API_URL") and is_healthy(local_api_url(), timeout=1.0):
        os.environ["PREFECT_API_URL"] = local_api_url()


def _fail(command: str, message: str, code: int = USAGE_ERROR) -> int:
    print(f"rollbook {command}: {message}", file=sys.stderr)
    return code


def cmd_server(args: argparse.Namespace) -> int:
    """`rollbook server`."""
    from rollbook.server import DATABASE_ENV

    return run_server(args.port, args.database_url or os.environ.get(DATABASE_ENV))


def _unreachable(api_url: str | None, *, source: str) -> str | None:
    """Why the server chosen for this command cannot be used (naming the URL tried), or None when it answers."""
    if not api_url or is_healthy(api_url, timeout=3.0):
        return None
    return (
        f"no Prefect server answers at {api_url} (from {source}): start `rollbook server --port PORT` and pass "
        "--api-url http://127.0.0.1:PORT/api (or export PREFECT_API_URL)"
    )


def _choose_server(args: argparse.Namespace) -> str:
    """`--api-url`, else PREFECT_API_URL, else the default local server: the same order for serve and run.
    Returns where the URL came from, for error messages."""
    given = getattr(args, "api_url", None)
    source = "--api-url" if given else "PREFECT_API_URL"
    _prepare_prefect_env(given)
    return source


def cmd_serve(args: argparse.Namespace) -> int:
    """`rollbook serve`: all deployments in this one process, until interrupted."""
    source = _choose_server(args)
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url and "prefect" not in sys.modules:
        return _fail(
            "serve",
            f"no Prefect server: none answers at {local_api_url()} (the default); start `rollbook server`, or "
            "pass --api-url (or export PREFECT_API_URL) for a server elsewhere",
        )
    problem = _unreachable(api_url, source=source)
    if problem:
        return _fail("serve", problem)
    from prefect import serve

    from deployments import all_deployments
    from deployments.schedules import ScheduleError

    try:
        deployments = all_deployments()
    except ScheduleError as exc:
        return _fail("serve", str(exc))
    serve(*deployments, limit=args.limit)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """`rollbook run FLOW`: validate parameters, then run the flow once in this process."""
    source = _choose_server(args)
    problem = _unreachable(os.environ.get("PREFECT_API_URL"), source=source)
    if problem:
        return _fail("run", problem)
    from flows import FLOWS

    flow = FLOWS.get(args.flow)
    if flow is None:
        return _fail("run", f"unknown flow {args.flow!r}; known flows: {', '.join(sorted(FLOWS))}")
    try:
        params = parse_assignments(args.param)
        validate_for(flow.fn, params)
    except ParamError as exc:
        return _fail("run", f"{args.flow}: {exc}")
    # cast: Prefect's overloads cannot tell a registry entry's return type, and pick the `-> None` one.
    state = cast("State[Any]", flow(**params, return_state=True))
    if not state.is_completed():
        return _fail("run", f"{args.flow} ended {state.name}: {redaction.redact(state.message or '')}", code=1)
    print(redaction.redact(json.dumps(state.result(), default=_jsonable)))
    return 0


def _jsonable(value: Any) -> Any:
    """Typed results (ChangeResult models) print as their JSON, anything else json cannot encode as text."""
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else str(value)


def cmd_catalogue(args: argparse.Namespace) -> int:
    """`rollbook catalogue`: the runbooks, or prefect.yaml generated from them (--write) or compared (--check)."""
    _prepare_prefect_env()
    from deployments.prefect_yaml import render
    from deployments.schedules import ScheduleError, load_schedules
    from flows import CATALOGUE

    if args.write is None and args.check is None:
        for entry in CATALOGUE:
            print(f"{entry.name:<22} {','.join(entry.tags):<22} {entry.description}")
        return 0
    try:
        text = render(CATALOGUE, load_schedules())
    except ScheduleError as exc:
        return _fail("catalogue", str(exc))
    if args.write is not None:
        Path(args.write).write_text(text)
        print(f"wrote {args.write} ({len(CATALOGUE)} deployments)")
        return 0
    if not Path(args.check).is_file() or Path(args.check).read_text() != text:
        return _fail(
            "catalogue",
            f"{args.check} differs from flows.CATALOGUE: run `rollbook catalogue --write {args.check}`",
            code=1,
        )
    return 0


def cmd_webhook(args: argparse.Namespace) -> int:
    """`rollbook webhook`: the Alertmanager receiver, starting the routed deployments' runs."""
    _prepare_prefect_env()
    if not os.environ.get("PREFECT_API_URL"):
        return _fail("webhook", "no Prefect server: start `rollbook server` or export PREFECT_API_URL")
    from pydantic import SecretStr

    from flows import FLOWS
    from rollbook.alert_launcher import PrefectLauncher, token_from_block
    from rollbook.alert_rules import RulesError, load_rules
    from rollbook.webhook import TOKEN_ENV, Limits, create_app, serve, token_from

    try:
        rules = load_rules(Path(args.rules), {name: flow.fn for name, flow in FLOWS.items()})
        token = (
            token_from_block(args.token_block)
            if args.token_block
            else token_from(file=args.token_file, env=dict(os.environ))
        )
    except (RulesError, OSError, ValueError) as exc:
        return _fail("webhook", str(exc))
    if not token:
        return _fail("webhook", f"no bearer token: give --token-file, --token-block or set {TOKEN_ENV}")
    limits = Limits(max_body_bytes=args.max_body_bytes, rate_per_second=args.rate, burst=max(1, int(args.rate * 2)))
    try:
        app = create_app(rules=rules, launcher=PrefectLauncher(), token=SecretStr(token), limits=limits)
    except ValueError as exc:
        return _fail("webhook", str(exc))
    print(f"rollbook webhook: {len(rules.rules)} rules from {args.rules}; POST /alerts on {args.host}:{args.port}")
    serve(app, host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key)
    return 0


def _flow_names() -> str:
    """Known flows for help text; importing Prefect costs seconds, so only `run --help` pays for it."""
    _prepare_prefect_env()
    from flows import FLOWS

    return ", ".join(sorted(FLOWS))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollbook",
        description="Kubernetes deploy, rollback and recovery runbooks as Prefect flows.",
        epilog="Typical session: `rollbook server` in one terminal, `rollbook serve` in another, then trigger "
        "deployments from the Prefect UI; or `rollbook run FLOW` to run one flow right here.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_server(subparsers)
    _add_serve(subparsers)
    _add_run(subparsers)
    _add_catalogue(subparsers)
    _add_webhook(subparsers)
    _add_plugin_commands(subparsers)
    return parser


def _add_server(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "server",
        help="run the local Prefect server (SQLite, or a shared PostgreSQL with --database-url)",
        description=f"Run a Prefect server on 127.0.0.1 in the foreground, with its SQLite database (mode 0600, "
        f"in a 0700 directory) under {prefect_home()} ($PREFECT_HOME, else $XDG_DATA_HOME, respected), or a "
        "shared PostgreSQL. If a Prefect server already answers on the port, reuse it and exit 0. Prints the "
        "PREFECT_API_URL to export.",
    )
    p.add_argument("--port", type=int, default=DEFAULT_SERVER_PORT, help="TCP port (default %(default)s)")
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL a team shares (postgresql://user:password@host:port/db) instead of SQLite; "
        "or set ROLLBOOK_DATABASE_URL (keeps the password off the command line)",
    )
    p.set_defaults(func=cmd_server)


def _add_serve(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve every rollbook deployment in this process",
        description="Register every rollbook deployment with the Prefect server and execute their runs from "
        "this process until interrupted. Uses PREFECT_API_URL, else a `rollbook server` on the default port.",
    )
    p.add_argument("--limit", type=int, default=None, help="maximum concurrent flow runs (default: no limit)")
    _add_api_url(p)
    p.set_defaults(func=cmd_serve)


class _FlowListHelp(argparse.RawDescriptionHelpFormatter):
    """Fills in the flow list only when help is actually printed (it needs a Prefect import)."""

    def format_help(self) -> str:
        return super().format_help().replace("{flows}", _flow_names())


def _add_run(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run one flow once, here and now",
        formatter_class=_FlowListHelp,
        description="Run a flow once in this process. Parameters are checked against the flow's signature "
        "before anything runs.\n\nFlows: {flows}",
        epilog="VALUE is parsed as JSON when possible, else taken as a string; dotted keys set nested fields.\n"
        "example: rollbook run hello-cluster --param request.namespace=kube-system\n"
        "exit codes: 0 completed, 1 flow run failed, 2 unknown flow or invalid parameter",
    )
    p.add_argument("flow", metavar="FLOW", help="flow name")
    p.add_argument(
        "--param", "-p", action="append", default=[], metavar="KEY=VALUE", help="flow parameter (repeatable)"
    )
    _add_api_url(p)
    p.set_defaults(func=cmd_run)


def _add_api_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url",
        metavar="URL",
        default=None,
        help="the Prefect API to use, e.g. http://127.0.0.1:4300/api (what `rollbook server --port 4300` prints); "
        "default: $PREFECT_API_URL, else a `rollbook server` on the default port",
    )


def _add_catalogue(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "catalogue",
        help="list the runbooks; write or check prefect.yaml from them",
        description="List every runbook (name, tags, description) from flows.CATALOGUE, the one list that "
        "`rollbook run`, `rollbook serve` and prefect.yaml come from.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", metavar="PATH", help="write the prefect.yaml generated from the catalogue to PATH")
    mode.add_argument("--check", metavar="PATH", help="exit 1 when PATH is not what --write would write")
    p.set_defaults(func=cmd_catalogue)


DEFAULT_WEBHOOK_PORT = 9095


def _add_webhook(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "webhook",
        help="receive Alertmanager notifications and start the recovery runs its rules route them to",
        description="Serve POST /alerts (Alertmanager's webhook_config, payload version 4) and GET /healthz. "
        "Each firing alert that matches a rule starts one run of the rule's deployment (served by `rollbook "
        "serve`), once per alert occurrence however often Alertmanager repeats it. Requires a bearer token "
        "(Alertmanager's http_config.authorization).",
    )
    p.add_argument("--rules", required=True, metavar="PATH", help="routing rules (YAML; see rollbook.alert_rules)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_WEBHOOK_PORT, help="TCP port (default %(default)s)")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token-file", metavar="PATH", help="file holding the bearer token")
    token.add_argument("--token-block", metavar="NAME", help="Prefect Secret block holding the bearer token")
    p.add_argument("--tls-cert", metavar="PATH", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", metavar="PATH", help="private key of --tls-cert (PEM)")
    p.add_argument("--max-body-bytes", type=int, default=256 * 1024, help="largest body accepted (default %(default)s)")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second accepted (default %(default)s)")
    p.set_defaults(func=cmd_webhook)


PLUGIN_COMMANDS = "rollbook.commands"


def _add_plugin_commands(subparsers: Any) -> None:
    """Commands other installed packages register under the `rollbook.commands` entry-point group, each a
    `register(subparsers)` function (pyproject.toml adds the sandbox's); rollbook works without any of them."""
    for entry in entry_points(group=PLUGIN_COMMANDS):
        try:
            register = entry.load()
        except ImportError as exc:
            print(f"rollbook: {entry.name} commands unavailable: {exc}", file=sys.stderr)
            continue
        register(subparsers)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    result: int = args.func(args)
    return result
