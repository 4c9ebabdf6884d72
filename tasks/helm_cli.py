"""Running helm: the executable, a kubeconfig file for it, argv lists, and pyhelm3 under a hard deadline.

Most calls go through `pyhelm3` (checked against helm v4.3.1). `pyhelm3.Client` asks the binary for its
version and then uses `--rollback-on-failure` on helm v4 (`--atomic` on v3); its bare `--wait` means helm v4's
`watcher` strategy. What it cannot do is run with argv lists built by `helm_argv` (see `render_upgrade`).

Every task runs its helm work under its own deadline (asyncio `wait_for`; pyhelm3 terminates the helm process
when cancelled), so a hung helm is stopped even where Prefect's `timeout_seconds` cannot interrupt the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pyhelm3

from blocks import KubernetesCluster
from rollbook import redaction

T = TypeVar("T")

DEFAULT_HELM = "helm"
# pyhelm3 passes --history-max on every rollback/upgrade; helm's own default, so history is not pruned harder.
HISTORY_MAX = 10


def check_executable(executable: str) -> str:
    found = shutil.which(executable)
    if found is None:
        raise FileNotFoundError(f"helm executable not found: {executable!r} (set helm_executable to its path)")
    return found


@contextlib.contextmanager
def kubeconfig_file(cluster: KubernetesCluster) -> Iterator[Path]:
    """A kubeconfig path for the helm binary: the block's file, or its inline secret in a private temp file."""
    if cluster.kubeconfig_path:
        yield Path(cluster.kubeconfig_path).expanduser()
        return
    assert cluster.kubeconfig is not None  # the block validates that exactly one source is set
    fd, name = tempfile.mkstemp(prefix="rollbook-kubeconfig-", suffix=".yaml")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(redaction.reveal(cluster.kubeconfig))
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def run_pyhelm3(
    cluster: KubernetesCluster,
    helm: str,
    deadline_seconds: float,
    work: Callable[[pyhelm3.Client, pyhelm3.Command], Awaitable[T]],
) -> T:
    """Run pyhelm3 work against one cluster, killing helm if it outlives the deadline (TimeoutError)."""
    executable = check_executable(helm)
    with kubeconfig_file(cluster) as kubeconfig:
        command = pyhelm3.Command(
            executable=executable,
            kubeconfig=kubeconfig,
            kubecontext=cluster.context,
            history_max_revisions=HISTORY_MAX,
        )
        client = pyhelm3.Client(command=command, executable=executable)

        async def bounded() -> T:
            return await asyncio.wait_for(work(client, command), deadline_seconds)

        return asyncio.run(bounded())


def helm_argv(cluster: KubernetesCluster, helm: str, kubeconfig: Path, *args: str) -> list[str]:
    argv = [check_executable(helm), *args, "--kubeconfig", str(kubeconfig)]
    if cluster.context:
        argv += ["--kube-context", cluster.context]
    return argv
