"""The API inventory: every (namespace, service, method, template) traffic revealed, compared with declared specs.

``Inventory.update(table)`` folds a batch of summaries into per-endpoint
records (calls, distinct callers, auth types, sensitive-data types, statuses,
first and last seen) and classifies each endpoint against the declared
specifications it was given (``declared``: service -> {(method, template):
deprecated}): ``declared``, ``shadow`` (the service has a spec, this endpoint
is in none), ``undeclared`` (no spec for the service), ``deprecated`` (declared
deprecated and called: a zombie) or ``dormant`` (not called for
``dormant_after_s``, then called again: a zombie too). ``take_changed`` returns
the records to publish on ``api.inventory.v1``, one per (namespace, service,
method, template), keyed as ``EndpointRecord.key``; ``zombie_keys`` the
``service METHOD /template`` keys whose calls count as retired-API hits.
Pure; nothing here is read from the simulator: only summaries and specs.

Callers are actors (``workload or ip | principal``, as ``ingest.actor_key``).
An endpoint counts at most ``_CALLER_CAP`` of them, admitted in order of
arrival (batch order, then row order); its top callers are the
``_TOP_CALLERS`` with the most calls, earlier arrival first among equals.
Cost: a fold is a fixed number of numpy/Arrow passes over its rows; Python
touches each endpoint of the batch (its statuses, auth and data types, and the
callers entering its top) once. The (endpoint, caller) counts live in a
``KeyTable`` keyed by ``pair_key(endpoint number, caller hash)``; a caller's
name is kept only while it is in its endpoint's top callers. Statuses are
published in ascending order of their text.

**Probed paths are not endpoints.** A shadow API is an undocumented endpoint
that serves; traffic also reaches paths that are nothing of the kind: path
traversal probes the templater could not fold (``/documents/..%2F..%2Fetc%2Fshadow``,
``/documents/....//....//etc/hosts``) and scanners' guesses (``/etc/passwd``
once a client or proxy resolved the dots, ``/.env``, ``/wp-login.php``). An
endpoint in no spec (``shadow`` or ``undeclared``) is published with
``probed=True`` when either

* its template holds a traversal sequence (a segment of two or more dots
  once percent-decoding, twice for double encoding, has turned ``%2e`` into
  ``.`` and ``%2f``/``%5c`` into separators) and no call to it got a success
  (2xx) answer. Never an API's own path. An encoded slash alone is not enough
  (``/projects/group%2Fname`` is a real API's id); or
* no call to it was *answered*. Only a status that says "no such endpoint" is
  no answer: 404, 405, 410 and 501 (what a server or proxy answers for a path
  or method it does not route), and a refusal by Kubeward itself (the shim's
  recorded ``decision`` ``deny`` or ``throttle``, its 403 or 429: the call never
  reached the API). Any other status shows the endpoint exists, because the
  server routed the call to a handler that answered it: 1xx-3xx; 400, 409 and
  422 (the handler parsed the request and rejected it); 401 and 403 from the
  API (it asked for credentials or refused them); 429; every 5xx but 501 (the
  handler, or the upstream the proxy routed to, failed). An undocumented
  ``POST /internal/exec`` that answers only 400, 422 or 500 is a shadow
  endpoint: exactly what an attacker calling it wants to reach. An unknown
  status (a reporter that saw no response, such as a shim) gets the benefit
  of the doubt; a status outside 100-599 (``0``: no response) is no answer.
  Answered once, an endpoint stays answered.

A traversal path that got a success answer is no endpoint either, but no mere
probe: the traversal worked against the handler the templater failed to fold
it into (``/documents/..%2F..%2Fproc%2Fself%2Fenviron`` answered 200). It is
published with ``traversal_answered=True`` (and ``probed=False``): evidence of a
successful attack, which the blueprint marks high-risk.

A probed or answered-traversal path keeps its ``spec_status`` (what the specs
say); the blueprint marks it ``probed`` or ``traversal-answered`` instead of
shadow, undeclared or zombie, the OpenAPI export leaves it out, and its calls
are never retired-API hits (``zombie_keys``). Declared endpoints are neither:
the spec says they exist. The inventory is not restored after a restart (no
state is read back from ``api.inventory.v1``): a restarted worker counts every
endpoint afresh, ``answered`` included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ingest import EndpointRecord
from streams import inventorycolumns as cols
from streams.batch import column
from streams.keytable import KeyTable, pair_key

__all__ = ["Inventory", "is_traversal"]

_TOP_CALLERS = 5
_CALLER_CAP = 10_000

_DOTS = re.compile(r"(?:^|[/\\])\.{2,}(?:;[^/\\]*)?(?:$|[/\\])")  # a dot-dot segment (Tomcat's "..;" too)

_I = npt.NDArray[np.intp]
_F = npt.NDArray[np.float64]


def is_traversal(template: str) -> bool:
    """Whether a path holds a traversal sequence: a segment of two or more dots, percent-decoded twice (see above).

    >>> [is_traversal(p) for p in ("/documents/..%2F..%2Fetc%2Fshadow", "/d/%252e%252e%252fx", "/d/....//....//etc/hosts", "/..;/admin")]
    [True, True, True, True]
    >>> [is_traversal(p) for p in ("/etc/passwd", "/projects/group%2Fname", "/files/{id}.tar.gz", "/v1..2/x")]
    [False, False, False, False]
    """
    return bool(_DOTS.search(unquote(unquote(template))))


def _wakes(times: _F, last_seen: float | None, dormant_after_s: float) -> bool:
    """Whether a call comes ``dormant_after_s`` or more after every earlier one (rows in batch order; none earlier: the first row)."""
    listed = times.tolist()
    last = listed[0] if last_seen is None else last_seen
    for t in listed[1:] if last_seen is None else listed:
        if t - last >= dormant_after_s:
            return True
        last = max(last, t)
    return False


@dataclass
class _Endpoint:
    service: str
    namespace: str | None
    method: str
    template: str
    first_seen: float
    last_seen: float
    index: int
    calls: int = 0
    callers: int = 0
    top: list[tuple[int, str]] = field(default_factory=list)  # (pair slot, caller): best first
    auth_types: set[str] = field(default_factory=set)
    data_types: set[str] = field(default_factory=set)
    statuses: dict[str, int] = field(default_factory=dict)
    woke_from_dormancy: bool = False
    answered: bool = False  # a call got an answer that shows the endpoint exists (module docstring)
    succeeded: bool = False  # a call got a 2xx answer (on a traversal path: the traversal worked)


@dataclass
class _Fold:
    """One batch as the inventory reads it: each row's endpoint (0..k-1 in this batch) and their inventory records."""

    table: pa.Table
    local: _I
    endpoints: list[_Endpoint]


class Inventory:
    """Endpoint records of one worker (its partitions), with spec status."""

    def __init__(self, declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None, dormant_after_s: float = 30 * 86400.0):
        self.declared = {k: dict(v) for k, v in (declared or {}).items()}
        self.dormant_after_s = dormant_after_s
        self.endpoints: dict[str, _Endpoint] = {}
        self._changed: set[str] = set()
        self._keys: list[str] = []  # endpoint index -> key
        self._index: dict[str, int] = {}
        self._pairs = KeyTable(1 << 30, {"calls": np.int64, "arrival": np.int64})  # (endpoint, caller) -> calls, first row
        self._arrived = 0  # rows folded so far: the arrival order of callers

    def status(self, ep: _Endpoint) -> str:
        """The endpoint's spec status (see module docstring)."""
        status = self._spec_status(ep)
        return "dormant" if ep.woke_from_dormancy and status != "deprecated" else status

    def _spec_status(self, ep: _Endpoint) -> str:
        """What the specs say of the endpoint: declared, deprecated, shadow or undeclared."""
        spec = self.declared.get(ep.service) or self.declared.get(f"{ep.namespace}/{ep.service}")
        if spec is None:
            return "undeclared"
        if (ep.method, ep.template) not in spec:
            return "shadow"
        return "deprecated" if spec[(ep.method, ep.template)] else "declared"

    def probed(self, ep: _Endpoint) -> bool:
        """Whether the endpoint is in no spec and only a probe (an unanswered traversal path, or never answered: module docstring)."""
        return self._path_kind(ep) == "probed"

    def traversal_answered(self, ep: _Endpoint) -> bool:
        """Whether the endpoint is in no spec and a traversal path that got a success answer: a traversal that worked."""
        return self._path_kind(ep) == "traversal-answered"

    def _path_kind(self, ep: _Endpoint) -> str:
        """``endpoint``, ``probed`` or ``traversal-answered`` (module docstring)."""
        if self._spec_status(ep) not in ("shadow", "undeclared"):
            return "endpoint"
        if is_traversal(ep.template):
            return "traversal-answered" if ep.succeeded else "probed"
        return "endpoint" if ep.answered else "probed"

    def update(self, table: pa.Table) -> None:
        """Fold one batch of summaries (Arrow table with the ``RequestSummary`` schema) in.

        Vectorised: each row gets its endpoint's number in the batch; counts per
        endpoint and per (endpoint, caller | status | auth type | data type) are numpy
        passes; Python touches each endpoint and each of its statuses and types once.
        """
        if table.num_rows == 0:
            return
        fold = self._endpoints(table)
        self._callers(fold)
        self._statuses(fold)
        self._answers(fold)
        self._auth_types(fold)
        self._data_types(fold)
        self._arrived += table.num_rows

    def _endpoints(self, table: pa.Table) -> _Fold:
        """Each row's endpoint; calls, first/last seen and dormancy per endpoint (a new one is named after its first row)."""
        local, found, names = self._endpoint_of_rows(table)
        times = np.asarray(column(table, "time").to_numpy(zero_copy_only=False), dtype=np.float64)
        k = len(found)
        low, high = np.full(k, np.inf), np.full(k, -np.inf)
        np.minimum.at(low, local, times)
        np.maximum.at(high, local, times)
        keys, counts, first = [self._keys[i] for i in found.tolist()], np.bincount(local, minlength=k).tolist(), None
        eps = []
        for j, (key, lo, hi, calls) in enumerate(zip(keys, low.tolist(), high.tolist(), counts)):
            ep = self.endpoints.get(key)
            if ep is None:
                first = cols.first_rows(local, k) if first is None else first
                ep = self.endpoints[key] = _Endpoint(*names(int(first[j])), first_seen=lo, last_seen=hi, index=int(found[j]))
                ep.woke_from_dormancy = hi - lo >= self.dormant_after_s and _wakes(times[local == j], None, self.dormant_after_s)
            elif not ep.woke_from_dormancy and hi - ep.last_seen >= self.dormant_after_s:
                ep.woke_from_dormancy = _wakes(times[local == j], ep.last_seen, self.dormant_after_s)
            ep.calls += calls
            ep.first_seen, ep.last_seen = min(ep.first_seen, lo), max(ep.last_seen, hi)
            self._changed.add(key)
            eps.append(ep)
        return _Fold(table, local, eps)

    def _endpoint_of_rows(self, table: pa.Table) -> tuple[_I, _I, Callable[[int], tuple[str, str | None, str, str]]]:
        """(each row's endpoint in the batch, their numbers in the inventory, the (service, namespace, method, template) of a row).

        An endpoint is (namespace, service, method, template), keyed as ``EndpointRecord.key``: ``api`` in ``shop`` and
        ``api`` in ``billing`` are two. (namespace, service) pairs are ranked first, so the combined code stays below
        the product of three batch-sized counts, as it was before the namespace took part."""
        dest, method, template = column(table, "destination"), column(table, "method"), column(table, "path_template")
        for name, values in (("method", method), ("path_template", template)):
            if values.null_count:
                raise ValueError(f"Inventory.update: required column {name!r} has {values.null_count} nulls")
        s, s_names = cols.encode(dest.field("service"))
        n, n_names = cols.encode(dest.field("namespace"))
        m, methods = cols.encode(method)
        t, templates = cols.encode(template)
        services, namespaces = [v or "-" for v in s_names] + ["-"], [v or None for v in n_names] + [None]
        pairs, d = cols.codes(n * len(services) + s, len(namespaces) * len(services))
        nm, nt = len(methods), len(templates)
        combos, local = cols.codes((d * nm + m) * nt + t, len(pairs) * nm * nt)
        dests = [(namespaces[p // len(services)], services[p % len(services)]) for p in pairs.tolist()]
        keys = [EndpointRecord.key_of(dests[c // (nm * nt)][0], dests[c // (nm * nt)][1], methods[c // nt % nm], templates[c % nt])
                for c in combos.tolist()]
        found = np.array([self._index_of(key) for key in keys], dtype=np.intp)
        if len(np.unique(found)) < len(found):  # two combinations name one endpoint (service or namespace "" and null)
            found, local = cols.codes(found[local], len(self._keys))

        def names(row: int) -> tuple[str, str | None, str, str]:
            return services[s[row]], dest.field("namespace")[row].as_py(), methods[m[row]], templates[t[row]]
        return local, found, names

    def _index_of(self, key: str) -> int:
        """The endpoint's number in this inventory (a new key gets the next one)."""
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self._keys)
            self._keys.append(key)
        return i

    def _callers(self, fold: _Fold) -> None:
        """Calls per (endpoint, caller): known pairs counted, new ones admitted up to the cap in order of arrival."""
        eps = fold.endpoints
        actors = cols.actors(fold.table)
        width = len(actors.hashes)
        pairs, pair_of_row = cols.codes(fold.local * width + actors.of_row, len(eps) * width)
        calls = np.bincount(pair_of_row, minlength=len(pairs))
        arrival = self._arrived + cols.first_rows(pair_of_row, len(pairs))
        group, actor = pairs // width, pairs % width
        numbers = np.array([ep.index for ep in eps], dtype=np.uint64)
        keys = pair_key(numbers[group], actors.hashes[actor])
        slots = self._pairs.find(keys)
        admitted = self._admit(slots < 0, group, arrival, eps)
        slots[admitted] = self._pairs.upsert(keys[admitted])[0]
        table = self._pairs.cols  # read after the upsert: growing reallocates
        table["arrival"][slots[admitted]] = arrival[admitted]
        touched = slots >= 0
        table["calls"][slots[touched]] += calls[touched]
        for ep, n in zip(eps, np.bincount(group[admitted], minlength=len(eps)).tolist()):
            ep.callers += n
        self._top(eps, slots[touched], group[touched], actor[touched], actors)

    @staticmethod
    def _admit(new: npt.NDArray[np.bool_], group: _I, arrival: _I, eps: list[_Endpoint]) -> npt.NDArray[np.bool_]:
        """Which new pairs an endpoint admits: while it has fewer than ``_CALLER_CAP`` callers, in order of arrival."""
        room = np.array([_CALLER_CAP - ep.callers for ep in eps], dtype=np.intp)
        if (np.bincount(group[new], minlength=len(eps)) <= room).all():
            return new
        order = np.flatnonzero(new)
        order = order[np.argsort(arrival[order], kind="stable")]
        admitted = np.zeros(len(new), dtype=bool)
        admitted[order[cols.rank_in_group(group[order]) < room[group[order]]]] = True
        return admitted

    def _top(self, eps: list[_Endpoint], slots: _I, group: _I, actor: _I, actors: cols.Actors) -> None:
        """Each endpoint's top callers again, from its old top and the pairs this batch counted (calls only grow)."""
        calls, arrival = self._pairs.cols["calls"], self._pairs.cols["arrival"]
        held = [(slot, j, label) for j, ep in enumerate(eps) for slot, label in ep.top]
        held_slots = np.array([h[0] for h in held], dtype=np.intp)
        held_group = np.array([h[1] for h in held], dtype=np.intp)
        floor = np.full(len(eps), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(floor, held_group, calls[held_slots])
        floor[np.bincount(held_group, minlength=len(eps)) < _TOP_CALLERS] = 0  # a pair below all of a full top stays out
        keep = calls[slots] >= floor[group]
        slots, group, actor = slots[keep], group[keep], actor[keep]
        counted = np.zeros(self._pairs.n, dtype=bool)
        counted[slots] = True
        kept_held = np.flatnonzero(~counted[held_slots])  # a held caller counted now is a candidate already
        cand_slots, cand_group = np.concatenate([slots, held_slots[kept_held]]), np.concatenate([group, held_group[kept_held]])
        order = np.lexsort((arrival[cand_slots], -calls[cand_slots], cand_group))  # best first: most calls, then earliest arrival
        winners = order[cols.rank_in_group(cand_group[order]) < _TOP_CALLERS]
        fresh = winners[winners < len(slots)]
        labels = dict(zip(fresh.tolist(), actors.labels(actor[fresh])))
        tops: dict[int, list[tuple[int, str]]] = {}
        for w, g, slot in zip(winners.tolist(), cand_group[winners].tolist(), cand_slots[winners].tolist()):
            tops.setdefault(g, []).append((slot, labels[w] if w < len(slots) else held[kept_held[w - len(slots)]][2]))
        for g, top in tops.items():
            eps[g].top = top

    def _statuses(self, fold: _Fold) -> None:
        """Calls per (endpoint, status); a missing status is ``none``."""
        status = column(fold.table, "status")
        values, valid = cols.ints(status, 0), cols.validity(status)
        seen = values if valid is None else values[valid]
        low, high = (int(seen.min()), int(seen.max())) if len(seen) else (0, 0)
        if high - low < 4096:  # HTTP statuses: each value is its own code, 0 is none
            codes, labels = values - (low - 1), ["none"] + [str(v) for v in range(low, high + 1)]
            if valid is not None:
                codes[~valid] = 0
        else:
            codes, names = cols.encode(status)
            labels = [str(v) for v in names] + ["none"]
        for j, v, n in cols.present_pairs(fold.local, codes, len(fold.endpoints), len(labels)):
            statuses = fold.endpoints[j].statuses
            statuses[labels[v]] = statuses.get(labels[v], 0) + n

    def _answers(self, fold: _Fold) -> None:
        """Which endpoints got an answer showing they exist, and which a success (2xx): ``inventorycolumns.answers``."""
        k = len(fold.endpoints)
        for mask, flag in zip(cols.answers(fold.table), ("answered", "succeeded")):
            for j in np.flatnonzero(np.bincount(fold.local[mask], minlength=k)).tolist():
                setattr(fold.endpoints[j], flag, True)

    def _auth_types(self, fold: _Fold) -> None:
        """The auth types each endpoint was called with (empty ones are none)."""
        values, names = cols.encode(column(fold.table, "auth_type"))
        for j, v, _ in cols.present_pairs(fold.local, values, len(fold.endpoints), len(names) + 1):
            if v < len(names) and names[v]:
                fold.endpoints[j].auth_types.add(names[v])

    def _data_types(self, fold: _Fold) -> None:
        """The sensitive-data types each endpoint returned (a count above zero)."""
        sensitive = column(fold.table, "sensitive")
        if sensitive.null_count == len(sensitive):
            return
        offsets = cols.ints(sensitive.offsets, 0)
        start, size = int(offsets[0]), int(offsets[-1] - offsets[0])  # the entries of a slice: absolute offsets into the children
        positive = cols.ints(sensitive.items.slice(start, size), 0) > 0
        if not positive.any():
            return
        types, names = cols.encode(sensitive.keys.slice(start, size))
        rows = np.repeat(fold.local, np.diff(offsets))
        for j, v, _ in cols.present_pairs(rows[positive], types[positive], len(fold.endpoints), len(names) + 1):
            fold.endpoints[j].data_types.add(names[v])

    def record(self, key: str) -> EndpointRecord:
        """The published record of one endpoint."""
        ep = self.endpoints[key]
        return EndpointRecord(service=ep.service, namespace=ep.namespace, method=ep.method, path_template=ep.template,
                              calls=ep.calls, callers=ep.callers, top_callers=[caller for _, caller in ep.top],
                              auth_types=sorted(ep.auth_types), data_types=sorted(ep.data_types), statuses=dict(sorted(ep.statuses.items())),
                              first_seen=ep.first_seen, last_seen=ep.last_seen, spec_status=self.status(ep), probed=self.probed(ep),
                              traversal_answered=self.traversal_answered(ep))

    def take_changed(self) -> list[EndpointRecord]:
        """Records of the endpoints changed since the last call."""
        changed, self._changed = self._changed, set()
        return [self.record(k) for k in sorted(changed)]

    def zombie_keys(self) -> frozenset[str]:
        """``service METHOD /template`` of endpoints whose calls are retired-API hits (deprecated, or dormant and an endpoint:
        neither probed nor an answered traversal).

        Without the namespace, unlike the endpoint keys: the processor matches these against each call's
        ``service METHOD /template`` (``retired_endpoints``)."""
        out = {f"{svc.rpartition('/')[2]} {m} {t}" for svc, spec in self.declared.items() for (m, t), dep in spec.items() if dep}
        out.update(f"{ep.service} {ep.method} {ep.template}" for ep in self.endpoints.values() if ep.woke_from_dormancy and self._path_kind(ep) == "endpoint")
        return frozenset(out)
