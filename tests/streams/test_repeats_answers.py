"""RepeatFilter.judge: a call's answer counts once, from the first copy that carried one, whatever the batching."""

from __future__ import annotations

import numpy as np

from streams.repeats import RepeatFilter


def _reference(ids: list[int], reporters: list[int], answered: list[bool]) -> tuple[list[bool], list[bool]]:
    """The rule written row by row: the named rule over every row, and again over the rows that carry an answer."""
    named: dict[int, int] = {}
    answers: dict[int, int] = {}
    repeat, again = [], []
    for h, r, a in zip(ids, reporters, answered):
        bit = 1 << (r & 15)
        seen, told = named.get(h, 0), answers.get(h, 0)
        repeat.append(h != 0 and bool(seen) and not seen & bit)
        again.append(h != 0 and a and bool(told) and not told & bit)
        if h:
            named[h] = seen | bit
            if a:
                answers[h] = told | bit
    return repeat, again


def test_judge_matches_the_row_by_row_rule_under_any_batching() -> None:
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 60, size=3000).astype(np.uint64)  # 0 = no id; ids repeat, as client-set ids do
    reporters = rng.choice([11, 12, 13, 27], size=3000).astype(np.uint64)  # 11 and 27 share a bit
    answered = rng.random(3000) < 0.6
    repeat, again = _reference(ids.tolist(), reporters.tolist(), answered.tolist())
    assert 100 < sum(again) < sum(answered)
    for cut in (1, 7, 500, 3000):
        f = RepeatFilter(10_000)
        got = [f.judge(ids[i:i + cut], reporters[i:i + cut], answered[i:i + cut]) for i in range(0, 3000, cut)]
        assert np.concatenate([g[0] for g in got]).tolist() == repeat, cut
        assert np.concatenate([g[1] for g in got]).tolist() == again, cut


def test_a_shim_copy_without_status_leaves_the_answer_to_the_access_log() -> None:
    shim, log = 1, 2
    f = RepeatFilter(100)
    repeat, again = f.judge(np.array([7], np.uint64), np.array([shim], np.uint64), np.array([False]))
    assert (repeat.tolist(), again.tolist()) == ([False], [False])  # the call counts here
    repeat, again = f.judge(np.array([7, 7], np.uint64), np.array([log, log], np.uint64), np.array([True, True]))
    assert (repeat.tolist(), again.tolist()) == ([True, False], [False, False])  # its answer here; the id reused: a new call


def test_repeats_alone_still_learn_ids_and_answers_survive_a_generation_swap() -> None:
    f = RepeatFilter(4)  # two ids per generation
    f.judge(np.array([1], np.uint64), np.array([1], np.uint64), np.array([True]))
    f.repeats(np.array([2, 3], np.uint64), np.array([1, 1], np.uint64))  # the newer generation fills: 1 moves to the older
    repeat, again = f.judge(np.array([1, 2], np.uint64), np.array([2, 2], np.uint64), np.array([True, True]))
    assert repeat.tolist() == [True, True] and again.tolist() == [True, False]
