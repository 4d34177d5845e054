"""Ownership learning, stealing protection, eviction, state round trip and per-row signals (streams.ownership)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ingest.envelope import decode_message, encode_rows, summary_row
from streams.batch import BatchView, hash64
from streams.ownership import OWNERSHIP_SIGNALS, OwnershipConfig, OwnershipEnricher, hex64

T0 = 1.8e9


def call(t: float, principal: str | None, ids: tuple[str, ...] = (), status: int = 200, *, created: tuple[str, ...] = (),
         blocks: tuple[str, ...] = (), service: str = "orders", method: str = "GET") -> dict[str, Any]:
    """One summary row (times are seconds after T0)."""
    return summary_row(id=f"r{t}-{principal}-{ids}", time=T0 + t, source={"ip": "198.18.0.1", "external": True},
                       principal=principal, destination={"service": service}, method=method,
                       path_template="/orders" if created or len(ids) != 1 else "/orders/{id}", status=status,
                       object_ids=list(ids), object_ids_created=list(created), object_blocks=list(blocks))


def view(rows: list[dict[str, Any]], drop: str | None = None) -> BatchView:
    table = decode_message(encode_rows(rows), 1 << 26)
    if drop is not None:
        table = table.drop_columns([drop])
    return BatchView.decode(table)


def run(enricher: OwnershipEnricher, *rows: dict[str, Any]) -> dict[str, list[float]]:
    out = enricher.enrich(view(list(rows)))
    assert set(out) == set(OWNERSHIP_SIGNALS) and all(len(v) == len(rows) for v in out.values())
    return {k: v.tolist() for k, v in out.items()}


@pytest.fixture(params=[0, 48], ids=["vectorised", "small"])
def enr(request: pytest.FixtureRequest) -> OwnershipEnricher:
    """An enricher taking the vectorised path (``small_objects=0``) or the plain-Python one (``streams.ownsmall``)."""
    return OwnershipEnricher(OwnershipConfig(objects=64, pairs=64, blocks=64, confirm_gap_s=100.0, small_objects=request.param))


def test_created_objects_are_owned_and_foreign_to_others(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "alice", status=201, created=("o1", "o2"), method="POST"))
    s = run(enr, call(1, "alice", ("o1",)), call(2, "mallory", ("o2",)), call(3, "mallory", ("o9",), 404))
    assert s["own_objects"] == [1, 0, 0] and s["foreign_objects"] == [0, 1, 0]
    assert s["new_objects"] == [0, 0, 1] and s["denied_objects"] == [0, 0, 1]
    assert s["foreign_owners"] == [0, 1, 0]


def test_first_access_is_provisional_and_cannot_be_stolen(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "alice", ("o1",)), call(0, "alice", ("o2",)))
    s = run(enr, call(10, "mallory", ("o1",)))
    assert s["foreign_objects"] == [0]  # provisional owners make nobody foreign
    run(enr, call(500, "alice", ("o1",)), call(500, "alice", ("o2",)), call(600, "mallory", ("o1",)))
    s = run(enr, call(700, "alice", ("o1",)), call(701, "mallory", ("o2",)), call(702, "mallory", ("o1",)))
    # o1 was contested by mallory before alice came back: it stays alice's provisional object, confirmed by nobody
    assert s["own_objects"] == [1, 0, 0] and s["foreign_objects"] == [0, 1, 0]


def test_a_quick_second_access_does_not_confirm(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "alice", ("o1",)), call(50, "alice", ("o1",)))
    assert run(enr, call(60, "bob", ("o1",)))["foreign_objects"] == [0]


def test_services_never_own(enr: OwnershipEnricher) -> None:
    run(enr, call(0, None, ("o1",)))
    run(enr, call(1, "alice", ("o1",)), call(200, "alice", ("o1",)))
    s = run(enr, call(300, "bob", ("o1",)), call(301, None, ("o1",)))
    assert s["foreign_objects"] == [1, 0] and s["own_objects"] == [0, 0]


def test_own_lists_teach_and_bulk_pages_do_not() -> None:
    enr = OwnershipEnricher(OwnershipConfig(objects=256, pairs=64, blocks=64, confirm_gap_s=100.0, list_max=5))
    mine, page = tuple(f"a{i}" for i in range(3)), tuple(f"p{i}" for i in range(6))
    run(enr, call(0, "alice", mine), call(0, "mallory", page))
    run(enr, call(200, "alice", mine), call(200, "mallory", page))
    s = run(enr, call(300, "bob", mine), call(301, "bob", page))
    assert s["foreign_objects"] == [3, 0] and s["new_objects"] == [0, 6]


def test_thin_owners_separates_enumeration_from_support_work() -> None:
    enr = OwnershipEnricher(OwnershipConfig(objects=256, pairs=256, blocks=64))
    owners = [f"user{i}" for i in range(6)]
    run(enr, *[call(0, u, status=201, created=tuple(f"{u}-{k}" for k in range(3)), method="POST") for u in owners])
    support = run(enr, *[call(10 + i, "agent", (f"{u}-{k}",)) for i, (u, k) in enumerate((u, k) for u in owners for k in range(3))])
    enum = run(enr, *[call(100 + i, "mallory", (f"{u}-0",), 403) for i, u in enumerate(owners)])
    assert sum(support["foreign_objects"]) == 18 and sum(support["foreign_owners"]) == 6
    assert sum(support["thin_owners"]) == 0
    assert sum(enum["thin_owners"]) == 6 == sum(enum["foreign_owners"])
    again = run(enr, call(200, "mallory", ("user0-1",)))  # a second object of an owner already touched
    assert again["thin_owners"] == [-1] and again["foreign_owners"] == [0]


def test_pairs_start_over_after_the_horizon() -> None:
    enr = OwnershipEnricher(OwnershipConfig(objects=64, pairs=64, blocks=64, horizon_s=1000.0))
    run(enr, call(0, "alice", status=201, created=("o1", "o2"), method="POST"))
    assert run(enr, call(1, "bob", ("o1",)))["foreign_owners"] == [1]
    assert run(enr, call(500, "bob", ("o2",)))["foreign_owners"] == [0]
    assert run(enr, call(2000, "bob", ("o1",)))["foreign_owners"] == [1]


def test_dense_blocks_across_principals(enr: OwnershipEnricher) -> None:
    probes = [call(i, f"p{i}", (f"o{i}",), 403, blocks=("b1",)) for i in range(4)]
    s = run(enr, *probes[:3])
    assert s["dense_blocks"] == [0, 0, 0]
    s = run(enr, probes[3], call(5, "owner", ("o7",), 200, blocks=("b1",)), call(6, "p9", ("o8",), 403, blocks=("b2",)))
    assert s["dense_blocks"] == [1, 0, 0]  # the 4th prober; the owner's own read and another block stay 0


def test_dense_blocks_of_one_principal(enr: OwnershipEnricher) -> None:
    probes = [call(i, "mallory", (f"obj-{i}",), 404, blocks=("b1",)) for i in range(6)]
    assert run(enr, *probes[:2])["dense_blocks"] == [0, 0]
    assert run(enr, *probes[2:])["dense_blocks"] == [1, 1, 1, 1]  # signals see the whole batch folded in


def test_no_blocks_column_means_zero(enr: OwnershipEnricher) -> None:
    rows = [call(i, f"p{i}", (f"o{i}",), 403, blocks=("b1",)) for i in range(6)]
    out = enr.enrich(view(rows, drop="object_blocks"))
    assert out["dense_blocks"].tolist() == [0.0] * 6 and out["denied_objects"].tolist() == [1.0] * 6


def test_export_restore_gives_the_same_answers(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "alice", status=201, created=("o1",), method="POST"), call(1, "bob", ("o2",)),
        call(2, "p1", ("o3",), 403, blocks=("b1",)), call(3, "p2", ("o4",), 403, blocks=("b1",)))
    copy = OwnershipEnricher(enr.config)
    copy.restore(enr.export())
    nxt = [call(10, "carol", ("o1",)), call(11, "p3", ("o5",), 403, blocks=("b1",)), call(12, "bob", ("o2",)),
           call(13, "p4", ("o6",), 404, blocks=("b1",))]
    assert run(copy, *nxt) == run(enr, *nxt)
    assert len(copy.objects) == len(enr.objects) and copy.evictions == enr.evictions


def test_restore_rejects_a_foreign_blob(enr: OwnershipEnricher) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(1))
    with pytest.raises(ValueError, match="objects"):
        enr.restore(buf.getvalue())


def test_ownership_table_is_bounded() -> None:
    enr = OwnershipEnricher(OwnershipConfig(objects=64, pairs=64, blocks=64))
    for b in range(20):
        run(enr, *[call(b * 10 + i, f"u{i}", (f"o{b}-{i}",)) for i in range(10)])
    assert len(enr.objects) <= 64 and enr.evictions["objects"] >= 200 - 64


def test_hex64_reads_hex_digests_and_falls_back_to_hash64() -> None:
    hexes = pa.array(["00000000000000ff", "ffffffffffffffff"])
    assert hex64(hexes).tolist() == [255, 2**64 - 1]
    other = pa.array(["b1", "zzzzzzzzzzzzzzzz"])
    assert hex64(other).tolist() == hash64(other).tolist()


def test_probes_count_refused_objects_not_ones_own_once_each(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "alice", status=201, created=("a1",), method="POST"))
    s = run(enr, call(1, "mallory", ("a1",), 403), call(2, "mallory", ("o2",), 404), call(3, "mallory", ("o2",), 404),
            call(4, "alice", ("a1",), 404), call(5, None, ("o3",), 404), call(6, "mallory", ("o4",), 500))
    # a lone 403 (a restricted link) or 404 (a dead link) is 0.5; its retry is no new probe; one's own object, a
    # service, a 5xx: none
    assert s["probes"] == [0.5, 0.5, 0, 0, 0, 0]
    assert run(enr, call(8, "mallory", ("o2",), 404), call(9, "bob", ("o2",), 404))["probes"] == [0, 0.5]


def test_a_refusal_is_a_whole_probe_only_in_a_walked_block(enr: OwnershipEnricher) -> None:
    s = run(enr, *[call(i, "alice", (f"x{i}",), 404, blocks=("b1",)) for i in range(4)])
    assert s["probes"] == [0.5] * 4  # her own dead links in one block stay lone 404s: five are needed to reach 2.4
    assert run(enr, call(10, "bob", ("y1",), 404, blocks=("b2",)))["probes"] == [0.5]
    assert run(enr, call(11, "carol", ("y2",), 404, blocks=("b2",)))["probes"] == [0.5]  # crowded by 404s: deleted objects
    assert run(enr, call(12, "dave", ("y3",), 403, blocks=("b2",)))["probes"] == [1]  # a 403: others' objects exist there
    assert run(enr, call(13, "erin", ("y4",), 404, blocks=("b2",)))["probes"] == [1]  # now a walked block: 404s are gaps


def test_repeat_probes_count_what_a_prober_adds_on_the_row_that_adds_it(enr: OwnershipEnricher) -> None:
    b = {"blocks": ("b1",)}
    s = run(enr, call(0, "mallory", ("o1",), 403, **b), call(1, "bob", ("o9",), 403, **b), call(2, "mallory", ("o2",), 403, **b),
            call(3, "mallory", ("o3",), 403, **b), call(4, "mallory", ("o3",), 403, **b), call(5, "mallory", ("o4",), 404))
    # her 2nd and 3rd whole probes, each on its own row; her first, bob's one, a retry, a lone 404: 0
    assert s["repeat_probes"] == [0, 0, 1, 1, 0, 0] and s["repeat_probers"] == [0, 0, 1, 0, 0, 0]
    s = run(enr, call(10, "bob", ("o9",), 403, **b), call(11, "bob", ("o8",), 403, **b), call(12, "mallory", ("o5",), 403, **b))
    assert s["repeat_probes"] == [0, 1, 1] and s["repeat_probers"] == [0, 1, 0]  # bob becomes a prober; mallory was one


def test_probes_start_over_after_the_horizon() -> None:
    enr = OwnershipEnricher(OwnershipConfig(objects=64, pairs=64, blocks=64, horizon_s=1000.0))
    assert run(enr, call(0, "mallory", ("o1",), 403))["probes"] == [0.5]
    assert run(enr, call(900, "mallory", ("o1",), 403))["probes"] == [0]
    assert run(enr, call(1901, "mallory", ("o1",), 403))["probes"] == [0.5]


def test_following_a_link_others_were_refused_is_half_a_probe(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "p1", ("x1",), 404, blocks=("b1",)), call(1, "p2", ("x2",), 404, blocks=("b1",)))  # b1 crowded
    s = run(enr, call(2, "carol", ("x1",), 404, blocks=("b1",)), call(3, "carol", ("x3",), 404, blocks=("b1",)),
            call(4, "dave", ("x2",), 403, blocks=("b1",)))
    assert s["probes"] == [0.5, 1, 0.5]  # the same dead (or forbidden) link as another: no step of a walk


def test_a_refused_call_naming_many_ids_is_one_probe(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "alice", status=201, created=("a1", "a2"), method="POST"))
    s = run(enr, call(1, "alice", ("a1", "a2", "x1", "x2", "x3"), 403), call(2, "bob", ("y1", "y2", "y3"), 404))
    assert s["probes"] == [0.5, 0.5] and s["repeat_probes"] == [0, 0] and s["denied_objects"] == [5, 3]


def test_objects_answered_to_the_principal_before_are_no_probes(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "ann", ("d1",)), call(1, "ann", ("d2",)))  # ann reads first: provisional owner
    run(enr, call(2, "carol", ("d1",)), call(3, "carol", ("d2", "d3")))  # carol answered d1, d2 (and d3 on a short list)
    s = run(enr, call(4000, "carol", ("d1",), 403), call(4001, "carol", ("d2",), 403), call(4002, "carol", ("d3",), 403),
            call(4003, "carol", ("d4",), 403), call(4004, "dave", ("d1",), 403))
    assert s["probes"] == [0, 0, 0, 0.5, 0.5]  # lost access: only an object she never saw; dave never saw d1 (and
    # it was refused to carol too: following a link, no walk)
    assert run(enr, call(4005, "dave", ("d5",), 403))["probes"] == [0.5]


def test_of_a_known_owner_only_the_first_object_touched_is_a_whole_probe(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "bob", status=201, created=("b1", "b2", "b3"), method="POST"),
        call(0, "eve", status=201, created=("e1",), method="POST"))
    run(enr, call(5, "p1", ("x1",), 403, blocks=("k1",)), call(6, "p2", ("x2",), 404, blocks=("k1",)))  # a walked block
    s = run(enr, *[call(10 + i, "viewer", (o,), 403, method="PUT", blocks=("k1",)) for i, o in enumerate(("b1", "b2", "b3", "e1"))])
    assert s["probes"] == [1, 0.5, 0.5, 1]  # a viewer pressing Edit on one colleague's documents: one owner, then halves
    assert s["repeat_probes"] == [0, 0, 0, 1]
    assert run(enr, call(20, "carol", ("b1",)), call(21, "carol", ("b2",), 404))["probes"] == [0, 0.5]  # bob touched


def test_a_read_in_a_crowded_block_is_a_probe_only_for_a_refused_reader_of_another_owner(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "owner", status=201, created=tuple(f"o{i}" for i in range(6)), method="POST"),
        *[call(0, f"u{i}", status=201, created=(f"u{i}-doc",), method="POST") for i in range(4)])
    run(enr, call(300, "p1", ("x0",), 404, blocks=("b1",)), call(301, "p1", ("x1",), 403, blocks=("b1",)),
        call(302, "p2", ("x2",), 404, blocks=("b1",)), call(302, "p3", ("x3",), 404, blocks=("b1",)))
    assert run(enr, call(303, "p3", ("u4-doc",), blocks=("b1",)))["probes"] == [0]  # refused once there: a deleted order
    s = run(enr, call(303, "reader", ("u0-doc",), blocks=("b1",)), call(304, "p1", ("u1-doc",), blocks=("b1",)),
            call(305, "p1", ("u2-doc", "u3-doc"), blocks=("b1",)), call(306, "p1", ("fresh",), blocks=("b1",)),
            call(307, "p2", ("u3-doc",), blocks=("b2",)), call(308, "p1", ("u1-doc",), blocks=("b1",)))
    # p1 was refused two objects there; a reader never refused there, a page, an object of no known owner, an
    # uncrowded block, a repeat: none
    assert s["probes"] == [0, 1, 0, 0, 0, 0]


def test_a_principal_with_standing_in_the_service_makes_half_probes(enr: OwnershipEnricher) -> None:
    """More answered object calls than refusals there: a support agent or an employee, not an enumeration account."""
    run(enr, call(0, "p1", ("x1",), 403, blocks=("b1",)), call(1, "p2", ("x2",), 404, blocks=("b1",)))  # walked
    run(enr, *[call(10 + i, "agent", (f"t{i}",)) for i in range(5)])  # five answered reads
    s = run(enr, call(20, "agent", ("x3",), 403, blocks=("b1",)), call(21, "agent", ("x4",), 403, blocks=("b1",)),
            call(22, "agent", ("x5",), 404, blocks=("b1",)), call(23, "agent", ("x6",), 403, blocks=("b1",)))
    assert s["probes"] == [0.5, 0.5, 0.5, 0.5]  # 5 answered, 4 refused (the batch folded in)
    assert run(enr, call(25, "agent", ("x8",), 403, blocks=("b1",)))["probes"] == [1]  # 5 answered, 5 refused: lost it
    assert run(enr, call(26, "newbie", ("x9",), 403, blocks=("b1",)))["probes"] == [1]


def test_a_crowd_needs_distinct_principals() -> None:
    enr = OwnershipEnricher(OwnershipConfig(objects=64, pairs=64, blocks=64, crowd_principals=3))
    run(enr, *[call(i, "p1", (f"x{i}",), 404, blocks=("b1",)) for i in range(5)], call(6, "p2", ("y",), 403, blocks=("b1",)))
    assert run(enr, call(7, "p4", ("z",), 404, blocks=("b1",)))["probes"] == [1]  # p4 is the third refused there
    assert run(enr, call(8, "p5", ("z5",), 404, blocks=("b2",)), call(9, "p6", ("z6",), 404, blocks=("b2",)))["probes"] == [0.5, 0.5]


def test_only_refusals_crowd_a_block(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "alice", status=201, created=("a1", "a2"), method="POST"))
    run(enr, call(1, "agent1", ("a1",), blocks=("b1",)), call(2, "agent2", ("a2",), blocks=("b1",)))  # foreign reads: support work
    assert run(enr, call(3, "bob", ("n1",), 404, blocks=("b1",)))["probes"] == [0.5]


def test_a_dead_link_to_ones_own_object_crowds_no_block(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "alice", ("a1",), blocks=("b1",)), call(1, "bob", ("b1x",), blocks=("b1",)))  # each reads its own
    run(enr, call(2, "alice", ("a1",), 404, blocks=("b1",)), call(3, "bob", ("b1x",), 404, blocks=("b1",)))
    assert run(enr, call(4, "carol", ("c9",), 404, blocks=("b1",)))["probes"] == [0.5]
    run(enr, call(5, "mallory", ("m1",), 404, blocks=("b1",)), call(6, "trudy", ("a1",), 403, blocks=("b1",)))
    assert run(enr, call(7, "carol", ("c8",), 404, blocks=("b1",)))["probes"] == [1]  # two refused objects not their own


def test_readers_survive_restore_and_old_blobs_load(enr: OwnershipEnricher) -> None:
    run(enr, call(0, "ann", ("d1",)), call(1, "carol", ("d1",)))
    copy = OwnershipEnricher(enr.config)
    copy.restore(enr.export())
    assert run(copy, call(2, "carol", ("d1",), 403))["probes"] == [0]  # answered to carol before the restore
    import io

    with np.load(io.BytesIO(enr.export())) as data:
        arrays = {k: data[k] for k in data.files if k != "objects.readers"}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = OwnershipEnricher(enr.config)
    old.restore(buf.getvalue())  # a blob from before the readers column: nobody was answered yet
    assert run(old, call(3, "carol", ("d1",), 403))["probes"] == [0.5]


@pytest.mark.parametrize("field,value", [("horizon_s", 0.0), ("list_max", 0), ("dense_principals", 0), ("crowd_principals", 0),
                                         ("small_objects", -1)])
def test_config_rejects_bad_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        OwnershipConfig(**{field: value})
