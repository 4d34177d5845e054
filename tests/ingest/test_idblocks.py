"""Object blocks of numeric ids (ingest.idblocks)."""

from __future__ import annotations

from ingest.idblocks import BLOCK, object_blocks
from ingest.templating import hash_object_id

KEY = b"test-key"


def test_consecutive_ids_share_a_block_and_the_next_block_differs() -> None:
    same = {object_blocks("/orders/{id}", [str(310000 + i)], KEY)[0] for i in range(BLOCK)}
    nxt = object_blocks("/orders/{id}", [str(310000 + BLOCK)], KEY)
    assert len(same) == 1 and nxt[0] not in same


def test_template_and_key_change_the_block() -> None:
    a = object_blocks("/orders/{id}", ["310001"], KEY)
    assert a != object_blocks("/invoices/{id}", ["310001"], KEY)
    assert a != object_blocks("/orders/{id}", ["310001"], b"other-key")


def test_a_block_hash_never_equals_an_id_hash() -> None:
    assert object_blocks("/orders/{id}", ["7"], KEY)[0] != hash_object_id("7", KEY)
    assert len(object_blocks("/orders/{id}", ["7"], KEY)[0]) == 16


def test_only_numeric_ids_have_blocks_distinct_and_capped() -> None:
    ids = ["a1b2c3d4-0000-4000-8000-000000000000", "alice@example.com", "1" * 19, "٣", "12", "13", "40"]
    assert len(object_blocks("/x/{id}", ids, KEY)) == 2  # 12 and 13 share block 0, 40 is block 2
    many = [str(i * BLOCK) for i in range(100)]
    assert len(object_blocks("/x/{id}", many, KEY, cap=5)) == 5
    assert object_blocks("/x/{id}", [], KEY) == []
