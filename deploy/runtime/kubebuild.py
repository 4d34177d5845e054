"""Building etcd and kube-apiserver with ``go`` from the module proxy, once, into the user's cache.

``k8s.io/kubernetes`` and ``go.etcd.io/etcd/server/v3`` cannot be ``go install``ed: their go.mod
replaces sibling modules with local folders. Each binary is therefore built from a tiny wrapper
module that requires the real one and maps every such local replace to the published version
(``notes/kubernetes-local.md``).

Contract: :func:`ensure_binaries` returns ``<cache>/bin`` holding ``etcd`` and ``kube-apiserver``,
building what is missing. ``<cache>`` is :func:`cache_dir`, ``$XDG_CACHE_HOME/kubeward/kube/<versions>``
(``~/.cache`` by default), outside the repository so every clone reuses it. A build takes minutes
(about 23 min measured with the 2 cores shared and a cold Go build cache, 1 min of it etcd; 48 s with a warm one), prints progress to stderr, holds
a file lock so two callers never build at once, and writes each binary under a temporary name
renamed at the end, so an interrupted build never looks complete. Without ``go`` it raises
:class:`KubeError` saying what to install.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ETCD_VERSION", "KUBE_VERSION", "KubeError", "cache_dir", "ensure_binaries"]

KUBE_VERSION = "1.37.2"
ETCD_VERSION = "3.7.3"
INSTALL_HINT = "install Go 1.26+ (https://go.dev/dl/ or apt-get install golang) and make sure `go` is on PATH"


class KubeError(RuntimeError):
    """The local Kubernetes binaries cannot be built, or etcd / kube-apiserver cannot be run."""


# Each binary is a tiny wrapper module that requires the real one and maps its local
# ``replace => ./staging/...`` (or ``../``) directives to published versions.
_MAIN_KUBE = """package main

import (
\t"os"

\t"k8s.io/component-base/cli"
\t"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
"""

_MAIN_ETCD = """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""

# kube-apiserver reports the version stamped into k8s.io/component-base/version at link time (the release
# build's hack/lib/version.sh does the same); unstamped it says v0.0.0-master, which a chart's
# ``kubeVersion: >=1.29.0-0`` refuses.
_KUBE_MAJOR, _KUBE_MINOR = KUBE_VERSION.split(".")[:2]
_KUBE_LDFLAGS = " ".join(f"-X k8s.io/component-base/version.{var}={value}" for var, value in (
    ("gitVersion", f"v{KUBE_VERSION}"), ("gitMajor", _KUBE_MAJOR), ("gitMinor", _KUBE_MINOR), ("gitTreeState", "clean")))

# name -> (module, version, version given to each locally replaced module, main.go, -ldflags)
_TARGETS: dict[str, tuple[str, str, str, str, str]] = {
    "etcd": ("go.etcd.io/etcd/server/v3", f"v{ETCD_VERSION}", f"v{ETCD_VERSION}", _MAIN_ETCD, ""),
    "kube-apiserver": ("k8s.io/kubernetes", f"v{KUBE_VERSION}", "v0" + KUBE_VERSION[1:], _MAIN_KUBE, _KUBE_LDFLAGS),
}
# Bumped when a build changes (v2: kube-apiserver stamped with its version), so a cached older build is not reused.
_BUILD = 2


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kubeward/kube/v<kube>-etcd<etcd>-b<build>`` (``~/.cache`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubeward" / "kube" / f"v{KUBE_VERSION}-etcd{ETCD_VERSION}-b{_BUILD}"


def _say(message: str) -> None:
    print(f"[kubeward kube] {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise KubeError(f"`go` not found on PATH; building etcd and kube-apiserver needs it: {INSTALL_HINT}")
    return go


def _run_logged(cmd: list[str], cwd: Path, log: Path, what: str, heartbeat: float = 30.0) -> None:
    """Run ``cmd`` with output appended to ``log``, printing elapsed time every ``heartbeat`` s."""
    started = time.monotonic()
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                try:
                    proc.wait(timeout=heartbeat)
                    break
                except subprocess.TimeoutExpired:
                    _say(f"  {what}: still running ({time.monotonic() - started:.0f} s)")
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise KubeError(f"{what} failed (exit {proc.returncode}, full log {log}):\n{tail}")
    _say(f"  {what}: done in {time.monotonic() - started:.0f} s")


def _local_replaces(go_mod: str) -> list[str]:
    """Modules that a go.mod replaces with a local folder (``=> ./x`` or ``=> ../x``)."""
    return re.findall(r"^\s*(?:replace\s+)?(\S+)(?:\s+v\S+)?\s+=>\s+\.\.?/", go_mod, flags=re.MULTILINE)


def _wrapper_go_mod(name: str, module: str, version: str, replaced: list[str], replaced_version: str) -> str:
    lines = [f"module local/kubeward-{name}", "",
             "go 1.26.0", "", f"require {module} {version}", "", "replace ("]
    lines += [f"\t{mod} => {mod} {replaced_version}" for mod in replaced]
    return "\n".join([*lines, ")", ""])


def _build_one(name: str, bin_dir: Path, work: Path, go: str) -> None:
    module, version, replaced_version, main_go, ldflags = _TARGETS[name]
    src = work / name
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    log = work / f"{name}.log"
    log.write_text("")
    _say(f"building {name} from {module}@{version} (log: {log})")
    _run_logged([go, "mod", "download", module + "@" + version], src, log, f"{name}: go mod download")
    gomodcache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    upstream = Path(gomodcache) / f"{module}@{version}" / "go.mod"
    replaced = _local_replaces(upstream.read_text())
    (src / "go.mod").write_text(_wrapper_go_mod(name, module, version, replaced, replaced_version))
    (src / "main.go").write_text(main_go)
    _run_logged([go, "mod", "tidy"], src, log, f"{name}: go mod tidy")
    partial = bin_dir / f"{name}.partial"
    _run_logged([go, "build", "-ldflags", ldflags, "-o", str(partial), "."], src, log, f"{name}: go build")
    partial.rename(bin_dir / name)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_binaries(root: Path | None = None) -> Path:
    """Build ``etcd`` and ``kube-apiserver`` into ``<root>/bin`` unless both exist; return that dir.

    ``root`` defaults to :func:`cache_dir`. Building both takes about 5 minutes on 2 cores.
    """
    root = cache_dir() if root is None else Path(root)
    bin_dir = root / "bin"
    missing = [name for name in _TARGETS if not (bin_dir / name).is_file()]
    if not missing:
        return bin_dir
    go = _go()
    with _locked(root / ".build.lock"):
        missing = [name for name in _TARGETS if not (bin_dir / name).is_file()]
        bin_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        for name in missing:
            _build_one(name, bin_dir, root / "build", go)
        if missing:
            _say(f"built {', '.join(missing)} into {bin_dir} in {time.monotonic() - started:.0f} s")
    return bin_dir
