"""Column helpers of the inventory (``streams.inventory``): a batch's arrays as integer codes, and its callers.

Pure numpy/pyarrow over one batch: ``encode`` gives each row an index into the distinct values, ``codes``
renumbers combined codes densely, ``first_rows``/``present_pairs``/``rank_in_group`` answer per-group questions
without a Python loop, ``actors`` names each row's caller (``workload or ip | principal``, as
``ingest.actor_key``) with a 64-bit hash that identifies its text, and ``answers`` tells which rows' statuses show
their endpoint exists (``streams.inventory`` says which and why).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from streams.batch import column, hash64
from streams.keytable import pair_key

__all__ = ["Actors", "actors", "answers", "codes", "encode", "first_rows", "ints", "present_pairs", "rank_in_group", "validity"]

_I = npt.NDArray[np.intp]
_U = npt.NDArray[np.uint64]
_B = npt.NDArray[np.bool_]

#: Kubeward's own refusals (the shim's recorded decision): the call never reached the API
KUBEWARD_REFUSALS = ("deny", "throttle")
#: statuses that say "no such endpoint" (or method): no evidence that it exists
NOT_ROUTED = (404, 405, 410, 501)


def validity(values: pa.Array) -> npt.NDArray[np.bool_] | None:
    """Which rows are not null (``None``: all of them), read from the validity bitmap."""
    if not values.null_count:
        return None
    bits = np.unpackbits(np.frombuffer(values.buffers()[0], dtype=np.uint8), bitorder="little")
    return bits[values.offset : values.offset + len(values)].astype(bool)


def ints(values: pa.Array, null: int) -> _I:
    """An integer Arrow array as numpy, nulls as ``null`` (read from its buffers: cheaper than an Arrow call)."""
    out = np.frombuffer(values.buffers()[1], dtype=values.type.to_pandas_dtype())[values.offset : values.offset + len(values)].astype(np.intp)
    valid = validity(values)
    if valid is not None:
        out[~valid] = null
    return out


def encode(values: pa.Array) -> tuple[_I, list[Any]]:
    """(each row's index into the distinct values, the distinct values in order of first row); null rows get ``len(distinct)``."""
    encoded = pc.dictionary_encode(values)
    names = encoded.dictionary.to_pylist()
    return ints(encoded.indices, len(names)), names


def codes(codes: _I, space: int) -> tuple[_I, _I]:
    """(the distinct codes ascending, each row's rank among them) of integer codes in ``[0, space)``."""
    if space <= 16 * len(codes) + 65536:  # dense: a mark and a running count, no sort
        seen = np.zeros(space, dtype=bool)
        seen[codes] = True
        uniq = np.flatnonzero(seen)
        rank = np.empty(space, dtype=np.intp)
        rank[uniq] = np.arange(len(uniq))
        return uniq, rank[codes]
    uniq, inverse = np.unique(codes, return_inverse=True)
    return uniq, inverse.reshape(-1)


def first_rows(groups: _I, k: int) -> _I:
    """The first row of each of ``k`` groups (every group has a row)."""
    first = np.full(k, len(groups), dtype=np.intp)
    np.minimum.at(first, groups, np.arange(len(groups), dtype=np.intp))
    return first


def present_pairs(rows: _I, values: _I, k: int, width: int) -> Iterable[tuple[int, int, int]]:
    """(group, value, rows) of each (group, value) that occurs, over ``k`` groups and values in ``[0, width)``."""
    found, of_row = codes(rows * width + values, k * width)
    return zip((found // width).tolist(), (found % width).tolist(), np.bincount(of_row, minlength=len(found)).tolist())


def rank_in_group(groups: _I) -> _I:
    """Each element's rank among the earlier elements of its group."""
    order = np.argsort(groups, kind="stable")
    ranked = groups[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    rank = np.empty(len(groups), dtype=np.intp)
    rank[order] = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return rank


@dataclass
class Actors:
    """The distinct callers of a batch: each row's caller, each caller's hash, and their texts (``who|principal``)."""

    of_row: _I
    hashes: _U
    whos: list[str]
    principals: pa.Array
    who_of: _I
    principal_of: _I

    def labels(self, actors: _I) -> list[str]:
        """``workload or ip | principal`` of each caller (as ``ingest.actor_key``)."""
        principals = self.principals.take(pa.array(self.principal_of[actors])).to_pylist()
        return [f"{self.whos[w]}|{p}" for w, p in zip(self.who_of[actors].tolist(), principals)]


def _whos(source: pa.Array) -> tuple[_I, list[str]]:
    """Each row's source (workload, else ip, else ``-``; empty counts as absent) as an index into distinct texts."""
    of_row, names = encode(source.field("workload"))
    who = [x or None for x in names] + [None]
    absent = np.flatnonzero(np.array([x is None for x in who], dtype=bool)[of_row])
    if len(absent):
        ips, ip_names = encode(source.field("ip").take(pa.array(absent)))
        of_row = of_row.copy()
        of_row[absent] = len(who) + ips
        who += [x or None for x in ip_names] + [None]
    texts = [x or "-" for x in who]
    first: dict[str, int] = {}
    canonical = np.array([first.setdefault(x, i) for i, x in enumerate(texts)], dtype=np.intp)
    return canonical[of_row], texts


def _principals(values: pa.Array) -> tuple[_I, pa.Array]:
    """Each row's principal (empty or null: ``-``) as an index into distinct texts (the last one is ``-``)."""
    encoded = pc.dictionary_encode(values)
    texts = pa.concat_arrays([encoded.dictionary, pa.array(["-"], encoded.dictionary.type)])
    dash = len(texts) - 1
    of_row = ints(encoded.indices, dash)
    same = [i for i in (pc.index(encoded.dictionary, "").as_py(), pc.index(encoded.dictionary, "-").as_py()) if i >= 0]
    if same:  # "", null and "-" are one principal
        remap = np.arange(len(texts), dtype=np.intp)
        remap[same] = dash
        of_row = remap[of_row]
    return of_row, texts


def actors(table: pa.Table) -> Actors:
    """The batch's callers; a caller's hash is that of its text split at the first ``|`` (the text identifies it)."""
    who_of_row, whos = _whos(column(table, "source"))
    p_of_row, principals = _principals(column(table, "principal"))
    width = len(principals)
    combos, of_row = codes(who_of_row * width + p_of_row, len(whos) * width)
    actors = Actors(of_row, np.zeros(0, np.uint64), whos, principals, combos // width, combos % width)
    actors.hashes = pair_key(hash64(pa.array(whos, pa.string()))[actors.who_of], hash64(principals)[actors.principal_of])
    split = np.flatnonzero(np.array(["|" in x for x in whos], dtype=bool)[actors.who_of])
    if len(split):  # "a|b" + "c" and "a" + "b|c" are the same text "a|b|c": one caller
        left, _, right = zip(*(text.partition("|") for text in actors.labels(split)))
        actors.hashes[split] = pair_key(hash64(pa.array(left, pa.string())), hash64(pa.array(right, pa.string())))
        actors.hashes, first, inverse = np.unique(actors.hashes, return_index=True, return_inverse=True)
        actors.of_row, actors.who_of, actors.principal_of = inverse.reshape(-1)[of_row], actors.who_of[first], actors.principal_of[first]
    return actors


def answers(table: pa.Table) -> tuple[_B, _B]:
    """(which rows got an answer showing their endpoint exists, which a success answer (2xx)), by status and decision.

    Answered: a status in 100-599 but ``NOT_ROUTED``, or none (unknown: the benefit of the doubt); never a call
    Kubeward refused itself (``decision`` in ``KUBEWARD_REFUSALS``), whatever its status."""
    status = column(table, "status")
    code, valid = ints(status, 0), validity(status)
    answered = (code >= 100) & (code < 600) & ~np.isin(code, NOT_ROUTED)
    succeeded = (code >= 200) & (code < 300)
    if valid is not None:
        answered |= ~valid  # a null reads as 0: no success
    if "decision" in table.column_names:
        refused = pc.fill_null(pc.is_in(column(table, "decision"), pa.array(KUBEWARD_REFUSALS)), False)
        ours = np.asarray(refused.to_numpy(zero_copy_only=False), dtype=bool)
        answered &= ~ours
        succeeded &= ~ours
    return answered, succeeded
