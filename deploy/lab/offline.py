"""The demo's data plane in one process, for offline evaluation: same requests, same API, same derivation.

``OfflineDataPlane.rows(calls)`` turns simulated calls into the summary rows a
collector would publish, without sockets: each call becomes the HTTP request the
traffic driver sends (``deploy.lab.driver``), the demo API answers it
(``deploy.runtime.demoapi``), and the exchange, with the ``x-forwarded-for``
Envoy would append and the shim's inline signatures on the raw path, goes
through ``ingest.Summarizer`` exactly as the collector's would. Nothing the
detectors read comes from the simulator's own fields (status, object ids,
personal data are the API's answer and Kubeward's derivation); only
``ground_truth`` rides along, for scoring.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from deploy.lab.driver import GATEWAY, TrafficDriver, end_user_ip, loopback_for, pod_map, via_gateway
from deploy.runtime.demoapi import DemoApi, openapi_specs, seed_db
from enforcement.decision import RequestView
from enforcement.inspection import build_inspector
from enforcement.settings import InspectionSettings
from enforcement.signatures import DEFAULT_RULES
from ingest import HttpObservation, IdentityConfig, PathTemplater, Summarizer, SummarizerConfig
from ingest.openapi import declared_endpoints, load_spec_dir
from ingest.simulator.world import World

__all__ = ["OfflineDataPlane"]

JWT_SECRET = b"kubeward-offline-idp-secret"


class OfflineDataPlane:
    """Driver requests -> demo API -> observations -> summary rows, in process (see the module docstring)."""

    def __init__(self, seed: int, users: int, object_key: bytes = b"kubeward-dev-object-key"):
        world_ips = World(seed, users).ips
        pods = pod_map(world_ips)
        lookup = {ip: (w, w.split("/", 1)[0], "") for ip, w in pods.items()}
        with tempfile.TemporaryDirectory() as tmp:
            openapi_specs(Path(tmp))
            specs = load_spec_dir(tmp)
        self.declared = declared_endpoints(specs)
        identity = IdentityConfig(jwt_hs256_secret=JWT_SECRET, trusted_proxies=tuple(f"{loopback_for(ip)}/32" for ip in world_ips[GATEWAY]),
                                  internal_networks=("127.244.0.0/16",))
        self.summarizer = Summarizer(SummarizerConfig(identity=identity, object_id_key=object_key), PathTemplater(specs=specs), lookup.get)
        self.api = DemoApi(seed_db(seed, users), JWT_SECRET)
        self.requests = TrafficDriver("127.0.0.1", 0, JWT_SECRET)
        self.inspector = build_inspector(InspectionSettings(), DEFAULT_RULES)

    def observation(self, call: Any, request_id: str) -> HttpObservation:
        """The exchange Envoy would report for one call (the API's real answer included)."""
        path, headers, body = self.requests.request_parts(call)
        peer = loopback_for(call.source_ip)
        headers["x-forwarded-for"] = f"{end_user_ip(call.principal)}, {peer}" if via_gateway(call) else peer
        status, answer = self.api.handle(headers["host"], call.method, path, headers, body or b"")
        return HttpObservation(time=call.time, method=call.method, path=path, reporter="access_log", request_id=request_id,
                               authority=headers["host"], headers=headers, peer_ip=peer, status=status,
                               request_bytes=len(body or b""), response_bytes=len(answer),
                               response_headers={"content-type": "application/json"}, response_body=answer,
                               inline_findings=getattr(self.inspector.inspect(RequestView(call.method, path, headers=headers, body=body or None)), "categories", ()))

    def rows(self, calls: Iterable[Any], prefix: str = "o") -> Iterator[dict[str, Any]]:
        """Summary rows of the calls, each with its ground truth attached for the scorer."""
        for i, call in enumerate(calls):
            row = self.summarizer.summarize(self.observation(call, f"{prefix}{i}"))
            row["ground_truth"] = {"scenario": call.scenario, "attack_id": call.attack_id, "malicious": call.malicious}
            yield row
