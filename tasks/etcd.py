"""etcd through its own tools: `etcdctl snapshot save` and `endpoint status` over mutual TLS, `etcdutl snapshot
status` and `snapshot restore` on local files. Always argv lists; the TLS material comes from the EtcdEndpoint
block as private temp files that exist only while a command runs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from prefect import task

from blocks import EtcdEndpoint, EtcdTlsFiles
from rollbook.etcd_backup import SnapshotStatus, parse_snapshot_status
from tasks.policies import ETCD_CLIENT, ETCD_LOCAL, PREFECT_API

DIAL_TIMEOUT = "5s"
COMMAND_TIMEOUT_SECONDS = 600


class EtcdError(RuntimeError):
    """etcdctl or etcdutl failed; the message names the command, the endpoint and what to check."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def executable(path: str, tool: str) -> str:
    """The tool as given (a path or a name on PATH), or an error saying which field sets it."""
    found = shutil.which(path)
    if not found:
        raise FileNotFoundError(f"{tool} not found: {path!r} (set {tool}_executable to its path)")
    return found


def _tls_args(files: EtcdTlsFiles) -> list[str]:
    args = []
    if files.ca_cert:
        args.append(f"--cacert={files.ca_cert}")
    if files.client_cert and files.client_key:
        args += [f"--cert={files.client_cert}", f"--key={files.client_key}"]
    return args


def _run(argv: list[str], *, what: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EtcdError(f"{what}: no answer within {timeout:.0f}s", transient=True) from None
    if proc.returncode != 0:
        detail = _readable(proc.stderr.strip() or proc.stdout.strip())
        raise EtcdError(f"{what} failed: {detail}{_hint(detail)}", transient=_transient(detail))
    return proc.stdout


def _readable(output: str) -> str:
    """etcdctl logs its retries as JSON lines; keep their `error` fields and its own last words."""
    parts = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                error = json.loads(line).get("error")
            except ValueError:
                error = None
            if error and error not in parts:
                parts.append(str(error))
        elif line.strip():
            parts.append(line.strip())
    return "; ".join(parts)[-800:]


def _transient(detail: str) -> bool:
    """A dropped connection may work next time; a certificate, a refused handshake or a bad file will not."""
    lowered = detail.lower()
    permanent = ("certificate", "tls", "x509", "no such file", "permission denied", "connection refused")
    if any(s in lowered for s in permanent):
        return False
    return "unavailable" in lowered or "deadline exceeded" in lowered or "connection reset" in lowered


def _hint(detail: str) -> str:
    lowered = detail.lower()
    if "x509" in lowered or "certificate" in lowered or "tls" in lowered:
        return " (check the block's ca_cert, client_cert and client_key: etcd requires a client certificate it trusts)"
    if "deadline exceeded" in lowered or "connection refused" in lowered:
        return " (is etcd running and are the block's endpoints its client URLs?)"
    return ""


@task(**ETCD_CLIENT)
def endpoint_status(endpoint: EtcdEndpoint, etcdctl: str) -> dict[str, str]:
    """The first endpoint that answers: its cluster and member id, version and revision (etcdctl endpoint status)."""
    errors: list[EtcdError] = []
    with endpoint.tls_files() as files:
        for url in endpoint.endpoints:
            argv = [executable(etcdctl, "etcdctl"), f"--endpoints={url}", f"--dial-timeout={DIAL_TIMEOUT}"]
            argv += [*_tls_args(files), "endpoint", "status", "--write-out=json"]
            try:
                out = _run(argv, what=f"etcdctl endpoint status on {url}", timeout=60)
            except EtcdError as exc:
                errors.append(exc)
                continue
            status = json.loads(out)[0]["Status"]
            return {
                "endpoint": url,
                "cluster_id": format(int(status["header"]["cluster_id"]), "x"),
                "member_id": format(int(status["header"]["member_id"]), "x"),
                "version": str(status.get("version", "")),
                "revision": str(status["header"]["revision"]),
            }
    raise EtcdError("no etcd endpoint answered: " + " | ".join(str(e) for e in errors),
                    transient=all(e.transient for e in errors))  # fmt: skip


@task(**ETCD_CLIENT)
def save_snapshot(endpoint: EtcdEndpoint, etcdctl: str, url: str, destination: Path) -> Path:
    """`etcdctl snapshot save` from one member into `destination` (etcdctl writes a .part file and renames it
    only once the snapshot is complete, so a failure never leaves a file that looks whole)."""
    destination.unlink(missing_ok=True)
    with endpoint.tls_files() as files:
        argv = [executable(etcdctl, "etcdctl"), f"--endpoints={url}", f"--dial-timeout={DIAL_TIMEOUT}"]
        argv += [f"--command-timeout={COMMAND_TIMEOUT_SECONDS}s", *_tls_args(files), "snapshot", "save"]
        _run([*argv, str(destination)], what=f"etcdctl snapshot save from {url}")
    if not destination.is_file():
        raise EtcdError(f"etcdctl snapshot save from {url} reported success but wrote no {destination}")
    return destination


@task(**ETCD_LOCAL)
def snapshot_status(path: Path, etcdutl: str) -> SnapshotStatus:
    """`etcdutl snapshot status`, after the embedded SHA-256 check (status alone misses a changed byte)."""
    problem = embedded_hash_problem(path)
    if problem:
        raise EtcdError(f"{path.name}: {problem}")
    argv = [executable(etcdutl, "etcdutl"), "snapshot", "status", str(path), "--write-out=json"]
    return parse_snapshot_status(_run(argv, what=f"etcdutl snapshot status {path.name}", timeout=300))


def embedded_hash_problem(path: Path) -> str | None:
    """`etcdctl snapshot save` appends the SHA-256 of the database to the file (its size is then 32 bytes past a
    multiple of 512); `etcdutl snapshot restore` checks it, `snapshot status` does not. Checking it here catches
    a changed byte that status misses, before a restore is attempted. None when it matches."""
    size = path.stat().st_size
    if size % 512 != hashlib.sha256().digest_size:
        return f"the file ({size} bytes) carries no embedded SHA-256: it is not a complete `snapshot save` file"
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        remaining = size - 32
        while remaining > 0:
            chunk = handle.read(min(8 * 1024 * 1024, remaining))
            digest.update(chunk)
            remaining -= len(chunk)
        embedded = handle.read(32)
    if digest.digest() != embedded:
        return "the SHA-256 embedded in the snapshot does not match its contents: the file is corrupt"
    return None


@task(**ETCD_LOCAL)
def tool_versions(etcdctl: str, etcdutl: str) -> dict[str, str]:
    """The versions recorded in every manifest, so a restore knows what made the file."""
    versions = {}
    for tool, path in (("etcdctl", etcdctl), ("etcdutl", etcdutl)):
        out = _run([executable(path, tool), "version"], what=f"{tool} version", timeout=30)
        first = out.splitlines()[0] if out else ""
        versions[tool] = first.rsplit(":", 1)[-1].strip()
    return versions


@task(**ETCD_LOCAL)
def restore_snapshot(
    snapshot: Path,
    etcdutl: str,
    *,
    data_dir: Path,
    member_name: str,
    initial_cluster: str,
    initial_advertise_peer_urls: str,
    bump_revision: int,
) -> Path:
    """`etcdutl snapshot restore --bump-revision N --mark-compacted` into a new data directory (it must not
    exist: etcdutl refuses to write over one, and so does this task)."""
    if data_dir.exists():
        raise EtcdError(f"restore target {data_dir} already exists; remove it or choose another directory")
    argv = [
        executable(etcdutl, "etcdutl"),
        "snapshot",
        "restore",
        str(snapshot),
        f"--data-dir={data_dir}",
        f"--name={member_name}",
        f"--initial-cluster={initial_cluster}",
        f"--initial-advertise-peer-urls={initial_advertise_peer_urls}",
        f"--bump-revision={bump_revision}",
        "--mark-compacted",
    ]
    _run(argv, what=f"etcdutl snapshot restore into {data_dir}", timeout=COMMAND_TIMEOUT_SECONDS)
    return data_dir


@task(**PREFECT_API)
def load_endpoint(name: str) -> EtcdEndpoint:
    """A saved 'Rollbook Etcd Endpoint' block."""
    block = EtcdEndpoint.load(name)
    if not isinstance(block, EtcdEndpoint):
        raise TypeError(f"block {name!r} is not a Rollbook Etcd Endpoint")
    return block
