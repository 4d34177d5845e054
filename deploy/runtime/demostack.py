"""The demo's data plane: the demo API behind a real Envoy that asks the shim and feeds a collector.

``envoy_demo_config`` builds the Envoy bootstrap the demo runs: one listener
(``use_remote_address``: the peer address is the client address, appended to
``x-forwarded-for``), a virtual host per service (``orders.shop.svc.cluster.local``)
routed to a cluster named after it (``shop/orders``), the ``ext_authz`` HTTP
filter asking the Kubeward shim (identity headers, the headers inline
inspection reads and the request body forwarded, client-sent
``x-kubeward-*`` headers removed, fail-open, 250 ms timeout), the ``ext_proc``
tap in observability mode copying bodies to the collector, and the gRPC access
log service sending every exchange (including the ones ext_authz denied) to the
collector. ``DemoDataPlane`` starts the demo API, the collector and Envoy as
processes and stops them; the broker, worker and shim come from ``LocalStack``.
With ``agents`` it also starts the agents' upstreams (``deploy.runtime.demomcp``:
two MCP servers and a model API) and routes to them: ``mcp-shop.agents.svc.cluster.local``,
``mcp-community.agents.svc.cluster.local``, ``llm.ai.svc.cluster.local`` and the
external ``api.model-provider.example`` (a route named after an outside host, as an
egress gateway's would be).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.runtime.process import free_port, settings_env, stop_process, wait_http
from deploy.runtime.proxies import envoy_binary, envoy_version

__all__ = ["DemoDataPlane", "envoy_demo_config", "envoy_version"]

KUBEWARD_HEADERS = ("x-kubeward-decision", "x-kubeward-reason", "x-kubeward-would", "x-kubeward-action", "x-kubeward-destination",
                    "x-kubeward-source-workload", "x-kubeward-principal", "x-kubeward-namespace")


def _cluster(name: str, port: int, http2: bool = False, timeout: str = "1s") -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": timeout,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def _virtual_hosts(services: list[str]) -> list[dict[str, Any]]:
    hosts = []
    for service in services:
        if "/" in service:
            namespace, name = service.split("/")
            domains = [f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc.cluster.local:*"]
        else:
            domains = [service, f"{service}:*"]
        hosts.append({"name": service.replace("/", "-"), "domains": domains,
                      "routes": [{"match": {"prefix": "/"}, "route": {"cluster": service, "timeout": "5s"}}]})
    return hosts


def envoy_demo_config(listen_port: int, admin_port: int, api_port: int, shim_port: int, als_port: int, tap_port: int,
                      services: list[str], upstreams: dict[str, int] | None = None) -> dict[str, Any]:
    """The Envoy bootstrap of the demo (see the module docstring); ``upstreams`` names the port of a service that the demo
    API does not serve (the agents' MCP servers and model API)."""
    upstreams = upstreams or {}
    authz = {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3", "failure_mode_allow": True, "status_on_error": {"code": 503},
            # Request bodies go to the shim for inline inspection (JSON leaves, forms, multipart, XML).
            "with_request_body": {"max_request_bytes": 65536, "allow_partial_message": True, "pack_as_bytes": True},
            "http_service": {
                "server_uri": {"uri": f"http://127.0.0.1:{shim_port}", "cluster": "kubeward_shim", "timeout": "0.25s"},
                "authorization_request": {"allowed_headers": {"patterns": [*({"exact": h} for h in (
                    "authorization", "x-request-id", "x-forwarded-for", "cookie", "x-api-key", "x-forwarded-client-cert",
                    "user-agent", "referer", "content-type")), {"prefix": "x-"}]}},
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"prefix": "x-kubeward-"}]},
                    "allowed_client_headers": {"patterns": [{"prefix": "x-kubeward-"}, {"exact": "retry-after"}]},
                },
            },
        },
    }
    tap = {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "kubeward_tap"}},
            "observability_mode": True, "failure_mode_allow": True, "message_timeout": "0.2s",
            "processing_mode": {"request_header_mode": "SEND", "response_header_mode": "SEND", "request_body_mode": "STREAMED",
                                "response_body_mode": "STREAMED", "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
        },
    }
    access_log = {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {"log_name": "kubeward", "transport_api_version": "V3", "grpc_service": {"envoy_grpc": {"cluster_name": "kubeward_als"}},
                              "buffer_flush_interval": "0.1s", "buffer_size_bytes": 16384},
            # x-kubeward-decision as a request header is the shim's on a call it let through (ext_authz overwrites a
            # client's); x-kubeward-would is not logged: this route keeps a client's (no strip before ext_authz).
            "additional_request_headers_to_log": ["authorization", "x-forwarded-client-cert", "cookie", "x-api-key", "content-type", "traceparent",
                                                  "x-forwarded-for", "x-kubeward-decision"],
            "additional_response_headers_to_log": ["content-type", "x-kubeward-reason", "x-kubeward-decision"],
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress", "use_remote_address": True, "xff_num_trusted_hops": 0, "generate_request_id": True,
        "preserve_external_request_id": False, "access_log": [access_log],
        "route_config": {"name": "services", "request_headers_to_remove": list(KUBEWARD_HEADERS[3:]),
                         "virtual_hosts": _virtual_hosts([*services, *upstreams])},
        "http_filters": [authz, tap, {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{"name": "ingress", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": [*(_cluster(s, upstreams.get(s, api_port)) for s in [*services, *upstreams]), _cluster("kubeward_shim", shim_port, timeout="0.25s"),
                         _cluster("kubeward_als", als_port, http2=True), _cluster("kubeward_tap", tap_port, http2=True)],
        },
    }


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                cwd=Path(__file__).resolve().parents[2])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s; see {log}")


@dataclass
class DemoDataPlane:
    """Demo API + collector + Envoy, as processes (the shim and broker come from ``LocalStack``)."""

    workdir: Path
    bootstrap: str
    shim_port: int
    seed: int
    users: int
    jwt_secret: str
    pods_file: Path
    specs_dir: Path
    collector_settings: dict[str, Any] = field(default_factory=dict)
    #: with agents: ``{"services": {route name: upstream}, "source": pod address, "rug_pull_when": path}`` (``deploy.lab.agents``)
    agents: dict[str, Any] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, services: list[str]) -> DemoDataPlane:
        """Start the API, the collector and Envoy; return when Envoy answers."""
        for name in ("api", "envoy", "envoy_admin", "als", "tap", "collector_metrics"):
            self.ports.setdefault(name, free_port())
        try:
            api = _spawn([sys.executable, "-m", "deploy.runtime.demoapi", "--port", str(self.ports["api"]), "--seed", str(self.seed),
                          "--users", str(self.users), "--jwt-secret", self.jwt_secret], self.workdir / "demo-api.log")
            self.procs.append(api)
            _wait_port(self.ports["api"], 60, api, self.workdir / "demo-api.log")
            self._start_collector()
            upstreams = self._start_agent_upstreams() if self.agents else {}
            config = envoy_demo_config(self.ports["envoy"], self.ports["envoy_admin"], self.ports["api"], self.shim_port,
                                       self.ports["als"], self.ports["tap"], services, upstreams)
            path = self.workdir / "envoy.json"
            path.write_text(json.dumps(config, indent=1))
            envoy = _spawn([str(envoy_binary()), "-c", str(path), "--base-id", str(self.ports["envoy"]), "--log-level", "warn",
                            "--concurrency", "1"], self.workdir / "envoy.log")
            self.procs.append(envoy)
            wait_http(f"http://127.0.0.1:{self.ports['envoy_admin']}/ready", 60, envoy, self.workdir / "envoy.log")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_collector(self) -> None:
        settings = {
            "bootstrap": self.bootstrap, "metrics_port": self.ports["collector_metrics"],
            "als": {"enabled": True, "port": self.ports["als"]}, "extproc": {"enabled": True, "port": self.ports["tap"]},
            "join": {"expected": ["access_log", "ext_proc"], "hold_s": 1.0},
            "identity": {"jwt_hs256_secret": self.jwt_secret, "pods_file": str(self.pods_file), "internal_networks": ["127.244.0.0/16"]},
            "specs_dir": str(self.specs_dir),
            "publish": {"envelope_rows": 200, "linger_ms": 5.0},
            **self.collector_settings,
        }
        log = self.workdir / "collector.log"
        proc = _spawn([sys.executable, "-m", "deploy.cli", "collect"], log, settings_env("KUBEWARD_COLLECTOR_", settings))
        self.procs.append(proc)
        _wait_port(self.ports["tap"], 60, proc, log)
        _wait_port(self.ports["als"], 60, proc, log)

    def _start_agent_upstreams(self) -> dict[str, int]:
        """The MCP servers and the model API (``deploy.runtime.demomcp``); their Envoy services and ports."""
        assert self.agents is not None
        for name in ("shop", "community", "model"):
            self.ports.setdefault(name, free_port())
        log = self.workdir / "agent-upstreams.log"
        proc = _spawn([sys.executable, "-m", "deploy.runtime.demomcp", "--shop-port", str(self.ports["shop"]),
                       "--community-port", str(self.ports["community"]), "--model-port", str(self.ports["model"]),
                       "--api", f"http://127.0.0.1:{self.ports['envoy']}", "--source", self.agents["source"],
                       "--rug-pull-when", str(self.agents["rug_pull_when"])], log)
        self.procs.append(proc)
        for name in ("shop", "community", "model"):
            _wait_port(self.ports[name], 60, proc, log)
        return {service: self.ports[upstream] for service, upstream in self.agents["services"].items()}

    def stop(self) -> None:
        """Stop Envoy, the collector (it flushes) and the API."""
        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()
