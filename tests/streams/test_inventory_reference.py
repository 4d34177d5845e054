"""The inventory against the implementation it replaced, on simulated traffic and at the real 10,000-caller cap.

``ReferenceInventory`` is the previous ``streams.inventory.Inventory`` (Arrow group-bys and a dict of callers
per endpoint), kept here unchanged apart from its name and the caller cap as a parameter, as the reference: the published records must be equal
(calls, callers, top callers with ties in order of arrival, statuses, auth and data types, first/last seen,
spec status) whatever the batch sizes and however often records are published.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest import EndpointRecord, RequestSummary, arrow_schema
from ingest.simulator import ClusterSimulator
from streams import inventory as inventory_module
from streams.batch import present
from streams.inventory import Inventory, is_traversal

# --- the previous implementation, the reference ---------------------------------------------------------------------

_REF_TOP = 5
_REF_CAP = 10_000


def _pairs(table: pa.Table, column: str, ordered: bool = False) -> list[tuple[str, str, int]]:
    if ordered:
        grouped = table.group_by(["key", column], use_threads=False).aggregate([([], "count_all"), ("row", "min")]).sort_by("row_min")
    else:
        grouped = table.group_by(["key", column], use_threads=False).aggregate([([], "count_all")])
    return list(zip(grouped["key"].to_pylist(), grouped[column].to_pylist(), grouped["count_all"].to_pylist()))


def _wakes(times: Iterable[float], last_seen: float, dormant_after_s: float) -> bool:
    for t in times:
        if t - last_seen >= dormant_after_s:
            return True
        last_seen = max(last_seen, t)
    return False


@dataclass
class _RefEndpoint:
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


class ReferenceInventory:
    """The previous ``Inventory`` (see the module docstring)."""

    def __init__(self, declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None, dormant_after_s: float = 30 * 86400.0,
                 cap: int = _REF_CAP):
        self.declared = {k: dict(v) for k, v in (declared or {}).items()}
        self.dormant_after_s = dormant_after_s
        self.cap = cap
        self.endpoints: dict[str, _RefEndpoint] = {}
        self._changed: set[str] = set()

    def status(self, ep: _RefEndpoint) -> str:
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
        for k, caller, n in _pairs(flat, "actor", ordered=True):
            callers = self.endpoints[k].callers
            if caller in callers or len(callers) < self.cap:
                callers[caller] = callers.get(caller, 0) + n
        for k, value, n in _pairs(flat, "status"):
            statuses = self.endpoints[k].statuses
            statuses[value] = statuses.get(value, 0) + n
        for k, value, _ in _pairs(flat.filter(pc.is_valid(flat["auth"])), "auth"):
            if value:
                self.endpoints[k].auth_types.add(value)
        self._data_types(table, key)

    def _endpoints(self, flat: pa.Table, names: tuple[pa.Array, ...]) -> None:
        grouped = flat.group_by("key", use_threads=False).aggregate([("time", "min"), ("time", "max"), ("time", "count"), ("row", "min")])
        first_rows = grouped["row_min"]
        service, namespace, method, template = (pc.take(col, first_rows).to_pylist() for col in names)
        columns = (grouped[c].to_pylist() for c in ("key", "time_min", "time_max", "time_count"))
        for i, (k, first, last, calls) in enumerate(zip(*columns)):
            ep = self.endpoints.get(k)
            if ep is None:
                ep = self.endpoints[k] = _RefEndpoint(service[i], namespace[i], method[i], template[i], first, last)
                ep.woke_from_dormancy = last - first >= self.dormant_after_s and self._woke(flat, k, None)
            elif not ep.woke_from_dormancy and last - ep.last_seen >= self.dormant_after_s:
                ep.woke_from_dormancy = self._woke(flat, k, ep.last_seen)
            ep.calls += calls
            ep.first_seen, ep.last_seen = min(ep.first_seen, first), max(ep.last_seen, last)
            self._changed.add(k)

    def _woke(self, flat: pa.Table, key: str, last_seen: float | None) -> bool:
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
        ep = self.endpoints[key]
        top = sorted(ep.callers.items(), key=lambda kv: -kv[1])[:_REF_TOP]
        return EndpointRecord(service=ep.service, namespace=ep.namespace, method=ep.method, path_template=ep.template,
                              calls=ep.calls, callers=len(ep.callers), top_callers=[a for a, _ in top],
                              auth_types=sorted(ep.auth_types), data_types=sorted(ep.data_types), statuses=dict(ep.statuses),
                              first_seen=ep.first_seen, last_seen=ep.last_seen, spec_status=self.status(ep))

    def take_changed(self) -> list[EndpointRecord]:
        changed, self._changed = self._changed, set()
        return [self.record(k) for k in sorted(changed)]

    def zombie_keys(self) -> frozenset[str]:
        out = {f"{svc.rpartition('/')[2]} {m} {t}" for svc, spec in self.declared.items() for (m, t), dep in spec.items() if dep}
        out.update(k for k, ep in self.endpoints.items() if ep.woke_from_dormancy)
        return frozenset(out)


# --- the comparisons -------------------------------------------------------------------------------------------------

_SCHEMA = arrow_schema(RequestSummary)
DECLARED = {"shop/orders": {("GET", "/orders/{id}"): False}, "shop/users": {("GET", "/users/{id}"): True}}


def _simulated(seconds: float) -> list[dict[str, Any]]:
    """Benign simulated traffic, then the same traffic again later with a third of the users renamed (new callers)."""
    sim = ClusterSimulator(seed=5, users=400, start_time=1.8e9, benign_rate_eps=150.0)
    rows = [call.to_row(f"r{i}", b"k") for i, call in enumerate(sim.calls(seconds))]
    again = [dict(row, id=f"s{i}", time=row["time"] + 4000.0, principal=f"{row['principal']}~2" if row["principal"] and zlib.crc32(row["principal"].encode()) % 3 == 0 else row["principal"])
             for i, row in enumerate(rows)]
    return rows + again


def _records(inventory: Any, batches: list[pa.Table], publish_every: int) -> list[list[EndpointRecord]]:
    out = []
    for i, batch in enumerate(batches):
        inventory.update(batch)
        if i % publish_every == 0:
            out.append(sorted(inventory.take_changed(), key=lambda r: r.key))
    out.append(sorted(inventory.take_changed(), key=lambda r: r.key))
    return out  # each publish in key order: the reference sorts its keys without the namespace, the inventory with it


@pytest.mark.parametrize("cap", [_REF_CAP, 30, 3])
def test_simulated_traffic_publishes_the_same_records(monkeypatch: pytest.MonkeyPatch, cap: int) -> None:
    rows = _simulated(60.0)
    sizes = [1, 7, 300, 2500, 40, 5000]
    batches, start = [], 0
    while start < len(rows):
        size = sizes[len(batches) % len(sizes)]
        batches.append(pa.Table.from_pylist(rows[start:start + size], schema=_SCHEMA))
        start += size
    monkeypatch.setattr(inventory_module, "_CALLER_CAP", cap)
    new = _records(Inventory(DECLARED, dormant_after_s=2000.0), batches, 3)
    old = _records(ReferenceInventory(DECLARED, dormant_after_s=2000.0, cap=cap), batches, 3)
    assert sum(len(r) for r in new) > 20 and any(r.callers >= min(cap, 30) for rs in new for r in rs)
    assert any(r.spec_status == "dormant" for rs in new for r in rs)  # the replay 4,000 s later wakes every endpoint
    assert _without_probed(new) == old
    for record in (r for rs in new for r in rs):  # the reference has no probed flag: the statuses say it (no shim decisions here)
        answered = any(s == "none" or 100 <= int(s) < 600 and int(s) not in (404, 405, 410, 501) for s in record.statuses)
        succeeded = any(s != "none" and 200 <= int(s) < 300 for s in record.statuses)
        in_spec = (record.method, record.path_template) in DECLARED.get(f"{record.namespace}/{record.service}", DECLARED.get(record.service, {}))
        traversal = is_traversal(record.path_template)
        assert record.probed == (not in_spec and (not succeeded if traversal else not answered)), record
        assert record.traversal_answered == (not in_spec and traversal and succeeded), record


def _without_probed(published: list[list[EndpointRecord]]) -> list[list[EndpointRecord]]:
    return [[r.model_copy(update={"probed": False, "traversal_answered": False}) for r in rs] for rs in published]


def _one_endpoint(principals: list[str], start: float) -> pa.Table:
    return pa.Table.from_pylist([{"id": f"{start}-{i}", "time": start + i * 1e-3, "source": {"workload": "web"}, "principal": p,
                                  "destination": {"service": "orders", "namespace": "shop"}, "method": "GET", "path_template": "/orders/{id}",
                                  "status": 200} for i, p in enumerate(principals)], schema=_SCHEMA)


def test_the_caller_cap_admits_callers_in_order_of_arrival() -> None:
    """At the shipped cap: the first 10,000 callers to arrive are counted; later ones never are, however busy."""
    assert inventory_module._CALLER_CAP == _REF_CAP == 10_000
    first = [f"u{i}" for i in range(12_000)] + ["u11000"] * 6  # u11000 arrives after the cap is full
    second = ["u9999"] * 2 + ["u10500"] * 9 + ["u20000"] * 9 + ["u5"] + ["u11000"] * 3
    batches = [_one_endpoint(first, 1000.0), _one_endpoint(second, 2000.0)]
    new, old = _records(Inventory(), batches, 1), _records(ReferenceInventory(), batches, 1)
    record = new[-2][0]
    assert (record.callers, record.calls) == (10_000, len(first) + len(second))
    assert record.top_callers == ["web|u9999", "web|u5", "web|u0", "web|u1", "web|u2"]  # 3 calls, 2 calls, then 1 call each in order of arrival
    assert new == old
