"""The ownership enricher's plain-Python path for small batches (streams.ownsmall) equals the vectorised path."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from ingest.envelope import decode_message, encode_rows, summary_row
from ingest.idblocks import object_blocks
from streams.batch import BatchView
from streams.keytable import KeyTable, pair_key
from streams.ownership import OwnershipConfig, OwnershipEnricher
from streams.keytable import pair_key1
from streams.ownsmall import pairs1

T0 = 1.8e9
KEY = b"test-key"


def _row(rng: random.Random, t: float, i: int) -> dict[str, Any]:
    """A random call: users, support agents, probers and services; single reads, pages, creations, refusals."""
    principal = rng.choice([None, *[f"u{k}" for k in range(12)], "agent", "prober"])
    service = rng.choice(["orders", "invoices"])
    status, created, method = rng.choice([200, 200, 200, 201, 403, 404, 500]), [], "GET"
    if rng.random() < 0.1:
        ids, created, status, method = [], [str(rng.randrange(1000, 1100))], 201, "POST"
    elif rng.random() < 0.15:
        ids = [str(rng.randrange(1000, 1100)) for _ in range(rng.randint(2, 30))]
    else:
        ids = [str(rng.randrange(1000, 1100)) if rng.random() < 0.9 else f"x{rng.randrange(20)}"]
    template = "/orders/{id}" if len(ids) == 1 else "/orders"
    return summary_row(id=f"r{i}", time=T0 + t, source={"ip": "198.18.0.1", "external": True}, principal=principal,
                       destination={"service": service}, method=method, path_template=template, status=status,
                       object_ids=ids, object_ids_created=created, object_blocks=object_blocks(template, ids, KEY))


def _view(rows: list[dict[str, Any]]) -> BatchView:
    return BatchView.decode(decode_message(encode_rows(rows), 1 << 26))


def _config(small: int) -> OwnershipConfig:
    return OwnershipConfig(objects=96, pairs=160, blocks=48, confirm_gap_s=30.0, horizon_s=400.0, small_objects=small)


def _same_tables(a: OwnershipEnricher, b: OwnershipEnricher) -> None:
    for name in ("objects", "pairs", "blocks"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert ta.n == tb.n and ta.evicted == tb.evicted, name
        for col, va in ta.arrays().items():
            np.testing.assert_array_equal(va, tb.arrays()[col], err_msg=f"{name}.{col}")
        assert (tb.find(ta.keys[: ta.n]) == np.arange(ta.n)).all(), name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_path_equals_vectorised_path(seed: int) -> None:
    rng = random.Random(seed)
    vec, small = OwnershipEnricher(_config(0)), OwnershipEnricher(_config(10_000))
    t, i, seen = 0.0, 0, dict.fromkeys(vec.signals, 0.0)
    for _ in range(120):
        rows = []
        for _ in range(rng.randint(1, 25)):
            t += rng.expovariate(0.5)
            i += 1
            rows.append(_row(rng, t, i))
        view = _view(rows)
        want, got = vec.enrich(view), small.enrich(view)
        assert set(want) == set(got)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"batch ending {i}: {name}")
            seen[name] += float(np.abs(got[name]).sum())
    assert all(seen.values()), seen  # the stream exercised every signal
    _same_tables(vec, small)
    assert small.evictions["objects"] > 0 and sum(small.evictions.values()) == sum(vec.evictions.values())


def _walk_row(rng: random.Random, t: float, i: int) -> dict[str, Any]:
    """A call of a crowded stream: 150 principals (principal bits collide), walks and leaks in shared id blocks, reads
    before refusals (lost access), refused bulk calls, rows with blocks but no ids; some times equal or late."""
    principal = rng.choice([None, *[f"w{k}" for k in range(150)]])
    status, created, method = rng.choice([200, 200, 201, 403, 403, 404, 404, 500]), [], "GET"
    draw = rng.random()
    if draw < 0.1:
        ids, created, status, method = [], [str(rng.randrange(0, 300)) for _ in range(rng.randint(1, 3))], 201, "POST"
    elif draw < 0.25:
        ids = [str(rng.randrange(0, 300)) for _ in range(rng.randint(2, 30))]
    else:
        ids = [str(rng.randrange(0, 300))] if draw >= 0.3 else []
    template = "/o/{id}" if len(ids) == 1 else "/o"
    blocks = object_blocks(template, ids + created, KEY) or (object_blocks(template, [str(rng.randrange(300))], KEY) if draw < 0.3 else [])
    return summary_row(id=f"w{i}", time=T0 + t, source={"ip": "198.18.0.1"}, principal=principal,
                       destination={"service": rng.choice(["a", "b"])}, method=method, path_template=template, status=status,
                       object_ids=ids, object_ids_created=created, object_blocks=blocks)


# seed 13 (5 blocks, 50 s horizon, three refusers to crowd a block) walks no block: no whole probe, no repeat_probes
@pytest.mark.parametrize("seed", [11, 12, 14, 15, 16, 17, 18])
def test_small_path_equals_vectorised_path_under_eviction_and_restore(seed: int) -> None:
    """Tiny budgets (eviction every batch), crowded blocks, equal and late times; both restored from their exports
    mid-stream (the blob of each equals the other's)."""
    rng = random.Random(seed)
    config = {"objects": rng.choice([20, 60]), "pairs": rng.choice([30, 100]), "blocks": rng.choice([5, 20]),
              "confirm_gap_s": 20.0, "horizon_s": rng.choice([50.0, 300.0]), "crowd_principals": rng.choice([1, 2, 3])}
    vec, small = OwnershipEnricher(OwnershipConfig(**config, small_objects=0)), OwnershipEnricher(OwnershipConfig(**config, small_objects=10**6))
    t, i, seen = 0.0, 0, dict.fromkeys(vec.signals, 0.0)
    for k in range(100):
        rows = []
        for _ in range(rng.randint(1, 30)):
            t += rng.choice([0.0, 0.0, rng.expovariate(0.3)])
            i += 1
            rows.append(_walk_row(rng, t - (rng.random() * 5 if rng.random() < 0.05 else 0.0), i))
        view = _view(rows)
        want, got = vec.enrich(view), small.enrich(view)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"seed {seed} batch {k}: {name}")
            seen[name] += float(np.abs(got[name]).sum())
        _same_tables(vec, small)
        if k % 37 == 36:
            blob = vec.export()
            assert small.export() == blob
            vec, small = OwnershipEnricher(vec.config), OwnershipEnricher(small.config)
            vec.restore(blob)
            small.restore(blob)
    assert all(seen[name] for name in ("probes", "repeat_probes", "repeat_probers", "dense_blocks", "foreign_owners")), seen
    assert vec.evictions == small.evictions and min(vec.evictions.values()) > 0


def test_small_path_without_blocks_and_without_objects() -> None:
    vec, small = OwnershipEnricher(_config(0)), OwnershipEnricher(_config(10_000))
    rows = [_row(random.Random(k), float(k), k) for k in range(8)]
    table = decode_message(encode_rows(rows), 1 << 26).drop_columns(["object_blocks"])
    for view in (BatchView.decode(table), _view([{**rows[0], "object_ids": [], "object_blocks": []}])):
        want, got = vec.enrich(view), small.enrich(view)
        assert all((got[k] == want[k]).all() for k in want)
    _same_tables(vec, small)


def test_find_and_insert_walk_the_keytable_index() -> None:
    """``KeyTable.find_few``/``insert_few`` read KeyTable's index as KeyTable does: a change of its layout fails here."""
    table = KeyTable(10_000, {"v": np.int32})
    rng = np.random.default_rng(5)
    keys = [int(k) for k in rng.integers(1, 2**64 - 1, 3000, dtype=np.uint64)]
    for start in range(0, 3000, 7):  # small inserts, growing the arrays and the index on the way
        chunk = sorted(set(keys[start : start + 7]) - set(keys[:start]))
        absent = [k for k, s in zip(chunk, table.find_few(chunk)) if s < 0]
        table.insert_few(absent)
    stored = np.array(keys, dtype=np.uint64)
    assert table.find_few(keys) == table.find(stored).tolist()
    assert len(table) == len(set(keys)) and table.find_few([12345]) == [-1]


def test_pair1_is_pair_key() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 2**64 - 1, 50, dtype=np.uint64), rng.integers(0, 2**64 - 1, 50, dtype=np.uint64)
    want = pair_key(a, b, 0x70726F6265).tolist()
    assert [pair_key1(int(x), int(y), 0x70726F6265) for x, y in zip(a, b)] == want


@pytest.mark.parametrize("blocks", [["00000000000000ff", "0123456789abcdef"], ["0123456789abcde", "0123456789abcdef0"],
                                    ["0123456789ABCDEF"], ["0x23456789abcdef"], [" 123456789abcdef"]])
def test_block_hashes_read_as_hex64_reads_them(blocks: list[str]) -> None:
    """Only 16 lower-case hex digits each are read as numbers; anything else makes the whole batch hash64 (as hex64)."""
    vec, small = OwnershipEnricher(_config(0)), OwnershipEnricher(_config(10_000))
    for k in range(4):
        row = summary_row(id=f"r{k}", time=T0 + k, source={"ip": "198.18.0.1"}, principal=f"p{k}", destination={"service": "s"},
                          method="GET", path_template="/o/{id}", status=403, object_ids=[f"o{k}"], object_blocks=blocks)
        view = _view([row])
        want, got = vec.enrich(view), small.enrich(view)
        assert all((got[n] == want[n]).all() for n in want)
    _same_tables(vec, small)
    assert len(small.blocks) == len(blocks)


def test_pairs1_is_pair1_of_each() -> None:
    a, b = [1, 2**64 - 1, 12345], [7, 0, 2**63]
    assert pairs1(a, b, 3) == [pair_key1(x, y, 3) for x, y in zip(a, b)]


def test_small_batches_take_the_small_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("wrong path")

    view = _view([_row(random.Random(3), 1.0, 1)])
    monkeypatch.setattr(OwnershipEnricher, "_fold", refuse)
    OwnershipEnricher(OwnershipConfig(small_objects=48)).enrich(view)
    monkeypatch.undo()
    monkeypatch.setattr("streams.ownership.enrich_small", refuse)
    OwnershipEnricher(OwnershipConfig(small_objects=0)).enrich(view)
