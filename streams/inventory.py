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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest import EndpointRecord
from streams.batch import present

__all__ = ["Inventory"]

_TOP_CALLERS = 5
_CALLER_CAP = 10_000


def _pairs(table: pa.Table, column: str, ordered: bool = False) -> list[tuple[str, str, int]]:
    """(endpoint key, value, rows) for every distinct (key, value) of the batch; ``ordered``: in the order of their first rows."""
    if ordered:  # Arrow does not promise the order of its groups
        grouped = table.group_by(["key", column], use_threads=False).aggregate([([], "count_all"), ("row", "min")]).sort_by("row_min")
    else:
        grouped = table.group_by(["key", column], use_threads=False).aggregate([([], "count_all")])
    return list(zip(grouped["key"].to_pylist(), grouped[column].to_pylist(), grouped["count_all"].to_pylist()))


def _wakes(times: Iterable[float], last_seen: float, dormant_after_s: float) -> bool:
    """Whether a call comes ``dormant_after_s`` or more after every earlier one (rows in batch order)."""
    for t in times:
        if t - last_seen >= dormant_after_s:
            return True
        last_seen = max(last_seen, t)
    return False


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
        method, template = table["method"].combine_chunks(), table["path_template"].combine_chunks()
        key = pc.binary_join_element_wise(service, method, template, " ")
        who = pc.coalesce(present(src.field("workload")), present(src.field("ip")), "-")
        actor = pc.binary_join_element_wise(who, pc.fill_null(present(table["principal"].combine_chunks()), "-"), "|")
        status = pc.fill_null(pc.cast(table["status"].combine_chunks(), pa.string()), "none")
        flat = pa.table({"key": key, "row": pa.array(np.arange(table.num_rows)), "time": table["time"].combine_chunks(),
                         "actor": actor, "auth": table["auth_type"].combine_chunks(), "status": status})
        self._endpoints(flat, (service, dest.field("namespace"), method, template))
        for k, caller, n in _pairs(flat, "actor", ordered=True):  # the cap admits callers in order of arrival
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

    def _endpoints(self, flat: pa.Table, names: tuple[pa.Array, ...]) -> None:
        """Calls, first/last seen and dormancy per endpoint; a new endpoint is named after its first row."""
        grouped = flat.group_by("key", use_threads=False).aggregate([("time", "min"), ("time", "max"), ("time", "count"), ("row", "min")])
        first_rows = grouped["row_min"]
        service, namespace, method, template = (pc.take(col, first_rows).to_pylist() for col in names)
        columns = (grouped[c].to_pylist() for c in ("key", "time_min", "time_max", "time_count"))
        for i, (k, first, last, calls) in enumerate(zip(*columns)):
            ep = self.endpoints.get(k)
            if ep is None:
                ep = self.endpoints[k] = _Endpoint(service[i], namespace[i], method[i], template[i], first, last)
                ep.woke_from_dormancy = last - first >= self.dormant_after_s and self._woke(flat, k, None)
            elif not ep.woke_from_dormancy and last - ep.last_seen >= self.dormant_after_s:
                ep.woke_from_dormancy = self._woke(flat, k, ep.last_seen)
            ep.calls += calls
            ep.first_seen, ep.last_seen = min(ep.first_seen, first), max(ep.last_seen, last)
            self._changed.add(k)

    def _woke(self, flat: pa.Table, key: str, last_seen: float | None) -> bool:
        """The exact dormancy check over one endpoint's rows in batch order (rare: only when the batch could wake it)."""
        times = flat.filter(pc.equal(flat["key"], key))["time"].to_pylist()
        return _wakes(times[1:], times[0], self.dormant_after_s) if last_seen is None else _wakes(times, last_seen, self.dormant_after_s)

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
