"""One decoded batch of summaries, the per-row view every stateful analyser of the worker reads.

``BatchView.decode(table, repeats)`` turns an Arrow batch of ``RequestSummary``
rows into numpy arrays once: the actor of each row (``workload or ip | principal``,
as ``ingest.actor_key``), times, statuses, identities as 64-bit hashes, the
destination edge, object ids and created ids as (row, hash) pairs; with the
worker's ``RepeatFilter`` (``ids``) it also marks, per row, the copy of a call
to count (``first``) and the copy whose answer to count (``answer``: the first
that carried a status, a derived outcome or the shim's refusal). Analysers
(``Enricher``: ownership, call edges, credential tables, ...) read it and return
*signals*: one float per row (``Signals``), which the feature table
(``models.features``) folds into per-key state. No analyser decodes the table again.

Hashes are stable across processes and runs (``hash64``: 64-bit, from every
byte of the string), so state written by one worker means the same to the next.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from streams.keytable import GOLD, mix, mix1
from streams.repeats import RepeatFilter

__all__ = ["SMALL_BATCH", "BatchView", "Enricher", "Signals", "column", "hash64", "list_parts", "present"]

_I = npt.NDArray[np.intp]
_F = npt.NDArray[np.float64]
_U = npt.NDArray[np.uint64]
_B = npt.NDArray[np.bool_]

#: per-row signals: name -> one float per row of the batch
Signals = dict[str, _F]
#: what a shim reports when it refused a call itself (the upstream never answered)
_REFUSALS = ("deny", "throttle")
_AUTH_FAILURE = ("auth_failure",)
#: inline findings that say nothing about the caller: a scan that overran its time budget (the shim's
#: ``enforcement.inspection.OVER_BUDGET``; a loaded machine makes ordinary requests overrun it)
#: inline findings that are not an attack payload: a scan cut at its budget, a body refused for its size, and the shim's
#: fast-tier local verdicts (enforcement.fasttier: the worker draws its own conclusions from the calls they stand on)
_NOT_ATTACKS = ("inspection-budget", "oversize", "fast-tier:enumeration", "fast-tier:inline-repeat")



def _offsets(arr: pa.Array) -> npt.NDArray[np.int64]:
    buf = arr.buffers()[1]
    width = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_list(arr.type) else np.int32
    return np.frombuffer(buf, dtype=width)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)


def hash64(values: pa.Array, memo: bool = True) -> _U:
    """A 64-bit hash of every string (null -> 0), vectorised over 8-byte words of the whole string.

    A string's hash depends on its bytes only (not on the other strings of the array).
    ``memo``: remember the hashes of small arrays' strings (for columns that
    repeat: actors, services, edges; pass False for unique ones such as request ids).

    >>> a = hash64(pa.array(["user-1", "user-2", None, "user-1"]))
    >>> bool(a[0] == a[3]), bool(a[0] != a[1]), int(a[2])
    (True, True, 0)
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = pc.cast(values, pa.string())
    if n <= SMALL_BATCH:
        if memo:
            return _hash_memo(values.to_pylist())
        return _hash_few(values) if n <= _SMALL else _hash_strings(values)
    encoded = pc.dictionary_encode(values)  # columns repeat (services, edges, principals): hash each distinct string once
    if len(encoded.dictionary) == 0:  # every value null
        return np.zeros(n, dtype=np.uint64)
    if len(encoded.dictionary) * 2 > n:
        return _hash_strings(values)
    distinct = encoded.dictionary
    hashed = _hash_memo(distinct.to_pylist()) if len(distinct) <= SMALL_BATCH else _hash_strings(distinct)
    out = hashed[np.asarray(encoded.indices.fill_null(0), dtype=np.intp)]
    if values.null_count:
        out[np.asarray(values.is_null())] = 0
    return out


#: batches (and arrays) up to this many rows take plain-Python paths where numpy's and Arrow's cost per call
#: would dominate: the memo of string hashes, actor keys, the processor's source keys
SMALL_BATCH = 512
#: strings remembered at most (the memo is emptied when full: live traffic repeats actors, services and edges)
_MEMO_CAP = 1 << 15
_MEMO: dict[str | None, int] = {None: 0}


def _hash_memo(texts: list[str | None]) -> _U:
    """``hash64`` of a few strings, remembering each string's hash (a pure function: the memo only saves work)."""
    memo = _MEMO
    got = [memo.get(t) for t in texts]
    if None in got:
        missing = [t for t in dict.fromkeys(t for t, h in zip(texts, got) if h is None) if t is not None]
        fresh = _hash_few(pa.array(missing, pa.string())) if len(missing) <= _SMALL else _hash_strings(pa.array(missing, pa.string()))
        if len(memo) + len(missing) > _MEMO_CAP:
            memo.clear()
            memo[None] = 0
        found = {t: int(h) for t, h in zip(missing, fresh.tolist())}
        memo.update((t, h) for t, h in found.items() if len(t) * 4 <= _LONG or len(t.encode()) <= _LONG)  # bytes, as _LONG
        got = [found[t] if h is None and t is not None else h for t, h in zip(texts, got)]
    return np.array(got, dtype=np.uint64)


_SMALL = 64
#: strings longer than this (bytes) are hashed with BLAKE2b one by one, not in the batch's byte matrix
_LONG = 256
_M64 = (1 << 64) - 1
_GOLD = int(GOLD)


def _hash_long(data: bytes) -> int:
    """The hash of a string longer than ``_LONG`` bytes (BLAKE2b: a long string must not inflate the batch's byte matrix)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=b"kw-hash64").digest(), "little") or 1


def _hash_few(values: pa.Array) -> _U:
    """``hash64`` of a few strings in plain Python: the same values, without numpy's fixed cost per call."""
    out = np.zeros(len(values), dtype=np.uint64)
    for i, text in enumerate(values.to_pylist()):
        if text is None:
            continue
        data = text.encode()
        length = len(data)
        if length > _LONG:
            out[i] = _hash_long(data)
            continue
        h = (length * _GOLD) & _M64
        for w in range(max((length + 7) // 8, 1)):
            word = int.from_bytes(data[w * 8 : w * 8 + 8], "little")
            h = (mix1(h ^ word) + w + 1) & _M64
        out[i] = mix1(h) or 1
    return out


def _hash_strings(values: pa.Array) -> _U:
    """``hash64`` without the dictionary shortcut."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = _offsets(values)
    starts, lengths = offsets[:-1], np.diff(offsets)
    long = lengths > _LONG
    if long.any():
        out = np.zeros(n, dtype=np.uint64)
        mask = pa.array(long)
        out[~long] = _hash_strings(values.filter(pc.invert(mask)))
        out[long] = [_hash_long(text.encode()) for text in values.filter(mask).to_pylist()]
        return out
    data_buf = values.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    words = max(int((lengths.max() + 7) // 8), 1)
    span = np.arange(words * 8)
    idx = starts[:, None] + span[None, :]
    padded = np.concatenate([data, np.zeros(words * 8, np.uint8)])
    matrix = padded[idx]
    matrix[span[None, :] >= lengths[:, None]] = 0
    w64 = matrix.view("<u8").reshape(n, words)
    with np.errstate(over="ignore"):
        h = lengths.astype(np.uint64) * GOLD
        for w in range(words):
            if w and (lengths > w * 8).all():
                h = mix(h ^ w64[:, w]) + np.uint64(w + 1)
                continue
            active = lengths > w * 8 if w else np.ones(n, dtype=bool)
            h[active] = mix(h[active] ^ w64[active, w]) + np.uint64(w + 1)
        h = mix(h)
    h[h == 0] = 1  # 0 is "absent"
    if values.null_count:
        h[np.asarray(values.is_null())] = 0
    return h


def column(table: pa.Table, name: str) -> pa.Array:
    """One column as a single array (chunks combined only when there are several)."""
    col = table[name]
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def list_parts(values: pa.Array) -> tuple[_I, pa.Array]:
    """(row index of each element, the flat elements) of a list or map array."""
    if isinstance(values, pa.MapArray):
        values = pa.ListArray.from_arrays(values.offsets, values.items)
    offsets = _offsets(values) if len(values) else np.zeros(1, np.int64)
    parents = np.repeat(np.arange(len(values), dtype=np.intp), np.diff(offsets))
    return parents, values.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def present(values: pa.Array) -> pa.Array:
    """Empty strings count as absent, as in ``ingest.actor_key`` (``x or '-'``)."""
    if not len(values):
        return values
    if len(values) <= SMALL_BATCH:
        has_empty = "" in values.to_pylist()
    else:
        has_empty = bool(pc.any(pc.equal(values, "")).as_py())
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values) if has_empty else values


def _numbers(values: pa.Array, dtype: Any) -> Any:
    if values.null_count:
        values = values.fill_null(False if pa.types.is_boolean(values.type) else 0)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype)


def _field(struct: pa.Array, name: str, n: int) -> pa.Array:
    if name in {struct.type.field(i).name for i in range(struct.type.num_fields)}:
        return present(struct.field(name))
    return pa.nulls(n, pa.string())


def _optional(table: pa.Table, name: str, n: int, kind: pa.DataType = pa.string()) -> pa.Array:
    return column(table, name) if name in table.column_names else pa.nulls(n, kind)


def _is_in(values: pa.Array, choices: tuple[str, ...]) -> _B:
    """Per row: the string is one of ``choices`` (null: False)."""
    if values.null_count == len(values):
        return np.zeros(len(values), dtype=bool)
    if len(values) <= SMALL_BATCH:
        return np.array([v in choices for v in values.to_pylist()], dtype=bool)
    return np.asarray(pc.is_in(values, value_set=pa.array(choices, pa.string())).fill_null(False), dtype=bool)


def _identities(workload: pa.Array, ip: pa.Array, principal: pa.Array, service: pa.Array, method: pa.Array,
                template: pa.Array) -> tuple[list[str], pa.Array, _I, _U]:
    """(unique actor keys ``workload or ip | principal``, the same as Arrow, each row's actor, each row's edge hash).

    Small batches are built in plain Python (a dozen Arrow calls cost more than the rows); both ways give the same
    keys in first-seen order and the same hashes.
    """
    if len(workload) <= SMALL_BATCH:
        keys = [f"{w or i or '-'}|{p or '-'}" for w, i, p in zip(workload.to_pylist(), ip.to_pylist(), principal.to_pylist())]
        index: dict[str, int] = {}
        codes = [index.setdefault(k, len(index)) for k in keys]
        actors = list(index)
        edges = [f"{s} {'-' if m is None else m} {'-' if t is None else t}" for s, m, t in zip(service.to_pylist(), method.to_pylist(), template.to_pylist())]
        return actors, pa.array(actors, pa.string()), np.array(codes, dtype=np.intp), _hash_memo(edges)  # type: ignore[arg-type]
    source_id = pc.coalesce(workload, ip, "-")
    encoded = pc.dictionary_encode(pc.binary_join_element_wise(source_id, principal.fill_null("-"), "|"))
    edge = pc.binary_join_element_wise(service, method.fill_null("-"), template.fill_null("-"), " ")
    return encoded.dictionary.to_pylist(), encoded.dictionary, np.asarray(encoded.indices, dtype=np.intp), hash64(edge)


def _has(values: pa.Array) -> _B:
    """Per row: a value is there (null: False)."""
    if not values.null_count:
        return np.ones(len(values), dtype=bool)
    if values.null_count == len(values):
        return np.zeros(len(values), dtype=bool)
    return np.asarray(values.is_valid(), dtype=bool)


def _has_rows(rows: _I, n: int) -> _B:
    out = np.zeros(n, dtype=bool)
    out[rows] = True
    return out


def _counted(table: pa.Table, n: int, repeats: _B | None, ids: RepeatFilter | None, answered: _B) -> tuple[_B, _B]:
    """(``first``, ``answer``) of a batch (see ``BatchView``); ``answered``: the row carries its call's answer."""
    if ids is not None:
        reporters = column(table, "reporter") if "reporter" in table.column_names else pa.nulls(n, pa.string())
        again, answer_again = ids.judge(hash64(pc.cast(column(table, "id"), pa.string()), memo=False),
                                        hash64(pc.cast(reporters, pa.string())), answered)
        return ~again, answered & (~again | ~answer_again)  # a row that counts a call counts the answer it carries
    first = np.ones(n, dtype=bool) if repeats is None else ~repeats
    return first, first


@dataclass
class BatchView:
    """Per-row arrays of one decoded batch (see the module docstring). Read-only by convention.

    ``status`` is the upstream's answer: 0 when unknown, and for calls the shim refused itself (its
    ``decision`` is ``deny`` or ``throttle``), so a refusal never counts as a denial or a failed login.
    Identity: ``actors`` (unique actor keys of the batch; ``actor_keys`` the same as Arrow), ``actor_of_row``;
    ``principal`` / ``principal_hash`` (0 = none), ``is_service`` (no principal),
    ``source_ip`` / ``source_ip_hash``, ``source_workload``, ``external`` (caller
    outside the cluster). Call: ``time``, ``status`` (0 = unknown), ``method``,
    ``template``, ``service`` (destination), ``service_hash``, ``edge_hash``
    (service + method + template), ``dest_external``, ``dest_host``, ``first``
    (not a second reporter's copy of a call already counted: count requests with it), ``answer`` (the copy of the call
    whose answer counts: the first that carried a status, a derived outcome or the shim's own refusal; a shim reports
    an allowed call before the upstream answers, so its copy counts the request and the access log's the answer:
    count status-derived signals with it; ``first`` when the batch was decoded without the filter), ``auth_failed``
    (401 or a derived ``auth_failure`` outcome), ``response_bytes``,
    ``request_bytes``, ``sensitive`` (values returned, all types), ``inline``
    (inline findings on the call, but for an inspection that overran its time budget), ``records`` (object ids the answer carried),
    ``credential_subject`` / ``credential_subject_hash`` (the account a login
    named, hashed; 0 = none). Objects: ``object_row`` / ``object_hash`` (one entry
    per object id touched), ``created_row`` / ``created_hash`` (ids a creating call
    got back). ``table`` is the batch itself for anything else.
    """

    table: pa.Table
    n: int
    actors: list[str]
    actor_keys: pa.Array
    actor_of_row: _I
    time: _F
    status: npt.NDArray[np.int64]
    first: _B
    answer: _B
    principal: pa.Array
    principal_hash: _U
    is_service: _B
    source_ip: pa.Array
    source_ip_hash: _U
    source_workload: pa.Array
    external: _B
    method: pa.Array
    template: pa.Array
    service: pa.Array
    service_hash: _U
    edge_hash: _U
    dest_external: _B
    dest_host: pa.Array
    auth_failed: _B
    response_bytes: _F
    request_bytes: _F
    sensitive: _F
    inline: _F
    records: _F
    credential_subject_hash: _U
    object_row: _I
    object_hash: _U
    created_row: _I
    created_hash: _U

    @classmethod
    def decode(cls, table: pa.Table, repeats: _B | None = None, ids: RepeatFilter | None = None) -> BatchView:
        """Decode an Arrow batch with the ``RequestSummary`` columns (optional ones may be missing).

        ``ids``: judge the rows' request ids with this filter (``first`` and ``answer``; it learns the batch);
        else ``repeats`` (rows already counted) gives ``first`` and ``answer`` alike; neither: every row counts.
        """
        n = table.num_rows
        source, destination = column(table, "source"), column(table, "destination")
        workload, ip = _field(source, "workload", n), _field(source, "ip", n)
        principal = present(column(table, "principal"))
        service = destination.field("service").fill_null("-")
        method, template = column(table, "method"), column(table, "path_template")
        actors, actor_keys, actor_of_row, edge_hash = _identities(workload, ip, principal, service, method, template)
        obj_row, obj_values = list_parts(column(table, "object_ids"))
        made_row, made_values = list_parts(_optional(table, "object_ids_created", n, pa.list_(pa.string())))
        sens_row, sens_values = list_parts(column(table, "sensitive"))
        inline_row, inline_values = list_parts(column(table, "inline_findings"))
        inline_row = inline_row[~_is_in(inline_values, _NOT_ATTACKS)] if len(inline_row) else inline_row
        status = _numbers(column(table, "status"), np.int64)
        refused = _is_in(_optional(table, "decision", n), _REFUSALS)
        outcome = _optional(table, "outcome", n)
        failed = _is_in(outcome, _AUTH_FAILURE)
        first, answer = _counted(table, n, repeats, ids, (status != 0) | refused | _has(outcome) | _has_rows(made_row, n))
        status = np.where(refused, 0, status)  # a shim's own refusal is not the upstream's answer
        external = np.asarray(_numbers(source.field("external"), bool), dtype=bool) if "external" in {f.name for f in source.type} else np.zeros(n, bool)
        dest_external = np.asarray(_numbers(destination.field("external"), bool), dtype=bool) if "external" in {f.name for f in destination.type} else np.zeros(n, bool)
        return cls(
            table=table,
            n=n,
            actors=actors,
            actor_keys=actor_keys,
            actor_of_row=actor_of_row,
            time=_numbers(column(table, "time"), np.float64),
            status=status,
            first=first,
            answer=answer,
            principal=principal,
            principal_hash=hash64(principal),
            is_service=np.asarray(principal.is_null(), dtype=bool),
            source_ip=ip,
            source_ip_hash=hash64(ip),
            source_workload=workload,
            external=external,
            method=method,
            template=template,
            service=service,
            service_hash=hash64(service),
            edge_hash=edge_hash,
            dest_external=dest_external,
            dest_host=_field(destination, "host", n),
            auth_failed=(status == 401) | failed,
            response_bytes=_numbers(column(table, "response_bytes"), np.float64),
            request_bytes=_numbers(column(table, "request_bytes"), np.float64),
            sensitive=np.bincount(sens_row, weights=_numbers(sens_values, np.float64), minlength=n).astype(np.float64),
            inline=np.bincount(inline_row, minlength=n).astype(np.float64),
            records=np.bincount(obj_row, minlength=n).astype(np.float64),
            credential_subject_hash=hash64(_optional(table, "credential_subject", n)),
            object_row=obj_row,
            object_hash=hash64(obj_values, memo=False),
            created_row=made_row,
            created_hash=hash64(made_values, memo=False),
        )


class Enricher(Protocol):
    """A stateful analyser of the worker: reads each batch, keeps its own state, returns per-row signals.

    ``signals`` names what ``enrich`` returns (each name is declared once, in
    ``models.features.SIGNALS``). ``enrich`` is called once per batch, in event
    order, after ``BatchView.decode``; it must be vectorised (no Python work per
    row beyond a dictionary probe) and bounded in memory (evict by size, oldest
    first, and count it). ``export``/``restore`` carry its state through the
    changelog (bytes; ``restore(export())`` gives the same answers).
    """

    name: str
    signals: tuple[str, ...]

    def enrich(self, batch: BatchView) -> Signals:
        """Per-row signals of this batch (every name in ``signals``, each an array of ``batch.n`` floats)."""
        ...

    def export(self) -> bytes:
        """The state, for the changelog."""
        ...

    def restore(self, blob: bytes) -> None:
        """Load state written by ``export``."""
        ...
