"""The demo's data plane in one process, for offline evaluation: same requests, same API, same derivation.

Each simulated call becomes the HTTP request the traffic driver sends
(``deploy.lab.driver``) with the ``x-forwarded-for`` Envoy would append.
``OfflineDataPlane.view(call)`` is the ``RequestView`` the shim would read from
Envoy's ext_authz check of that request (the real ``EnvoyHttpAdapter``, with
the same identity configuration and pod directory the collector uses, so the
shim and the worker name the same actor); ``row(call, id, decision)`` is the
summary row a collector would publish once the shim has decided: an allowed
call is answered by the real demo API (``deploy.runtime.demoapi``), a denied or
throttled one never reaches it (status 403/429, no answer, nothing derived
from a response), and either exchange goes through ``ingest.Summarizer``
exactly as the collector's would. ``rows(calls)`` is the same without a shim
deciding (every call answered; the inline signatures' findings reported, not
enforced). Nothing the detectors read comes from the simulator's own fields;
only ``ground_truth`` rides along, for scoring.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from deploy.lab.driver import GATEWAY, TrafficDriver, end_user_ip, loopback_for, pod_map, via_gateway
from deploy.runtime.demoapi import DemoApi, openapi_specs, seed_db
from enforcement.adapters.envoy_http import EnvoyHttpAdapter
from enforcement.adapters.httpcheck import HeaderIdentity
from enforcement.decision import Decision, RequestView
from enforcement.inspection import build_inspector
from enforcement.settings import InspectionSettings
from enforcement.signatures import DEFAULT_RULES
from ingest import HttpObservation, IdentityConfig, PathTemplater, Summarizer, SummarizerConfig
from ingest.identity import IdentityResolver
from ingest.openapi import declared_endpoints, load_spec_dir
from ingest.simulator.world import World

__all__ = ["OfflineDataPlane", "recorded_decision"]

JWT_SECRET = b"kubeward-offline-idp-secret"
_JSON = {"content-type": "application/json"}


def recorded_decision(decision: Decision) -> str:
    """The ``decision`` a shim reports for a decision (``deny``, ``throttle``, ``observe:deny``, ``allow``)."""
    return decision.would if decision.enforced or decision.would == "allow" else f"observe:{decision.would}"


class OfflineDataPlane:
    """Driver requests -> shim view / demo API -> observations -> summary rows, in process (see the module docstring)."""

    def __init__(self, seed: int, users: int, object_key: bytes = b"kubeward-dev-object-key"):
        world_ips = World(seed, users).ips
        pods = pod_map(world_ips)
        lookup = {ip: (w, w.split("/", 1)[0], "") for ip, w in pods.items()}
        with tempfile.TemporaryDirectory() as tmp:
            openapi_specs(Path(tmp))
            specs = load_spec_dir(tmp)
        self.declared = declared_endpoints(specs)
        self.identity = IdentityConfig(jwt_hs256_secret=JWT_SECRET, trusted_proxies=tuple(f"{loopback_for(ip)}/32" for ip in world_ips[GATEWAY]),
                                       internal_networks=("127.244.0.0/16",))
        self.summarizer = Summarizer(SummarizerConfig(identity=self.identity, object_id_key=object_key), PathTemplater(specs=specs), lookup.get)
        self.adapter = EnvoyHttpAdapter(HeaderIdentity(IdentityResolver(self.identity), pods=lookup.get),
                                        inspected_headers=InspectionSettings().headers, body_limit=InspectionSettings().max_body_bytes)
        self.api = DemoApi(seed_db(seed, users), JWT_SECRET)
        self.requests = TrafficDriver("127.0.0.1", 0, JWT_SECRET)
        self.inspector = build_inspector(InspectionSettings(), DEFAULT_RULES)
        self._parts: tuple[Any, str, str, dict[str, str], bytes | None] | None = None

    def request(self, call: Any) -> tuple[str, str, dict[str, str], bytes | None]:
        """(path, peer address, headers as Envoy forwards them, body) of one call (the last one is remembered)."""
        if self._parts is not None and self._parts[0] is call:
            return self._parts[1:]
        path, headers, body = self.requests.request_parts(call)
        peer = loopback_for(call.source_ip)
        headers["x-forwarded-for"] = f"{end_user_ip(call.principal)}, {peer}" if via_gateway(call) else peer
        self._parts = (call, path, peer, headers, body)
        return path, peer, headers, body

    def view(self, call: Any, request_id: str) -> RequestView:
        """The ``RequestView`` the shim reads from Envoy's ext_authz check of this call."""
        path, peer, headers, body = self.request(call)
        raw = {k.encode("latin-1"): v.encode("latin-1") for k, v in headers.items()}
        raw[b"x-request-id"] = request_id.encode()
        return self.adapter.view_of(call.method, path, raw, peer, body)

    def observation(self, call: Any, request_id: str, decision: Decision | None = None) -> HttpObservation:
        """The exchange the collector reports: the API's real answer, or the shim's refusal when ``decision`` refused it.

        Without a decision (no shim deciding), the inline signatures' findings are reported, not enforced.
        """
        path, peer, headers, body = self.request(call)
        common = {"time": call.time, "method": call.method, "path": path, "request_id": request_id, "authority": headers["host"],
                  "headers": headers, "peer_ip": peer, "request_bytes": len(body or b""), "request_body": body or None}
        if decision is not None and decision.status != 200:
            return HttpObservation(reporter="shim+access_log", status=decision.status, decision=recorded_decision(decision),
                                   inline_findings=decision.findings, **common)
        status, answer = self.api.handle(headers["host"], call.method, path, headers, body or b"")
        if decision is None:
            found = self.inspector.inspect(RequestView(call.method, path, headers=headers, body=body or None))
            findings, reported, reporter = getattr(found, "categories", ()), None, "access_log"
        else:
            findings, reported, reporter = decision.findings, recorded_decision(decision), "shim+access_log"
        return HttpObservation(reporter=reporter, status=status, response_bytes=len(answer), response_headers=dict(_JSON),
                               response_body=answer, decision=reported, inline_findings=findings, **common)

    def row(self, call: Any, request_id: str, decision: Decision | None = None) -> dict[str, Any]:
        """The summary row of one call (see ``observation``), its ground truth attached for the scorer."""
        row = self.summarizer.summarize(self.observation(call, request_id, decision))
        row["ground_truth"] = {"scenario": call.scenario, "attack_id": call.attack_id, "malicious": call.malicious}
        return row

    def rows(self, calls: Iterable[Any], prefix: str = "o") -> Iterator[dict[str, Any]]:
        """Summary rows of the calls with no shim deciding (every call answered)."""
        for i, call in enumerate(calls):
            yield self.row(call, f"{prefix}{i}")
