"""The shim's decision in the real data planes' access logs, and read back by the collector's parser.

Envoy (the shipped ``ext_authz-http.yaml`` with the shipped JSON file access log of
``access-log-file.yaml`` added, as an operator combines them), nginx (the shipped
snippets and the ``kubeward`` log format of ``kubeward-http.conf``) and Traefik (the
shipped static configuration's JSON access log) in front of an echo upstream, asking
an in-process shim. Per data plane: an allowed call logs ``allow``, a call an inline
signature refuses logs ``deny`` (403), a throttled call ``throttle`` (429), and a
client's own ``x-kubeward-decision`` header never decides what is logged or parsed:
``deny`` sent on an allowed call stays ``allow``, ``allow`` sent on a refused one
stays ``deny``. Envoy's ALS (``access-log-service.yaml``'s logged headers, behind the
shipped gRPC ``ext_authz-grpc.yaml``) is checked the same way through
``ingest.collectors.als``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.runtime import proxies
from deploy.runtime.echo import EchoUpstream
from deploy.runtime.process import free_port
from enforcement.settings import ShimSettings
from enforcement.shim import Shim
from ingest.collectors.accesslog import observation_from_envoy
from ingest.collectors.als import AccessLogServiceSource
from ingest.observation import HttpObservation
from ingest.summarize import Summarizer

sys.path.insert(0, str(Path(__file__).parent))
from envoy_util import Envoy, request, retarget, wait_for  # noqa: E402
from test_dataplanes import JWT_SECRET, TRAVERSAL, ShimThread, call, token, verdict  # noqa: E402

pytestmark = pytest.mark.integration

NAMES = ["envoy", "nginx", "traefik"]


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return found


def shipped_file_access_log(path: Path) -> list[dict[str, Any]]:
    """The access_log of the shipped access-log-file.yaml, writing to ``path``."""
    shipped = yaml.safe_load((proxies.DATAPLANES / "envoy" / "access-log-file.yaml").read_text())
    logs: list[dict[str, Any]] = _hcm(shipped)["access_log"]
    logs[0]["typed_config"]["path"] = str(path)
    return logs


def start_logging_envoy(workdir: Path, shim_port: int, upstream_port: int) -> proxies.Proxy:
    """The shipped ext_authz-http.yaml (as ``proxies.start_envoy`` renders it) with the shipped JSON file access log."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, admin = free_port(), free_port()
    config = proxies.render_envoy(shim_port, upstream_port, port, admin)
    _hcm(config)["access_log"] = shipped_file_access_log(workdir / "access.log")
    conf = workdir / "envoy.yaml"
    conf.write_text(yaml.safe_dump(config, sort_keys=False))
    log, out = workdir / "envoy.log", workdir / "envoy.out"
    cmd = [str(proxies.envoy_binary()), "-c", str(conf), "--log-path", str(log), "-l", "info", "--disable-hot-restart",
           "--concurrency", "1", "--file-flush-interval-msec", "50"]
    proc = proxies.spawn(cmd, out, workdir)
    proxies.wait_ready(lambda: proxies._http_ok(f"http://127.0.0.1:{admin}/ready"), proc, "envoy", [out, log], 30)
    return proxies.Proxy("envoy", port, proc, workdir, log, proxies.envoy_version(), "allow")


def _start(name: str, workdir: Path, shim_port: int, upstream_port: int) -> proxies.Proxy:
    if name == "envoy":
        return start_logging_envoy(workdir, shim_port, upstream_port)
    if name == "nginx":
        return proxies.start_nginx(workdir, shim_port, upstream_port)
    return proxies.start_traefik(workdir, shim_port, upstream_port)


def _access_log(proxy: proxies.Proxy) -> Path:
    return proxy.workdir / ("logs/access.log" if proxy.name == "nginx" else "access.log")


@dataclass
class Logged:
    proxy: proxies.Proxy
    shim: Shim
    log: Path

    def entry(self, path: str, timeout: float = 10.0) -> dict[str, Any]:
        """The access-log entry of the one request made to ``path`` (paths are made unique by the tests)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log.read_text().splitlines() if self.log.exists() else ():
                doc = json.loads(line)
                logged = doc.get("path") or doc.get("RequestPath")
                if logged == path:
                    return dict(doc)
            if time.monotonic() > deadline:
                raise AssertionError(f"no {self.proxy.name} access-log entry for {path} in {self.log}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as up:
        yield up


@pytest.fixture(scope="module", params=NAMES)
def logged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream) -> Iterator[Logged]:
    name = request.param
    settings = ShimSettings(
        bootstrap=None, port=free_port(), admin_port=free_port(), grpc_port=free_port(), adapter=name, report="none",
        identity={"jwt_hs256_secret": JWT_SECRET.decode(), "trusted_hops": 1}, policy={"default_mode": "enforce"},
    )  # fmt: skip
    with ShimThread(settings) as running, _start(name, tmp_path_factory.mktemp(f"{name}-log"), settings.port, upstream.port) as proxy:
        yield Logged(proxy, running.shim, _access_log(proxy))


def _unique(prefix: str) -> str:
    return f"{prefix}{'&' if '?' in prefix else '?'}n={uuid.uuid4().hex[:8]}"


#: per data plane, the raw keys its line carries the shim's header under: (answered, forwarded)
RAW = {"envoy": ("kubeward_decision", "kubeward_forwarded_decision"), "nginx": ("kubeward_decision", "kubeward_decision"),
       "traefik": ("downstream_X-Kubeward-Decision", "request_X-Kubeward-Decision")}
FORGED_DENY = {"x-kubeward-decision": "deny", "x-kubeward-would": "deny"}


def _parsed(logged: Logged, path: str) -> tuple[dict[str, Any], HttpObservation]:
    doc = logged.entry(path)
    return doc, observation_from_envoy(doc)


def test_an_allowed_call_logs_allow_though_the_client_said_deny(logged: Logged) -> None:
    path = _unique("/orders/1")
    assert call(logged.proxy, path, {"authorization": token("alice"), **FORGED_DENY}).status == 200
    doc, obs = _parsed(logged, path)
    assert doc[RAW[logged.proxy.name][1]] == "allow", doc
    assert (obs.method, obs.path, obs.status, obs.decision) == ("GET", path, 200, "allow")
    assert Summarizer().summarize(obs)["decision"] == "allow"


def test_a_call_the_shim_refused_logs_deny_though_the_client_said_allow(logged: Logged) -> None:
    path = _unique(TRAVERSAL)
    assert call(logged.proxy, path, {"authorization": token("mallory"), "x-kubeward-decision": "allow"}).status == 403
    doc, obs = _parsed(logged, path)
    assert doc[RAW[logged.proxy.name][0]] == "deny", doc
    assert (obs.status, obs.decision) == (403, "deny")
    assert Summarizer().summarize(obs)["decision"] == "deny"


def test_a_block_verdict_logs_deny(logged: Logged) -> None:
    logged.shim.cache.apply(verdict("eve", "block"))
    path = _unique("/orders/2")
    assert call(logged.proxy, path, {"authorization": token("eve")}).status == 403
    assert _parsed(logged, path)[1].decision == "deny"


def test_a_throttled_call_logs_throttle(logged: Logged) -> None:
    logged.shim.cache.apply(verdict("heidi", "throttle", rate_per_s=0.01, burst=1))
    first, second = _unique("/orders/4"), _unique("/orders/4")
    assert call(logged.proxy, first, {"authorization": token("heidi")}).status == 200
    assert call(logged.proxy, second, {"authorization": token("heidi")}).status == 429
    doc, obs = _parsed(logged, second)
    assert doc[RAW[logged.proxy.name][0]] == "throttle", doc
    assert (obs.status, obs.decision) == (429, "throttle")
    assert _parsed(logged, first)[1].decision == "allow"


def test_an_observe_mode_verdict_logs_what_would_have_happened(logged: Logged) -> None:
    logged.shim.cache.apply(verdict("olga", "block").model_copy(update={"mode": "observe"}))
    path = _unique("/orders/3")
    assert call(logged.proxy, path, {"authorization": token("olga")}).status == 200
    assert _parsed(logged, path)[1].decision == "observe:deny"


# ------------------------------------------------------------------ Envoy ALS behind gRPC ext_authz


@pytest.mark.parametrize("logged", ["envoy"], indirect=True)
def test_envoy_als_carries_the_decision_of_the_grpc_shim(logged: Logged, tmp_path: Path, upstream: EchoUpstream) -> None:
    """The shipped ext_authz-grpc.yaml with the shipped ALS logger of access-log-service.yaml: the collector's ALS source reads the decision.

    The gRPC check service of the module's shim (one shim per process: its metrics register once), so with Envoy's run only."""
    shim, grpc_port = logged.shim, logged.shim.settings.grpc_port
    assert grpc_port is not None
    seen: list[HttpObservation] = []
    source = AccessLogServiceSource(port=0)
    als_port = source.start(seen.extend)
    try:
        listener, admin = free_port(), free_port()
        config = retarget("ext_authz-grpc.yaml", listener, admin, {"app": upstream.port, "kubeward_authz": grpc_port})
        shipped = retarget("access-log-service.yaml", listener, admin, {"kubeward_als": als_port})
        logger = _hcm(shipped)["access_log"]
        logger[0]["typed_config"]["common_config"]["buffer_flush_interval"] = "0.05s"  # fast tests; shipped: 1 s
        _hcm(config)["access_log"] = logger
        config["static_resources"]["clusters"] += [c for c in shipped["static_resources"]["clusters"] if c["name"] == "kubeward_als"]
        envoy = Envoy(config, tmp_path, admin).start()
        try:
            shim.cache.apply(verdict("heidi-grpc", "throttle", rate_per_s=0.01, burst=1))
            shim.cache.apply(verdict("olga-grpc", "block").model_copy(update={"mode": "observe"}))
            calls = {"allow": ("/orders/1", "alice", FORGED_DENY, 200), "deny": (TRAVERSAL, "mallory", {"x-kubeward-decision": "allow"}, 403),
                     "throttle": ("/orders/4", "heidi-grpc", {}, 429), "observe:deny": ("/orders/3", "olga-grpc", {}, 200)}
            paths = {}
            for decision, (prefix, who, extra, status) in calls.items():
                if decision == "throttle":
                    assert request(listener, "GET", _unique(prefix), {"Authorization": token(who)})[0] == 200
                paths[decision] = _unique(prefix)
                got = request(listener, "GET", paths[decision], {"Authorization": token(who), **extra})[0]
                assert got == status, (decision, got)
            wait_for(lambda: {o.path for o in seen} >= set(paths.values()), 10, "the access-log entries")
            by_path = {o.path: o for o in seen}
            assert {d: (by_path[p].status, by_path[p].decision) for d, p in paths.items()} == {d: (c[3], d) for d, c in calls.items()}
            assert all("x-kubeward-decision" not in o.headers for o in seen)
            assert source.stats.malformed_entries == 0
        finally:
            envoy.stop()
    finally:
        source.stop()
