"""Behind a real Traefik, the shim's report of a call and the access-log record of it share one request id.

Traefik makes no request id and the shipped ``kubeward-prepare`` middleware removes a client's
``X-Request-Id``, so the shim makes one and answers it as ``X-Kubeward-Request-Id``; the shipped
static configuration's JSON access log keeps that header (request and downstream side) and the
collector's parser (``ingest.collectors.accesslog``) takes it as the record's id. Shim with
``report: all`` in process (its queued reports are read here), the shipped Traefik files
(``deploy.runtime.proxies.start_traefik``), an echo upstream. Per call: the id of the shim's
report (``enforcement.shim.summary_row``) equals the parsed record's, for an allowed and a
refused (403, 429) call, and a client's own ``X-Kubeward-Request-Id`` (or ``X-Request-Id``)
becomes neither id.
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

from deploy.runtime import proxies
from deploy.runtime.echo import EchoUpstream
from deploy.runtime.process import free_port
from enforcement.adapters.traefik import REQUEST_ID_HEADER
from enforcement.settings import ShimSettings
from enforcement.shim import Shim, summary_row
from ingest.collectors.accesslog import observation_from_envoy

sys.path.insert(0, str(Path(__file__).parent))
from test_dataplanes import JWT_SECRET, TRAVERSAL, ShimThread, call, token, verdict  # noqa: E402

pytestmark = pytest.mark.integration

FORGED = "forged-by-the-client"
#: what a client sends to choose the id of its call
CLIENT_IDS = {"X-Kubeward-Request-Id": FORGED, "X-Request-Id": FORGED + "-2"}


@dataclass
class Plane:
    proxy: proxies.Proxy
    shim: Shim

    def entry(self, path: str, timeout: float = 10.0) -> dict[str, Any]:
        """The access-log entry of the one request made to ``path``."""
        log = self.proxy.workdir / "access.log"
        deadline = time.monotonic() + timeout
        while True:
            for line in log.read_text().splitlines() if log.exists() else ():
                doc = json.loads(line)
                if doc.get("RequestPath") == path:
                    return dict(doc)
            if time.monotonic() > deadline:
                raise AssertionError(f"no access-log entry for {path} in {log}")
            time.sleep(0.05)

    def report_id(self, path: str) -> str:
        """The id of the shim's report of the one check of ``path`` (as its reporter would publish it)."""
        found = [summary_row(t, req, d, b"k" * 32)["id"] for t, req, d in list(self.shim.pending) if req.path == path]
        assert len(found) == 1, (path, found)
        return str(found[0])


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    settings = ShimSettings(
        bootstrap=None, port=free_port(), admin_port=free_port(), grpc_port=free_port(), adapter="traefik", report="all",
        identity={"jwt_hs256_secret": JWT_SECRET.decode(), "trusted_hops": 1}, policy={"default_mode": "enforce"},
    )  # fmt: skip
    with EchoUpstream() as upstream, ShimThread(settings) as running:
        assert getattr(running.shim.adapter, "own_request_ids", False), "the shim answers Traefik checks with their request id"
        with proxies.start_traefik(tmp_path_factory.mktemp("traefik-id"), settings.port, upstream.port) as proxy:
            yield Plane(proxy, running.shim)


def _unique(prefix: str) -> str:
    return f"{prefix}{'&' if '?' in prefix else '?'}n={uuid.uuid4().hex[:8]}"


def test_an_allowed_call_is_logged_under_the_id_the_shim_reported(plane: Plane) -> None:
    path = _unique("/orders/1")
    answer = call(plane.proxy, path, {"authorization": token("alice"), **CLIENT_IDS})
    assert answer.status == 200
    doc = plane.entry(path)
    shims = plane.report_id(path)
    assert doc["request_X-Kubeward-Request-Id"] == shims, doc  # ForwardAuth put the shim's on the forwarded request
    assert observation_from_envoy(doc).request_id == shims
    assert FORGED not in shims and FORGED not in json.dumps(doc)
    assert REQUEST_ID_HEADER not in answer.headers  # the upstream's answer: the id is not handed to the client


def test_a_refused_call_is_logged_under_the_id_the_shim_reported(plane: Plane) -> None:
    path = _unique(TRAVERSAL)
    answer = call(plane.proxy, path, {"authorization": token("mallory"), **CLIENT_IDS})
    assert answer.status == 403
    doc = plane.entry(path)
    shims = plane.report_id(path)
    assert answer.headers[REQUEST_ID_HEADER] == shims == doc["downstream_X-Kubeward-Request-Id"], doc
    assert "request_X-Kubeward-Request-Id" not in doc, doc  # the middleware removed the client's before ForwardAuth
    obs = observation_from_envoy(doc)
    assert (obs.status, obs.decision, obs.request_id) == (403, "deny", shims)
    assert FORGED not in shims


def test_a_throttled_call_is_logged_under_the_id_the_shim_reported(plane: Plane) -> None:
    plane.shim.cache.apply(verdict("heidi", "throttle", rate_per_s=0.01, burst=1))
    first, second = _unique("/orders/4"), _unique("/orders/4")
    assert call(plane.proxy, first, {"authorization": token("heidi")}).status == 200
    assert call(plane.proxy, second, {"authorization": token("heidi"), **CLIENT_IDS}).status == 429
    for path in (first, second):
        assert observation_from_envoy(plane.entry(path)).request_id == plane.report_id(path)
    assert plane.report_id(first) != plane.report_id(second)
