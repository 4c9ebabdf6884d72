"""Build the sandbox's binaries from the Go module proxy and cache them outside the repository.

Nothing here downloads a prebuilt binary: every tool is compiled from its Go module at a pinned version.
The cache key is the pin set, so a second run with the same pins does no work and a pin change
builds into a fresh directory instead of mixing versions.

The vulnerability scanner (grype, and the sandbox's DB writer compiled against it from sandbox/grypedb/) is a
second set with its own key (`SCANNER_PINS` plus the writer's sources): adding or bumping it rebuilds grype only,
never Kubernetes. `python -m sandbox.toolchain` builds only the base set (what the cluster and `make demo` run);
a set is built when something asks for it (`python -m sandbox.toolchain scanner`, `all`, or `Sandbox.grype_env()`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GO_VERSION_FLOOR = (1, 25)
GO_TIMEOUT = 3600  # a cold Kubernetes build takes minutes; an hour means something is stuck
PROGRESS_SECONDS = 30.0  # a cold compile is silent for minutes; say it is still going this often

PINS: dict[str, str] = {
    "kubernetes": "1.36.3",
    "etcd": "3.6.16",
    "kwok": "0.8.0",
    "helm": "4.3.1",
    "cosign": "3.1.2",
    "crane": "0.22.1",
}

# Its own cache key: see the module docstring. syft comes at the version grype's go.mod requires.
SCANNER_PINS: dict[str, str] = {"grype": "0.121.2"}
GRYPEDB_SOURCE = Path(__file__).resolve().parent / "grypedb"

# Velero and its AWS object-store plugin: a third set with its own key, so building it never touches Kubernetes.
# Plugin v1.14.x is the line the plugin's compatibility table pairs with velero v1.18.x (v1.13.x is not served).
# cli-runtime: velero asks for v0.33.12, whose zip the proxy refuses; v0.33.13 is the next patch and is served.
VELERO_PINS: dict[str, str] = {"velero": "1.18.3", "velero-plugin-for-aws": "1.14.3", "k8s.io/cli-runtime": "0.33.13"}


class ToolchainError(RuntimeError):
    """A build step failed; the message names the step and carries the tail of its output."""


def cache_root() -> Path:
    base = os.environ.get("ROLLBOOK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rollbook"
    )
    return Path(base)


def pin_key(pins: dict[str, str] = PINS) -> str:
    return hashlib.sha256(json.dumps(pins, sort_keys=True).encode()).hexdigest()[:12]


def bin_dir(pins: dict[str, str] = PINS) -> Path:
    return cache_root() / "toolchain" / pin_key(pins) / "bin"


def scanner_key(pins: dict[str, str] = SCANNER_PINS, source: Path = GRYPEDB_SOURCE) -> str:
    """The scanner set's key: its pins and the DB writer's sources, so editing main.go rebuilds the writer."""
    digest = hashlib.sha256()
    for path in sorted(source.iterdir()):
        if path.suffix == ".go" or path.name == "go.mod":
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return "scanner-" + pin_key({**pins, "grypedb-sources": digest.hexdigest()})


def scanner_bin_dir(pins: dict[str, str] = SCANNER_PINS) -> Path:
    return cache_root() / "toolchain" / scanner_key(pins) / "bin"


def velero_key(pins: dict[str, str] | None = None) -> str:
    """The velero set's key: its pins and the wrapper main's source, so editing the wrapper rebuilds it."""
    pins = VELERO_PINS if pins is None else pins
    return "velero-" + pin_key({**pins, "wrapper": hashlib.sha256(VELERO_WRAPPER_MAIN.encode()).hexdigest()})


def velero_bin_dir(pins: dict[str, str] | None = None) -> Path:
    return cache_root() / "toolchain" / velero_key(pins) / "bin"


@dataclass(frozen=True)
class Component:
    """One pinned tool: the binaries it yields and how to build them into a bin directory."""

    name: str
    binaries: tuple[str, ...]
    build: Callable[[str, Path, Path], None]  # (version, work dir, bin dir)
    pin: str = ""  # which pin's version it is built at, when not its own name


def _log(msg: str) -> None:
    print(f"[toolchain] {msg}", file=sys.stderr, flush=True)


class _Heartbeat:
    """While one component builds, prints its name, the go step it is in and the elapsed time every `every`
    seconds, so a first `make demo` shows it is working rather than hanging (Kubernetes alone takes minutes)."""

    current: _Heartbeat | None = None  # the build in progress, whose step `_go` updates

    def __init__(self, label: str, *, every: float = PROGRESS_SECONDS) -> None:
        self.label = label
        self.step = "starting"
        self.every = every
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"toolchain-progress-{label}", daemon=True)

    def line(self) -> str:
        return f"{self.label}: still building ({self.step}), {_elapsed(time.monotonic() - self.start)} so far"

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            _log(self.line())

    def __enter__(self) -> _Heartbeat:
        _Heartbeat.current = self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        _Heartbeat.current = None


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _go(args: list[str], cwd: Path, step: str, env: dict[str, str] | None = None) -> str:
    if _Heartbeat.current is not None:
        _Heartbeat.current.step = step
    full_env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", **(env or {})}
    try:
        proc = subprocess.run(["go", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=GO_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"step '{step}' timed out after {GO_TIMEOUT}s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ToolchainError(f"step '{step}' failed (go {' '.join(args[:2])} ...):\n{tail}")
    return proc.stdout


def _init_module(work: Path, name: str) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(f"module local/{name}\n\ngo 1.26.0\n")


def _kube_ldflags(version: str) -> str:
    """Stamp the version the way upstream's build does; unstamped binaries report v0.0.0 and break skew checks."""
    major, minor, _ = version.split(".")
    stamp = {
        "gitVersion": f"v{version}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "gitCommit": f"v{version}",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{key}={value}" for key, value in stamp.items()]
    return " ".join(flags)


def _staging_modules(version: str, work: Path) -> list[str]:
    """k8s.io/kubernetes points its staging modules at ./staging; each is published as v0.<minor>.<patch>."""
    out = _go(["mod", "download", "-json", f"k8s.io/kubernetes@v{version}"], work, "download kubernetes go.mod")
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    return sorted(
        line.split()[0] for line in gomod.splitlines() if "=> ./staging/" in line and line.strip().startswith("k8s.io/")
    )


def build_kubernetes(version: str, work: Path, out: Path) -> None:
    _init_module(work, "kube-bins")
    staging_version = "v0." + version.split(".", 1)[1]
    edits = [f"-replace={mod}={mod}@{staging_version}" for mod in _staging_modules(version, work)]
    _go(["mod", "edit", f"-require=k8s.io/kubernetes@v{version}", *edits], work, "write kubernetes go.mod")
    cmds = [
        f"k8s.io/kubernetes/cmd/{c}" for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    ]
    _go(["get", *(f"{c}@v{version}" for c in cmds)], work, "resolve kubernetes modules")
    _go(
        ["build", "-trimpath", "-ldflags", _kube_ldflags(version), "-o", str(out) + "/", *cmds],
        work,
        "compile kubernetes",
    )


def build_etcd(version: str, work: Path, out: Path) -> None:
    _init_module(work, "etcd-bins")
    mods = {
        "etcd": "go.etcd.io/etcd/server/v3",
        "etcdctl": "go.etcd.io/etcd/etcdctl/v3",
        "etcdutl": "go.etcd.io/etcd/etcdutl/v3",
    }
    _go(["get", *(f"{m}@v{version}" for m in mods.values())], work, "resolve etcd modules")
    ldflags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v{version}"
    for binary, mod in mods.items():
        _go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(out / binary), mod], work, f"compile {binary}")


def _go_install(pkg: str, version: str, out: Path, ldflags: str = "-s -w") -> None:
    _go(
        ["install", "-trimpath", "-ldflags", ldflags, f"{pkg}@v{version}"],
        out,
        f"install {pkg}",
        env={"GOBIN": str(out), "GOFLAGS": ""},
    )


KWOK_STAGE_FILES = (
    "kustomize/crd/bases/kwok.x-k8s.io_stages.yaml",
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def build_kwok(version: str, work: Path, out: Path) -> None:
    """Besides the binary, keep kwok's own Stage CRD and default lifecycle stages from the same module version."""
    _go_install("sigs.k8s.io/kwok/cmd/kwok", version, out)
    work.mkdir(parents=True, exist_ok=True)
    info = _go(
        ["mod", "download", "-json", f"sigs.k8s.io/kwok@v{version}"], work, "locate kwok module", env={"GOFLAGS": ""}
    )
    module_dir = Path(json.loads(info)["Dir"])
    share = out / "kwok-stages"
    share.mkdir()
    for rel in KWOK_STAGE_FILES:
        shutil.copyfile(module_dir / rel, share / Path(rel).name)


def build_helm(version: str, work: Path, out: Path) -> None:
    _go_install(
        "helm.sh/helm/v4/cmd/helm", version, out, f"-s -w -X helm.sh/helm/v4/internal/version.version=v{version}"
    )


def build_cosign(version: str, work: Path, out: Path) -> None:
    _go_install("github.com/sigstore/cosign/v3/cmd/cosign", version, out)


def build_crane(version: str, work: Path, out: Path) -> None:
    _go_install("github.com/google/go-containerregistry/cmd/crane", version, out)


def build_grype(version: str, work: Path, out: Path) -> None:
    """Stamp the version as upstream's release build does: grype prints it and reports it in every JSON report."""
    _go_install("github.com/anchore/grype/cmd/grype", version, out, f"-s -w -X main.version={version}")


def build_grypedb(version: str, work: Path, out: Path) -> None:
    """Build sandbox/grypedb against the same grype version as the binary, so it writes the schema grype reads.
    A copy is built (go.sum and any go.mod edits stay out of the repository)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for path in GRYPEDB_SOURCE.iterdir():
        if path.suffix == ".go" or path.name == "go.mod":
            shutil.copyfile(path, work / path.name)
    _go(["mod", "edit", f"-require=github.com/anchore/grype@v{version}"], work, "pin grype for grypedb")
    _go(["mod", "tidy"], work, "resolve grypedb modules")
    _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "grypedb"), "."], work, "compile grypedb")


# velero's own cmd/velero/main.go, plus one line: controller-runtime's manager would otherwise serve metrics on
# :8080 on every interface (velero passes it no option and has no flag), clashing between sandboxes and exposing
# an endpoint nobody asked for. Velero's own metrics stay on --metrics-address. The registry re-runs os.Args[0]
# as `velero run-plugins` for the built-in plugins, which this binary still is.
VELERO_WRAPPER_MAIN = """package main

import (
\t"os"
\t"path/filepath"

\t"k8s.io/klog/v2"
\tmetricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

\t"github.com/vmware-tanzu/velero/pkg/cmd"
\t"github.com/vmware-tanzu/velero/pkg/cmd/velero"
)

func main() {
\tdefer klog.Flush()
\tmetricsserver.DefaultBindAddress = "0" // "0" turns the manager's metrics listener off
\tcmd.CheckError(velero.NewCommand(filepath.Base(os.Args[0])).Execute())
}
"""


def _module_replaces(module: str, version: str, work: Path) -> list[str]:
    """The `replace` lines of a module's go.mod (velero swaps kopia for its fork). A dependency's replaces do not
    apply to the main module, so the wrapper must repeat them or it builds against upstream kopia."""
    out = _go(["mod", "download", "-json", f"{module}@v{version}"], work, f"download {module} go.mod")
    edits = []
    for line in Path(json.loads(out)["GoMod"]).read_text().splitlines():
        words = line.split()
        if words[:1] == ["replace"] and "=>" in words:
            arrow = words.index("=>")
            edits.append(f"-replace={'@'.join(words[1:arrow])}={'@'.join(words[arrow + 1 :])}")
    return edits


def build_velero(version: str, work: Path, out: Path, pins: dict[str, str] | None = None) -> None:
    """One wrapper module builds both binaries: velero (the wrapper main above) and the AWS plugin, which needs
    velero v1.18.1 and so resolves to the pinned v1.18.3 by minimal version selection."""
    pins = VELERO_PINS if pins is None else pins
    shutil.rmtree(work, ignore_errors=True)
    _init_module(work, "velero-bins")
    (work / "main.go").write_text(VELERO_WRAPPER_MAIN)
    velero_mod, plugin_mod = "github.com/vmware-tanzu/velero", "github.com/vmware-tanzu/velero-plugin-for-aws"
    requires = [
        f"-require={velero_mod}@v{version}",
        f"-require=k8s.io/cli-runtime@v{pins['k8s.io/cli-runtime']}",
    ]
    _go(["mod", "edit", *requires, *_module_replaces(velero_mod, version, work)], work, "write velero go.mod")
    _go(["mod", "tidy"], work, "resolve velero modules")
    stamp = f"-X {velero_mod}/pkg/buildinfo.Version=v{version} -X {velero_mod}/pkg/buildinfo.GitTreeState=clean"
    _go(["build", "-trimpath", "-ldflags", f"-s -w {stamp}", "-o", str(out / "velero"), "."], work, "compile velero")
    # Only now the plugin: velero is built on velero's own dependency versions, not raised by the plugin's. And
    # explicitly at the pin: tidy dropped it (main.go cannot import a main package), and a bare build would re-add
    # it at whatever the proxy calls newest.
    plugin = f"{plugin_mod}/velero-plugin-for-aws"
    _go(["get", f"{plugin}@v{pins['velero-plugin-for-aws']}"], work, "resolve velero-plugin-for-aws")
    plugins = out / "velero-plugins"  # what --plugin-dir points at: velero runs every executable file in it
    plugins.mkdir()
    flags = ["-trimpath", "-ldflags", "-s -w", "-o", str(plugins / "velero-plugin-for-aws")]
    _go(["build", *flags, plugin], work, "compile velero-plugin-for-aws")


COMPONENTS: tuple[Component, ...] = (
    Component("etcd", ("etcd", "etcdctl", "etcdutl"), build_etcd),
    Component("kwok", ("kwok", "kwok-stages"), build_kwok),
    Component(
        "kubernetes", ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"), build_kubernetes
    ),
    Component("helm", ("helm",), build_helm),
    Component("cosign", ("cosign",), build_cosign),
    Component("crane", ("crane",), build_crane),
)

SCANNER_COMPONENTS: tuple[Component, ...] = (
    Component("grype", ("grype",), build_grype),
    Component("grypedb", ("grypedb",), build_grypedb, pin="grype"),
)

VELERO_COMPONENTS: tuple[Component, ...] = (Component("velero", ("velero", "velero-plugins"), build_velero),)


def _check_go() -> None:
    if shutil.which("go") is None:
        raise ToolchainError(
            "step 'find go' failed: no 'go' on PATH; install Go >= 1.26 (the sandbox builds from the Go module proxy)"
        )
    raw = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()
    parts = raw.removeprefix("go").split(".")
    if tuple(int(p) for p in parts[:2]) < GO_VERSION_FLOOR:
        raise ToolchainError(f"step 'find go' failed: {raw} is older than go{'.'.join(map(str, GO_VERSION_FLOOR))}")


def ensure(pins: dict[str, str] = PINS, only: list[str] | None = None) -> Path:
    """Build whatever is missing for these pins and return the bin directory. Safe to call repeatedly."""
    return _ensure(COMPONENTS, pins, bin_dir(pins), only)


def ensure_scanner(pins: dict[str, str] = SCANNER_PINS, only: list[str] | None = None) -> Path:
    """Like `ensure`, for grype and the sandbox's grype DB writer, in their own cache directory."""
    return _ensure(SCANNER_COMPONENTS, pins, scanner_bin_dir(pins), only)


def scanner_built(pins: dict[str, str] = SCANNER_PINS) -> bool:
    """Whether the scanner set is already there, for callers that use it only when someone built it."""
    return all((scanner_bin_dir(pins) / b).exists() for c in SCANNER_COMPONENTS for b in c.binaries)


def ensure_velero(pins: dict[str, str] | None = None, only: list[str] | None = None) -> Path:
    """Like `ensure`, for velero and its AWS plugin, in their own cache directory."""
    pins = VELERO_PINS if pins is None else pins
    # the plugin and cli-runtime versions come from the same pins as the key (not the module's defaults)
    components = tuple(
        dataclasses.replace(c, build=functools.partial(build_velero, pins=pins)) for c in VELERO_COMPONENTS
    )
    return _ensure(components, pins, velero_bin_dir(pins), only)


def velero_built(pins: dict[str, str] | None = None) -> bool:
    """Whether the velero set is there: the sandbox starts Velero only then, so `sandbox up` never waits on it."""
    return all((velero_bin_dir(pins) / b).exists() for c in VELERO_COMPONENTS for b in c.binaries)


def _ensure(components: tuple[Component, ...], pins: dict[str, str], out: Path, only: list[str] | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    wanted = [c for c in components if only is None or c.name in only]
    missing = [c for c in wanted if not all((out / b).exists() for b in c.binaries)]
    if not missing:
        return out
    _check_go()
    with open(out.parent / ".lock", "w") as lock:  # a concurrent `ensure` waits instead of building twice
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build(missing, pins, out)
    return out


def _build(missing: list[Component], pins: dict[str, str], out: Path) -> None:
    times_file = out.parent / "build-times.json"
    times: dict[str, float] = json.loads(times_file.read_text()) if times_file.exists() else {}
    todo = [c for c in missing if not all((out / b).exists() for b in c.binaries)]  # some built while we waited
    if todo:
        _log(f"building {', '.join(c.name for c in todo)} into {out} (once; later runs reuse it)")
    for number, comp in enumerate(todo, start=1):
        version = pins[comp.pin or comp.name]
        _log(f"[{number}/{len(todo)}] building {comp.name} v{version} ...")
        start = time.monotonic()
        staging = out.parent / f"staging-{comp.name}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        with _Heartbeat(f"[{number}/{len(todo)}] {comp.name}"):
            comp.build(version, cache_root() / "build" / f"{comp.name}-{version}", staging)
        for binary in comp.binaries:  # move into place only when the whole component built
            if not (staging / binary).exists():
                raise ToolchainError(f"step 'build {comp.name}' produced no '{binary}'")
            if (out / binary).is_dir():
                shutil.rmtree(out / binary)
            os.replace(staging / binary, out / binary)
        shutil.rmtree(staging)
        times[comp.name] = round(time.monotonic() - start, 1)
        times_file.write_text(json.dumps(times, indent=2))
        _log(f"built {comp.name} in {_elapsed(times[comp.name])}")


# The sets `main` builds by name; "base" is what the sandbox cluster and the demo run. A new set (its own pins and
# cache key, like the scanner's) is one entry here, and is built only when a caller or test names it.
SETS: dict[str, tuple[tuple[Component, ...], Callable[..., Path]]] = {
    "base": (COMPONENTS, ensure),
    "scanner": (SCANNER_COMPONENTS, ensure_scanner),
    "velero": (VELERO_COMPONENTS, ensure_velero),
}
DEFAULT_SETS = ("base",)


def plan(args: list[str]) -> list[tuple[str, list[str] | None]]:
    """What `python -m sandbox.toolchain ARGS` builds: (set, only these components or None for all of it).

    No argument: the default sets; `all`: every set; a set's name: all of it; a component's name: just that one."""
    names = args or list(DEFAULT_SETS)
    if "all" in names:
        names = [*SETS, *(n for n in names if n != "all")]
    component_set = {c.name: set_name for set_name, (components, _) in SETS.items() for c in components}
    unknown = sorted(n for n in names if n not in SETS and n not in component_set)
    if unknown:
        raise ToolchainError(
            f"unknown set or component(s): {', '.join(unknown)}; sets: {', '.join(SETS)}, all; "
            f"components: {', '.join(component_set)}"
        )
    result: list[tuple[str, list[str] | None]] = []
    for set_name in SETS:
        if set_name in names:
            result.append((set_name, None))
        elif chosen := [n for n in names if component_set.get(n) == set_name]:
            result.append((set_name, chosen))
    return result


def main(argv: list[str] | None = None) -> None:
    """Build the named sets or components (default: the base set only) and print their bin directories."""
    try:
        for set_name, only in plan(sys.argv[1:] if argv is None else argv):
            print(SETS[set_name][1](only=only), flush=True)
    except ToolchainError as exc:
        sys.exit(f"toolchain: {exc}")


if __name__ == "__main__":
    main()
