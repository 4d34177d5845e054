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
import pyarrow.compute as pc

from ingest import EndpointRecord

__all__ = ["Inventory"]

_TOP_CALLERS = 5
_CALLER_CAP = 10_000


def _present(values: pa.Array) -> pa.Array:
    """Empty strings count as absent, as in ``ingest.actor_key`` (``x or '-'``)."""
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)


def _pairs(table: pa.Table, column: str) -> list[tuple[str, str, int]]:
    """(endpoint key, value, rows) for every distinct (key, value) of the batch."""
    grouped = table.group_by(["key", column], use_threads=False).aggregate([([], "count_all")])
    return list(zip(grouped["key"].to_pylist(), grouped[column].to_pylist(), grouped["count_all"].to_pylist()))


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
        """Fold one batch of summaries (Arrow table with the ``RequestSummary`` schema) in.

        Vectorised: Arrow groups the batch by endpoint (and by endpoint and caller,
        status, auth type, data type); Python touches each group once, not each row.
        """
        if table.num_rows == 0:
            return
        dest, src = table["destination"].combine_chunks(), table["source"].combine_chunks()
        service = pc.if_else(pc.equal(pc.fill_null(dest.field("service"), ""), ""), "-", pc.fill_null(dest.field("service"), "-"))
        key = pc.binary_join_element_wise(service, table["method"].combine_chunks(), table["path_template"].combine_chunks(), " ")
        who = pc.coalesce(_present(src.field("workload")), _present(src.field("ip")), "-")
        actor = pc.binary_join_element_wise(who, pc.fill_null(_present(table["principal"].combine_chunks()), "-"), "|")
        status = pc.fill_null(pc.cast(table["status"].combine_chunks(), pa.string()), "none")
        flat = pa.table({"key": key, "time": table["time"].combine_chunks(), "namespace": dest.field("namespace"),
                         "actor": actor, "auth": table["auth_type"].combine_chunks(), "status": status})
        endpoints = flat.group_by("key", use_threads=False).aggregate([("time", "min"), ("time", "max"), ("time", "count"), ("namespace", "first")])
        for k, first, last, calls, namespace in zip(*(endpoints[c].to_pylist() for c in ("key", "time_min", "time_max", "time_count", "namespace_first"))):
            self._touch(k, namespace, float(first), float(last), int(calls))
        for k, caller, n in _pairs(flat, "actor"):
            callers = self.endpoints[k].callers
            if caller in callers or len(callers) < _CALLER_CAP:
                callers[caller] = callers.get(caller, 0) + n
        for k, value, n in _pairs(flat, "status"):
            statuses = self.endpoints[k].statuses
            statuses[value] = statuses.get(value, 0) + n
        for k, value, _ in _pairs(flat.filter(pc.is_valid(flat["auth"])), "auth"):
            if value:
                self.endpoints[k].auth_types.add(value)
        self._data_types(table, key)

    def _touch(self, key: str, namespace: str | None, first: float, last: float, calls: int) -> None:
        service, method, template = key.split(" ", 2)
        ep = self.endpoints.get(key)
        if ep is None:
            ep = self.endpoints[key] = _Endpoint(service, namespace, method, template, first, last)
        elif first - ep.last_seen >= self.dormant_after_s:
            ep.woke_from_dormancy = True
        ep.calls += calls
        ep.first_seen, ep.last_seen = min(ep.first_seen, first), max(ep.last_seen, last)
        self._changed.add(key)

    def _data_types(self, table: pa.Table, key: pa.Array) -> None:
        sensitive = table["sensitive"].combine_chunks()
        if not len(sensitive) or sensitive.null_count == len(sensitive):
            return
        keys = pa.ListArray.from_arrays(sensitive.offsets, sensitive.keys)
        parents = pc.list_parent_indices(keys)
        types, counts = pc.list_flatten(keys), pc.list_flatten(pa.ListArray.from_arrays(sensitive.offsets, sensitive.items))
        pairs = pa.table({"key": pc.take(key, parents), "type": types, "n": counts}).filter(pc.greater(pc.fill_null(counts, 0), 0))
        for k, value, _ in _pairs(pairs, "type"):
            self.endpoints[k].data_types.add(value)

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
