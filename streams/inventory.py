"""The API inventory: every (service, method, template) traffic revealed, compared with declared specs.

``Inventory.update(table)`` folds a batch of summaries into per-endpoint
records (calls, distinct callers, auth types, sensitive-data types, statuses,
first and last seen) and classifies each endpoint against the declared
specifications it was given (``declared``: service -> {(method, template):
deprecated}): ``declared``, ``shadow`` (the service has a spec, this endpoint
is in none), ``undeclared`` (no spec for the service), ``deprecated`` (declared
deprecated and called: a zombie) or ``dormant`` (not called for
``dormant_after_s``, then called again: a zombie too). ``take_changed`` returns
the records to publish on ``api.inventory.v1``; ``zombie_keys`` the
``service METHOD /template`` keys whose calls count as retired-API hits.
Pure; nothing here is read from the simulator: only summaries and specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from ingest import EndpointRecord, actor_key

__all__ = ["Inventory"]

_TOP_CALLERS = 5
_CALLER_CAP = 10_000


@dataclass
class _Endpoint:
    service: str
    namespace: str | None
    method: str
    template: str
    first_seen: float
    last_seen: float
    calls: int = 0
    callers: dict[str, int] = field(default_factory=dict)
    auth_types: set[str] = field(default_factory=set)
    data_types: set[str] = field(default_factory=set)
    statuses: dict[str, int] = field(default_factory=dict)
    woke_from_dormancy: bool = False


class Inventory:
    """Endpoint records of one worker (its partitions), with spec status."""

    def __init__(self, declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None, dormant_after_s: float = 30 * 86400.0):
        self.declared = {k: dict(v) for k, v in (declared or {}).items()}
        self.dormant_after_s = dormant_after_s
        self.endpoints: dict[str, _Endpoint] = {}
        self._changed: set[str] = set()

    def status(self, ep: _Endpoint) -> str:
        """The endpoint's spec status (see module docstring)."""
        spec = self.declared.get(ep.service) or self.declared.get(f"{ep.namespace}/{ep.service}")
        if spec is None:
            status = "undeclared"
        elif (ep.method, ep.template) not in spec:
            status = "shadow"
        elif spec[(ep.method, ep.template)]:
            status = "deprecated"
        else:
            status = "declared"
        return "dormant" if ep.woke_from_dormancy and status != "deprecated" else status

    def update(self, table: pa.Table) -> None:
        """Fold one batch of summaries (Arrow table with the ``RequestSummary`` schema) in."""
        cols = table.select(["time", "destination", "method", "path_template", "principal", "source", "auth_type", "status", "sensitive"]).to_pylist()
        for row in cols:
            dest, src = row["destination"] or {}, row["source"] or {}
            service = dest.get("service") or "-"
            key = f"{service} {row['method']} {row['path_template']}"
            t = float(row["time"])
            ep = self.endpoints.get(key)
            if ep is None:
                ep = self.endpoints[key] = _Endpoint(service, dest.get("namespace"), row["method"], row["path_template"], t, t)
            elif t - ep.last_seen >= self.dormant_after_s:
                ep.woke_from_dormancy = True
            ep.calls += 1
            ep.first_seen, ep.last_seen = min(ep.first_seen, t), max(ep.last_seen, t)
            actor = actor_key(src.get("workload") or src.get("ip"), row["principal"])
            if actor in ep.callers or len(ep.callers) < _CALLER_CAP:
                ep.callers[actor] = ep.callers.get(actor, 0) + 1
            if row["auth_type"]:
                ep.auth_types.add(row["auth_type"])
            ep.data_types.update(k for k, v in (row["sensitive"] or []) if v)
            status = str(row["status"]) if row["status"] is not None else "none"
            ep.statuses[status] = ep.statuses.get(status, 0) + 1
            self._changed.add(key)

    def record(self, key: str) -> EndpointRecord:
        """The published record of one endpoint."""
        ep = self.endpoints[key]
        top = sorted(ep.callers.items(), key=lambda kv: -kv[1])[:_TOP_CALLERS]
        return EndpointRecord(service=ep.service, namespace=ep.namespace, method=ep.method, path_template=ep.template,
                              calls=ep.calls, callers=len(ep.callers), top_callers=[a for a, _ in top],
                              auth_types=sorted(ep.auth_types), data_types=sorted(ep.data_types), statuses=dict(ep.statuses),
                              first_seen=ep.first_seen, last_seen=ep.last_seen, spec_status=self.status(ep))

    def take_changed(self) -> list[EndpointRecord]:
        """Records of the endpoints changed since the last call."""
        changed, self._changed = self._changed, set()
        return [self.record(k) for k in sorted(changed)]

    def zombie_keys(self) -> frozenset[str]:
        """``service METHOD /template`` of endpoints whose calls are retired-API hits (deprecated or dormant)."""
        out = {f"{svc.rpartition('/')[2]} {m} {t}" for svc, spec in self.declared.items() for (m, t), dep in spec.items() if dep}
        out.update(k for k, ep in self.endpoints.items() if ep.woke_from_dormancy)
        return frozenset(out)
