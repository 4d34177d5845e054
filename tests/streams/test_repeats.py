"""RepeatFilter: rows judged as if one by one, whatever the batching; bounded memory."""

from __future__ import annotations

import numpy as np

from streams.repeats import RepeatFilter


def _reference(ids: list[int], reporters: list[int]) -> list[bool]:
    """The rule written row by row: a repeat when the id was named before by someone, never by this reporter."""
    masks: dict[int, int] = {}
    out = []
    for h, r in zip(ids, reporters):
        bit = 1 << (r & 15)
        seen = masks.get(h, 0)
        out.append(h != 0 and bool(seen) and not seen & bit)
        if h:
            masks[h] = seen | bit
    return out


def test_matches_the_row_by_row_rule_under_any_batching() -> None:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 60, size=3000).astype(np.uint64)  # 0 = no id; ids repeat, as client-set ids do
    reporters = rng.choice([11, 12, 13, 27], size=3000).astype(np.uint64)  # 11 and 27 share a bit
    expected = _reference(ids.tolist(), reporters.tolist())
    assert 100 < sum(expected) < 2900
    for cut in (1, 7, 500, 3000):
        f = RepeatFilter(10_000)
        got = np.concatenate([f.repeats(ids[i:i + cut], reporters[i:i + cut])
                              for i in range(0, 3000, cut)])
        assert got.tolist() == expected, cut


def test_memory_is_bounded_and_oldest_forgotten() -> None:
    f = RepeatFilter(1000)
    ids = np.arange(1, 5001, dtype=np.uint64)
    for i in range(0, 5000, 100):  # a generation may pass its half by one batch, never more
        f.repeats(ids[i:i + 100], np.full(100, 1, np.uint64))
    assert len(f) <= 1000 and f.evicted >= 4000
    late = f.repeats(np.array([4999, 3], np.uint64), np.array([2, 2], np.uint64))
    assert late.tolist() == [True, False]  # id 3 was forgotten (oldest), 4999 is still known
