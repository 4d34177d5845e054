"""Starting and stopping the real parts locally: worker and shim processes.

Used by the demo, the benchmarks and the integration tests, so all three run
the same commands a user runs (``kubeward worker``, ``kubeward shim``).
Settings travel as ``KUBEWARD_WORKER_*`` / ``KUBEWARD_SHIM_*`` environment
variables; each process logs to its own file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["free_port", "settings_env", "spawn_worker", "start_shim", "start_worker", "stop_process", "wait_http", "wait_worker"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(prefix: str, settings: dict[str, Any]) -> dict[str, str]:
    """This process's environment with ``settings`` as ``<prefix><KEY>`` variables (nested values as JSON), ours removed first."""
    env = dict(os.environ)
    env = {k: v for k, v in env.items() if not k.startswith(prefix)}
    for key, value in settings.items():
        env[f"{prefix}{key.upper()}"] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Poll a URL until it answers 200; fail early if the process died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


def _wait_log(log: Path, needle: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if log.exists() and needle in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{needle!r} not in {log} within {timeout} s:\n{log.read_text()[-3000:] if log.exists() else ''}")


def _spawn(args: list[str], env: dict[str, str], log: Path, cpu: int | None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "deploy.cli", *args]
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=Path(__file__).resolve().parents[2])


def _dev(settings: dict[str, Any]) -> list[str]:
    """``--dev`` when the settings name no verdict key: the local runs (tests, demo, benchmarks) use the development key."""
    return [] if settings.get("verdict_key") else ["--dev"]


def spawn_worker(log: Path, settings: dict[str, Any], cpu: int | None = None) -> subprocess.Popen[bytes]:
    """Start ``kubeward worker`` without waiting (see ``wait_worker``): the caller holds the process even if it never gets ready."""
    return _spawn(["worker", "--loglevel", "info", *_dev(settings)], settings_env("KUBEWARD_WORKER_", settings), log, cpu)


def wait_worker(proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    """Wait until a worker started by ``spawn_worker`` reports it is ready (Faust's ``Worker]: Ready``)."""
    _wait_log(log, "Worker]: Ready", timeout, proc)


def start_worker(log: Path, settings: dict[str, Any], timeout: float = 90, cpu: int | None = None) -> subprocess.Popen[bytes]:
    """Start ``kubeward worker`` and wait until Faust reports it is ready."""
    proc = spawn_worker(log, settings, cpu)
    wait_worker(proc, log, timeout)
    return proc


def start_shim(log: Path, settings: dict[str, Any], timeout: float = 60, cpu: int | None = None, until: str = "/readyz") -> subprocess.Popen[bytes]:
    """Start ``kubeward shim`` and wait until ``until`` answers 200 on its admin port: ``/readyz`` (warmed up, verdict
    cache synced) or ``/healthz`` (answering: what a shim started without a reachable broker reaches)."""
    proc = _spawn(["shim", *_dev(settings)], settings_env("KUBEWARD_SHIM_", settings), log, cpu)
    wait_http(f"http://127.0.0.1:{settings.get('admin_port', 9192)}{until}", timeout, proc, log)
    return proc


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20, sig: int = signal.SIGTERM) -> None:
    """Signal a process group and wait; SIGKILL if it does not go."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
