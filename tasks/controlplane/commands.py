"""The generic driver: each step is a list of commands (argv lists, never shell strings) from the request.

Any control plane whose services a command can stop and start fits: systemd units (`systemctl stop etcd`),
supervisord, or the sandbox (`rollbook sandbox service stop kube-apiserver`). A command returns once its
service is stopped or started and ready; its exit status decides, and its output is quoted on failure.
"""

from __future__ import annotations

import os
import subprocess

from tasks.controlplane.base import ControlPlaneError


class CommandsDriver:
    kind = "commands"

    def __init__(
        self,
        *,
        stop_controllers: list[list[str]],
        start_controllers: list[list[str]],
        stop_api_servers: list[list[str]],
        start_api_servers: list[list[str]],
        stop_etcd: list[list[str]],
        start_etcd: list[list[str]],
        env: dict[str, str],
        timeout_seconds: int,
    ) -> None:
        self._steps = {
            "stop the controllers": stop_controllers,
            "start the controllers": start_controllers,
            "stop the API servers": stop_api_servers,
            "start the API servers": start_api_servers,
            "stop etcd": stop_etcd,
            "start etcd": start_etcd,
        }
        self._env = {**os.environ, **env}
        self._timeout = timeout_seconds

    def _run(self, step: str) -> None:
        for argv in self._steps[step]:
            try:
                proc = subprocess.run(
                    argv, capture_output=True, text=True, timeout=self._timeout, env=self._env, stdin=subprocess.DEVNULL
                )
            except FileNotFoundError:
                raise ControlPlaneError(f"{step}: command not found: {argv[0]!r}") from None
            except subprocess.TimeoutExpired:
                raise ControlPlaneError(f"{step}: {argv[0]} did not finish within {self._timeout}s") from None
            if proc.returncode != 0:
                out = (proc.stderr.strip() or proc.stdout.strip())[-600:]
                raise ControlPlaneError(f"{step}: {' '.join(argv[:4])} exited {proc.returncode}: {out}")

    def stop_controllers(self) -> None:
        self._run("stop the controllers")

    def start_controllers(self) -> None:
        self._run("start the controllers")

    def stop_api_servers(self) -> None:
        self._run("stop the API servers")

    def start_api_servers(self) -> None:
        self._run("start the API servers")

    def stop_etcd(self) -> None:
        self._run("stop etcd")

    def start_etcd(self) -> None:
        self._run("start etcd")
