"""Whole-process memory of the worker per tracked identity: a growing population, event time moving forward.

``measure_memory(points)`` feeds a synthetic but realistic mix of traffic
(``Mix``: end users through in-cluster front ends and external API clients
behind shared addresses, each calling several endpoints of a dozen services
with their own object ids, some answers carrying records and personal data,
a few refused) through ``streams.pipeline.Pipeline.handle_many`` as Arrow
envelopes, the code path of the worker (shipped settings: every rule and
enricher). New identities keep arriving and every one calls ``calls``
times, ``spacing_s`` apart, so windows close, baselines form and idle keys age
on the event clock; ``now`` is the wall clock, as the worker passes it, so state
is checkpointed as often as in the worker (every ``state_flush_s``). Whatever the pipeline asks to
write to the changelog is dropped after the call, as the worker's app does
(it sends the blobs and keeps no copy); ``keep_changelog=True`` keeps the
latest blob per key instead (what the worker did before: a second copy of
every row in its Faust table).

At each point (identities seen so far) it reads, after ``gc.collect()``:

* ``rss_bytes`` -- the process's resident set (``/proc/self/status``), as a
  pod's memory limit sees it; ``rss_trimmed_bytes`` after ``malloc_trim(0)``
  (freed heap returned to the system);
* ``state_bytes`` -- what the pipeline holds: every numpy buffer it reaches
  (capacity, not just the used part), Arrow data and Python containers;
* ``store_bytes`` -- the per-key tables (actor, client address, agent)
  counted by ``ActorStore.nbytes`` (used rows and index);
* the actors and client addresses tracked, and the evictions so far.

The figure is the slope (least squares over the points) of RSS against the
identities tracked: bytes per additional identity, all in (per-key tables,
the enrichers' tables as they fill towards their budgets, allocator slack).
``python -m deploy.lab.bench_memory`` prints one JSON document.

Measured (2 shared cores, load average 4-5; one run each): 100k to 1M
identities, RSS slope 399-403 bytes per identity (327 after ``malloc_trim``;
the per-key tables 213: actor 175, client addresses 34 at a quarter address per
identity, rare-column rows ~0); the rest is the enrichers' tables filling
towards their budgets (ownership: 1M objects and pairs) and allocator slack.
1M to 2.5M with ``--setting state_budget_bytes=0``, once those tables are full:
228 per identity. Before issue 9 (one table, no eviction): 608-636 in process,
1,314 with the copy the worker's Faust table kept (``--keep-changelog``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import sys
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["Mix", "held_bytes", "measure_memory", "mix_tables", "rss_bytes", "slope"]

#: (service, method, template, records returned, personal data values returned, names an object)
ENDPOINTS: tuple[tuple[str, str, str, int, int, bool], ...] = tuple(
    (svc, method, template, records, pii, named)
    for svc in ("orders", "carts", "payments", "profiles", "catalog", "reviews", "shipping", "invoices",
                "wishlists", "returns", "coupons", "notifications")
    for method, template, records, pii, named in (
        ("GET", f"/{svc}/{{id}}", 1, 1 if svc in ("profiles", "payments", "invoices") else 0, True),
        ("GET", f"/{svc}", 20, 0, False),
        ("POST", f"/{svc}", 1, 0, False),
        ("PUT", f"/{svc}/{{id}}", 1, 0, True),
    )
)
FRONT_ENDS = ("shop/frontend", "shop/mobile-bff", "shop/partner-gateway", "support/console")


@dataclass(frozen=True)
class Mix:
    """The traffic mix: how identities arrive and what they call.

    ``identities_per_s`` new identities per second of event time, each making
    ``calls`` calls ``spacing_s`` apart (with the default 4 x 45 s an identity is
    seen in three or four one-minute windows); ``external_share`` of them are API
    clients outside the cluster (no workload; ``users_per_address`` of them share
    one client address, as behind a NAT), the others end users through one of
    ``FRONT_ENDS`` (16 pods, whose addresses are the client addresses);
    ``refused_share`` of the calls are answered 404.
    """

    identities_per_s: float = 1000.0
    calls: int = 4
    spacing_s: float = 45.0
    external_share: float = 0.5
    users_per_address: int = 2
    refused_share: float = 0.03
    start_time: float = 1.8e9


def _strings(values: list[str]) -> pa.Array:
    return pa.array(values, pa.string())


def _list(offsets: np.ndarray, values: list[str]) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), _strings(values))


def _rows(mix: Mix, ident: np.ndarray, call: np.ndarray) -> pa.Table:
    """The summaries of (identity, call number) pairs, as an Arrow table with the ``RequestSummary`` columns."""
    from ingest.envelope import SUMMARY_SCHEMA

    n = len(ident)
    time_s = mix.start_time + ident / mix.identities_per_s + call * mix.spacing_s
    hashed = (ident * 2654435761 + call * 40503) % (1 << 32)
    endpoint = (ident * 7 + call * 13) % len(ENDPOINTS)
    external = (ident * 1000003 % 1000) < mix.external_share * 1000
    ids, objects = [], []
    services, methods, templates, principals, workloads, addresses = [], [], [], [], [], []
    object_offsets = np.zeros(n + 1, np.int32)
    pii_offsets = np.zeros(n + 1, np.int32)
    records = np.zeros(n, np.int64)
    for j, (i, k, e, ext, h) in enumerate(zip(ident.tolist(), call.tolist(), endpoint.tolist(), external.tolist(), hashed.tolist())):
        svc, method, template, rec, pii, named = ENDPOINTS[e]
        ids.append(f"m{i}-{k}")
        services.append(svc)
        methods.append(method)
        templates.append(template)
        principals.append(f"u{i:07d}" if not ext else f"key-{i:07d}")
        workloads.append(None if ext else FRONT_ENDS[i % len(FRONT_ENDS)])
        addresses.append(f"100.{(i // mix.users_per_address) >> 16 & 255}.{(i // mix.users_per_address) >> 8 & 255}."
                         f"{(i // mix.users_per_address) & 255}" if ext else f"10.0.{i % 4}.{i % 16 + 10}")
        if named:
            objects.append(f"{(i << 3) | (k & 1):016x}")
        records[j] = rec
        object_offsets[j + 1] = len(objects)
        pii_offsets[j + 1] = pii_offsets[j] + (pii if h % 3 else 0)
    status = np.where((hashed % 1000) < mix.refused_share * 1000, 404, 200)
    pii_values = int(pii_offsets[-1])
    columns: dict[str, pa.Array] = {
        "schema_version": pa.array(np.ones(n, np.int64)),
        "id": _strings(ids),
        "time": pa.array(time_s),
        "duration_ms": pa.array(np.full(n, 4.0)),
        "reporter": _strings(["access-log"] * n),
        "source": pa.StructArray.from_arrays(
            [pa.array(workloads, pa.string()), pa.array([w.split("/")[0] if w else None for w in workloads], pa.string()),
             pa.nulls(n, pa.string()), _strings(addresses), pa.array(external)],
            names=["workload", "namespace", "pod", "ip", "external"]),
        "principal": _strings(principals),
        "auth_type": _strings(["jwt"] * n),
        "destination": pa.StructArray.from_arrays(
            [_strings(services), _strings(["shop"] * n), pa.nulls(n, pa.string()), pa.array(np.full(n, 8080, np.int64)),
             pa.array(np.zeros(n, bool))], names=["service", "namespace", "host", "port", "external"]),
        "protocol": _strings(["http"] * n),
        "method": _strings(methods),
        "path_template": _strings(templates),
        "status": pa.array(status.astype(np.int64)),
        "request_bytes": pa.array(np.where(np.array([m != "GET" for m in methods]), 300, 0).astype(np.int64)),
        "response_bytes": pa.array((records * 180 + 120).astype(np.int64)),
        "object_ids": _list(object_offsets, objects),
        "sensitive": pa.MapArray.from_arrays(pa.array(pii_offsets, pa.int32()), _strings(["email"] * pii_values),
                                             pa.array(np.ones(pii_values, np.int64))),
    }
    arrays = [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type) for f in SUMMARY_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SUMMARY_SCHEMA)


def mix_tables(mix: Mix, identities: int, rows_per_table: int = 20_000) -> Iterator[tuple[pa.Table, int]]:
    """The mix's summaries in event-time order, as tables of about ``rows_per_table`` rows, each with the
    number of identities that had made their first call by its end."""
    step = rows_per_table / (mix.identities_per_s * mix.calls)  # seconds of event time per table
    end = identities / mix.identities_per_s + (mix.calls - 1) * mix.spacing_s
    t = 0.0
    while t < end:
        idents, calls = [], []
        for k in range(mix.calls):
            lo = max(0, int(np.ceil((t - k * mix.spacing_s) * mix.identities_per_s)))
            hi = min(identities, int(np.ceil((t + step - k * mix.spacing_s) * mix.identities_per_s)))
            if hi > lo:
                idents.append(np.arange(lo, hi, dtype=np.int64))
                calls.append(np.full(hi - lo, k, dtype=np.int64))
        t += step
        if not idents:
            continue
        ident, call = np.concatenate(idents), np.concatenate(calls)
        order = np.argsort(ident / mix.identities_per_s + call * mix.spacing_s, kind="stable")
        yield _rows(mix, ident[order], call[order]), min(identities, int(np.ceil(t * mix.identities_per_s)))


def rss_bytes() -> dict[str, int]:
    """Resident and peak resident bytes of this process (``VmRSS``, ``VmHWM``)."""
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":")
                out[name] = int(value.split()[0]) * 1024
    return {"rss": out["VmRSS"], "peak": out["VmHWM"]}


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


_SKIPPED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType, types.FrameType)


def held_bytes(root: Any) -> int:
    """Bytes reachable from ``root``: numpy buffers (whole allocations, once each), Arrow data and Python objects.

    Code (modules, classes, functions) is not counted; memoryviews are views of arrays counted already.
    """
    seen: set[int] = set()
    total, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SKIPPED) or isinstance(obj, memoryview):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen or base is obj:
                seen.add(id(base))
                total += base.nbytes if base.base is None else obj.nbytes
            continue
        if isinstance(obj, (pa.Array, pa.ChunkedArray, pa.Table, pa.RecordBatch)):
            total += obj.get_total_buffer_size()
            continue
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def _stores(pipeline: Any) -> tuple[int, dict[str, int], int]:
    """(bytes of the per-key tables, keys per table, keys evicted so far) over every partition's processor."""
    stored, evicted = 0, 0
    keys: dict[str, int] = {}
    for proc in pipeline.processors.values():
        if hasattr(proc, "state_stats"):
            stats = proc.state_stats()
            stored += sum(stats["bytes"].values())
            evicted += sum(stats["evicted"].values())
            for name, count in stats["keys"].items():
                keys[name] = keys.get(name, 0) + count
        else:  # a tree from before eviction (A/B runs)
            for name, space in proc.spaces.items():
                stored += space.store.nbytes()
                keys[name] = keys.get(name, 0) + len(space.store)
    return stored, keys, evicted


def _wired(pipeline: Any, settings: Any) -> None:
    """Give the processors the eviction settings when ``streams.pipeline.processor_config`` does not pass them yet."""
    config = pipeline.config
    if hasattr(config, "idle_ttl_s") and (config.idle_ttl_s, config.state_budget_bytes) != (settings.state_idle_ttl_s, settings.state_budget_bytes):
        pipeline.config = replace(config, idle_ttl_s=settings.state_idle_ttl_s, state_budget_bytes=settings.state_budget_bytes)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs."""
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def measure_memory(points: Sequence[int] = (100_000, 200_000, 500_000, 1_000_000), mix: Mix | None = None,
                   keep_changelog: bool = False, held: bool = True, **settings: Any) -> dict[str, Any]:
    """Memory at each point of a growing population (see the module docstring); ``settings`` override the worker's."""
    from ingest.envelope import encode_table
    from streams import WorkerSettings
    from streams.pipeline import Pipeline

    mix = mix or Mix()
    worker = WorkerSettings(**settings)
    pipeline = Pipeline(worker, "l7.summaries.v1")
    if hasattr(worker, "state_idle_ttl_s"):
        _wired(pipeline, worker)
    pipeline.processor(0, ())
    gc.collect()
    _malloc_trim()
    start = rss_bytes()
    changelog: dict[bytes, bytes] = {}
    todo, out, offset, cpu, rows = sorted(points), [], 0, 0.0, 0
    began = time.time()
    for table, seen in mix_tables(mix, todo[-1]):
        value = encode_table(table)
        started = time.process_time()
        result = pipeline.handle_many(0, [(None, value, offset)], now=time.time())  # the worker's clock, as app.py passes it
        cpu += time.process_time() - started
        rows += result.rows
        offset += 1
        if keep_changelog:
            changelog.update(result.state_writes)
        del result, value
        while todo and seen >= todo[0]:
            out.append(_point(pipeline, todo.pop(0), changelog if keep_changelog else None, held))
    per_actor = slope([p["actors"] for p in out], [p["rss_bytes"] for p in out]) if len(out) > 1 else None
    per_key = slope([p["actors"] + p["addresses"] for p in out], [p["rss_bytes"] for p in out]) if len(out) > 1 else None
    return {
        "mix": asdict(mix), "keep_changelog": keep_changelog, "settings": settings, "rss_start_bytes": start["rss"],
        "rows": rows, "rows_per_cpu_second": round(rows / cpu) if cpu else None, "wall_s": round(time.time() - began, 1),
        "points": out,
        "rss_bytes_per_identity": None if per_actor is None else round(per_actor, 1),
        "rss_bytes_per_key": None if per_key is None else round(per_key, 1),
        "rss_trimmed_bytes_per_identity": round(slope([p["actors"] for p in out], [p["rss_trimmed_bytes"] for p in out]), 1) if len(out) > 1 else None,
        "state_bytes_per_identity": round(slope([p["actors"] for p in out], [p["state_bytes"] for p in out]), 1) if len(out) > 1 and held else None,
        "store_bytes_per_identity": round(slope([p["actors"] for p in out], [p["store_bytes"] for p in out]), 1) if len(out) > 1 else None,
    }


def _point(pipeline: Any, identities: int, changelog: dict[bytes, bytes] | None, held: bool) -> dict[str, Any]:
    gc.collect()
    mem = rss_bytes()
    _malloc_trim()
    trimmed = rss_bytes()["rss"]
    stored, keys, evicted = _stores(pipeline)
    point = {"identities": identities, "actors": keys.get("actor", 0), "addresses": keys.get("source", 0),
             "rare_rows": keys.get("rare", 0), "rss_bytes": mem["rss"], "rss_peak_bytes": mem["peak"],
             "rss_trimmed_bytes": trimmed, "store_bytes": stored, "evicted": evicted}
    if held:
        point["state_bytes"] = held_bytes(pipeline) + (held_bytes(changelog) if changelog is not None else 0)
    print(json.dumps(point), file=sys.stderr, flush=True)
    return point


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deploy.lab.bench_memory [--points 100000,200000,500000,1000000] [--keep-changelog]``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", default="100000,200000,500000,1000000", help="identities at which memory is read")
    p.add_argument("--keep-changelog", action="store_true", help="keep the latest changelog blob per key (the old app's second copy)")
    p.add_argument("--no-held", action="store_true", help="skip the walk of the pipeline's objects (state_bytes)")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=JSON", help="a worker setting, e.g. state_idle_ttl_s=600")
    args = p.parse_args(argv)
    settings = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.setting)}
    points = [int(x) for x in args.points.split(",")]
    print(json.dumps(measure_memory(points, keep_changelog=args.keep_changelog, held=not args.no_held, **settings), indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ".")
    raise SystemExit(main())
