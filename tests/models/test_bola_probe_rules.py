"""The BOLA probe rules (models/rules/bola.yaml: bola-probes-long, bola-probers-source) end to end.

Each scenario runs through ``BatchProcessor`` with the ownership enricher and every shipped rule, on both paths of
the enricher (the plain-Python one for small batches, the vectorised one). The benign shapes of the review of
2026-12-02 (S1-S11: dead links, team folders, support agents, NAT gateways, catalogues, lost access, a viewer pressing
Edit, refused bulk calls, a sync client) must stay quiet; distributed enumeration on a 403-answering endpoint and a
low-and-slow prober must fire.
"""

from __future__ import annotations

import collections
import itertools
import random
from collections.abc import Callable, Iterable

import pytest

from ingest import RequestSummary, decode_message, encode_envelope
from ingest.idblocks import object_blocks
from ingest.schema import Destination, Source
from ingest.templating import hash_object_id
from models import REGISTRY, build_detectors
from streams.ownership import OwnershipConfig, OwnershipEnricher
from streams.processor import BatchProcessor, ProcessorConfig

KEY = b"test-object-key"
T0 = 1_800_000_000.0
RULES = ("bola-probes-long", "bola-probers-source")
_ids = itertools.count()


def ev(t: float, principal: str, ids: Iterable[object] = (), status: int = 200, *, ip: str = "10.1.0.5",
       service: str = "docs", created: Iterable[object] = (), method: str = "GET", template: str | None = None) -> RequestSummary:
    """One call ``t`` seconds after T0 (object ids hashed and blocked as the ingest side does)."""
    id_list, made = [str(i) for i in ids], [str(i) for i in created]
    template = template or (f"/{service}/{{id}}" if len(id_list) == 1 else f"/{service}")
    return RequestSummary(id=f"e{next(_ids)}", time=T0 + t, source=Source(ip=ip, external=True), principal=principal,
                          destination=Destination(service=service, namespace="app"), method=method, path_template=template,
                          status=status, response_bytes=300, object_ids=[hash_object_id(i, KEY) for i in id_list],
                          object_ids_created=[hash_object_id(i, KEY) for i in made],
                          object_blocks=object_blocks(template, id_list + made, KEY))


def create(t: float, principal: str, ids: Iterable[object], *, service: str = "docs", ip: str = "10.9.9.9") -> list[RequestSummary]:
    """``principal`` creates each of ``ids`` (one POST each)."""
    return [ev(t, principal, created=[i], status=201, method="POST", service=service, ip=ip, template=f"/{service}") for i in ids]


def detections(events: list[RequestSummary], small_objects: int, batch_s: float = 1.0) -> set[tuple[str, str]]:
    """(rule, subject) of every detection by the probe rules, batches cut by event time."""
    enricher = OwnershipEnricher(OwnershipConfig(small_objects=small_objects))
    proc = BatchProcessor(ProcessorConfig(), build_detectors(sorted(REGISTRY)), [enricher])
    groups: dict[int, list[RequestSummary]] = collections.defaultdict(list)
    for e in sorted(events, key=lambda e: e.time):
        groups[int((e.time - T0) // batch_s)].append(e)
    found = set()
    for k in sorted(groups):
        for d in proc.process(decode_message(encode_envelope(groups[k]), 1 << 30)):
            found |= {(r.detector, str(d.actor)) for r in d.reasons if r.detector in RULES}
    return found


# -- the review's benign shapes (S-numbers as in /work/notes/review-bola-2026-12-02.md)

def s1c() -> list[RequestSummary]:
    return create(0, "alice", [100, 101, 102]) + [ev(60 + 20 * i, "alice", [5001 + 3 * i], 404) for i in range(3)]


def s1_four_dead_links() -> list[RequestSummary]:
    return create(0, "alice", [100, 101, 102]) + [ev(60 + 20 * i, "alice", [5000 + 97 * i], 404) for i in range(4)]


def s2b() -> list[RequestSummary]:
    return [ev(500 + i, "alice", [300 + i], 404) for i in range(3)]


def s3() -> list[RequestSummary]:
    team = ["carol", "dave", "erin", "frank"]
    out = create(0, "bob", range(400, 410))
    out += [ev(100 + 10 * j + i, m, [400 + i]) for j, m in enumerate(team) for i in range(3)]
    out += [ev(1000, "carol", [405], 404), ev(1010, "dave", [406], 404)]
    return out + [ev(1200 + 30 * j + i, m, [403 + i]) for j, m in enumerate(team) for i in range(3)]


def s4() -> list[RequestSummary]:
    out = [e for c in range(16) for e in create(c, f"cust{c}", [10000 + c], service="orders")]
    out += [ev(2000, "agent1", [10003], 404, service="orders"), ev(2100, "agent2", [10007], 404, service="orders")]
    return out + [ev(2200 + 60 * i, "agent3", [10010 + i], service="orders") for i in range(3)]


def s6b() -> list[RequestSummary]:
    out = [e for i in range(12) for e in create(i, f"u{i}", [600 + i], service="msgs")]
    out += [ev(100, "u5", [605], service="msgs"), ev(100.1, "u5", [604], 404, service="msgs"),
            ev(100.2, "u5", [606], 404, service="msgs"), ev(900, "u5", [603], 404, service="msgs")]
    return out


def s7b() -> list[RequestSummary]:
    nat = "198.51.100.1"
    out = [ev(i * 5, f"emp{i}", [9000 + i % 3], 404, ip=nat, service="wiki") for i in range(300)]
    out += create(0, "author", range(9003, 9015), service="wiki")
    return out + [ev(1600 + 10 * j + i, f"emp{j}", [9004 + i], ip=nat, service="wiki") for j in range(6) for i in range(2)]


def s7d() -> list[RequestSummary]:
    nat = "198.51.100.7"
    out = create(0, "author", range(9120, 9136), service="wiki")
    out += [ev(100, "x1", [9120], 404, service="wiki", ip="10.3.3.3"), ev(110, "x2", [9121], 404, service="wiki", ip="10.3.3.4")]
    return out + [ev(200 + 20 * j + i, f"emp{j}", [9122 + 2 * j + i], service="wiki", ip=nat) for j in range(6) for i in range(2)]


def s8() -> list[RequestSummary]:
    out = [ev(i, f"shopper{i}", [70000 + i]) for i in range(16)]
    out += [ev(300, "s_a", [70023], 404), ev(310, "s_b", [70025], 404)]
    return out + [ev(400 + 30 * i, "browser", [70024 + 2 * i]) for i in range(3)]


def s9a() -> list[RequestSummary]:
    out = create(0, "bob", [900, 940, 980], service="proj")
    out += [ev(300 + i, "carol", [900 + 40 * i], service="proj") for i in range(3)]
    return out + [ev(3600 + 5 * i, "carol", [900 + 40 * i], 403, service="proj") for i in range(3)]


def s9b() -> list[RequestSummary]:
    out = create(0, "bob", [1900, 1940, 1980], service="proj")
    return out + [ev(300 + 60 * i, "viewer", [1900 + 40 * i], 403, method="PUT", service="proj") for i in range(3)]


def s9c() -> list[RequestSummary]:
    nat = "198.51.100.7"
    out = create(0, "bob", [900 + 40 * i for i in range(7)], service="proj", ip="10.5.5.5")
    out += [ev(300 + i, "carol", [900 + 40 * i], service="proj", ip=nat) for i in range(7)]
    return out + [ev(3600 + 5 * i, "carol", [900 + 40 * i], 403, service="proj", ip=nat) for i in range(7)]


def s9_unknown_owner() -> list[RequestSummary]:
    """Lost access to documents nobody was seen creating (ann read them first): carol was answered them before."""
    out = [ev(i, "ann", [2000 + i]) for i in range(5)] + [ev(100 + i, "carol", [2000 + i]) for i in range(5)]
    return out + [ev(3600 + i, "carol", [2000 + i], 403) for i in range(5)]


def s10() -> list[RequestSummary]:
    out = [ev(i, "human", [3000 + i]) for i in range(16)] + [ev(200 + i, "human", [3000 + i]) for i in range(16)]
    out += [ev(400 + i, "sync-key-42", [3000 + i], ip="10.2.0.9") for i in range(16)]
    return out + [ev(3000 + 0.1 * i, "sync-key-42", [3000 + i], 404 if i in (3, 8, 12) else 200, ip="10.2.0.9")
                  for i in range(16)]


def s11a() -> list[RequestSummary]:
    return create(0, "alice", [100, 101, 102]) + [
        ev(60, "alice", [100, 101, 2005, 2006, 2007], 403, template="/docs:batchGet", method="POST")]


def s11b() -> list[RequestSummary]:
    return create(0, "alice", [100, 101, 102]) + [ev(60, "alice", [2001, 2002, 2003, 2004], 404)]


def shared_dead_links() -> list[RequestSummary]:
    """Five colleagues behind one NAT each follow the same three dead links of a wiki page (404 walks nobody's ids)."""
    return [ev(100 * j + 5 * i, f"emp{j}", [7001 + 2 * i], 404, ip="198.51.100.9", service="wiki") for j in range(5) for i in range(3)]


# -- the second review's benign shapes (2026-12-02 08:30)

def _orders_block() -> list[RequestSummary]:
    """Twelve customers' orders 20000-20011; 20012-20015 (same id block) were never seen: deleted or never made."""
    return [e for c in range(12) for e in create(c, f"cust{c}", [20_000 + c], service="orders")]


def r1_support_agent_one_404() -> list[RequestSummary]:
    """Two people meet 404s in a block of orders (crowded), one is refused an order there (403: walked); a support
    agent meets one 404 there too, then reads six customers' orders in it."""
    out = _orders_block() + [ev(500, "x1", [20_012], 404, service="orders"), ev(510, "x2", [20_013], 404, service="orders"),
                             ev(520, "x2", [20_005], 403, service="orders")]
    return out + [ev(600, "agent", [20_014], 404, service="orders")] + [
        ev(620 + 30 * i, "agent", [20_001 + i], service="orders") for i in range(6)]


def r2_dead_bookmarks_in_a_404_block() -> list[RequestSummary]:
    """A project's documents were deleted; three colleagues each meet a 404 on one of them, alice on four of her
    bookmarks in the same id block within ten minutes (no 403 anywhere: nothing of anyone's exists there)."""
    out = [ev(100 + 20 * j, f"col{j}", [31_000 + j], 404) for j in range(3)]
    return out + [ev(300 + 150 * i, "alice", [31_004 + i], 404) for i in range(4)]


def r3_office_nat_restricted_links() -> list[RequestSummary]:
    """Eight people behind one office address each open two restricted documents of different owners (403)."""
    nat, out = "198.51.100.20", [e for k in range(16) for e in create(k, f"own{k}", [32_000 + 40 * k])]
    return out + [ev(200 + 60 * j + 30 * i, f"emp{j}", [32_000 + 40 * (2 * j + i)], 403, ip=nat) for j in range(8) for i in range(2)]


def r3b_office_nat_same_restricted_links() -> list[RequestSummary]:
    """Eight people behind one office address open the same two restricted documents of one block, posted in chat."""
    nat, out = "198.51.100.21", [e for k in range(2) for e in create(k, f"own{k}", [33_000 + k])]
    return out + [ev(200 + 60 * j + 5 * i, f"emp{j}", [33_000 + i], 403, ip=nat) for j in range(8) for i in range(2)]


def r4_four_restricted_links() -> list[RequestSummary]:
    """Four restricted links of four owners opened within twenty minutes (a newcomer going through a chat's history)."""
    out = [e for k in range(4) for e in create(k, f"own{k}", [34_000 + 50 * k])]
    return out + [ev(300 + 400 * i, "newcomer", [34_000 + 50 * i], 403) for i in range(4)]


def _history(who: str, first: int, *, service: str = "docs", ip: str = "10.9.9.9", t: float = 0.0) -> list[RequestSummary]:
    """A working history in the service: ``who`` creates four objects and reads each back, an hour before the scenario."""
    made = [first + 97 * k for k in range(4)]
    return create(t, who, made, service=service, ip=ip) + [ev(t + 60 + k, who, [o], service=service, ip=ip) for k, o in enumerate(made)]


def r5_colleagues_restricted_project() -> list[RequestSummary]:
    """(Third review) Four colleagues behind one office address each open three restricted documents of a project
    (twelve documents of twelve members, one id block) over twenty minutes; each has a working history in the service."""
    nat, out = "198.51.100.31", [e for k in range(12) for e in create(k, f"member{k}", [5100 + k])]
    for j in range(4):
        out += _history(f"emp{j}", 60_000 + 1000 * j, ip=nat)
        out += [ev(3900 + 60 * j + 200 * i + 7 * j, f"emp{j}", [5100 + 3 * j + i], 403, ip=nat) for i in range(3)]
    return out


def r6_support_agent_of_one_region() -> list[RequestSummary]:
    """(Third review) Tier-1 agents work a queue sorted by order id: agent2 is refused one order of another region,
    agent1 two, and reads the orders of its region between them; both read a dozen orders earlier that day."""
    out = [e for c in range(16) for e in create(c, f"cust{c}", [20_000 + c], service="orders")]
    out += [e for c in range(16, 40) for e in create(c, f"cust{c}", [21_000 + 40 * c], service="orders")]
    out += [ev(300 + 30 * k, a, [21_000 + 40 * (16 + k + 12 * i)], service="orders", ip=f"10.7.0.{i + 1}")
            for i, a in enumerate(("agent1", "agent2")) for k in range(12)]
    out += [ev(4000, "agent2", [20_010], 403, service="orders", ip="10.7.0.2")]
    seq = [(20_001, 200), (20_002, 403), (20_003, 200), (20_004, 200), (20_005, 403), (20_006, 200)]
    return out + [ev(4100 + 120 * i, "agent1", [o], st, service="orders", ip="10.7.0.1") for i, (o, st) in enumerate(seq)]


QUIET: dict[str, Callable[[], list[RequestSummary]]] = {
    "R5 colleagues behind a NAT open restricted documents of one project": r5_colleagues_restricted_project,
    "R6 support agents refused orders of another region": r6_support_agent_of_one_region,
    "R1 support agent meets one 404 in a walked block, then reads orders": r1_support_agent_one_404,
    "R2 four dead bookmarks in a block of 404s": r2_dead_bookmarks_in_a_404_block,
    "R3 office NAT, eight people open two restricted documents each": r3_office_nat_restricted_links,
    "R3b office NAT, eight people open the same two restricted documents": r3b_office_nat_same_restricted_links,
    "R4 four restricted links in twenty minutes": r4_four_restricted_links,
    "S1c three dead bookmarks in one id block": s1c, "S1 four scattered dead links": s1_four_dead_links,
    "S2b own objects deleted, ownership never learned": s2b, "S3 team folder after two deleted docs": s3,
    "S4 support agent reads orders near cancelled ones": s4, "S6b prefetching neighbours of a 404-hiding API": s6b,
    "S7b NAT employees read live pages near dead ones": s7b, "S7d NAT employees read pages where others met 404s": s7d,
    "S8 catalogue browsing near discontinued products": s8, "S9a lost access to a project": s9a,
    "S9b viewer presses Edit on shared docs": s9b, "S9c lost access behind an office NAT": s9c,
    "S9 lost access, owner never learned": s9_unknown_owner, "S10 sync client meets deleted objects": s10,
    "S11a refused bulk call of five ids": s11a, "S11b bulk call of four ids answered 404": s11b,
    "colleagues behind a NAT follow the same dead links": shared_dead_links,
}


@pytest.mark.parametrize("small_objects", [48, 0], ids=["small", "vectorised"])
@pytest.mark.parametrize("name", sorted(QUIET))
def test_benign_shapes_stay_quiet(name: str, small_objects: int) -> None:
    assert detections(QUIET[name](), small_objects) == set()


# -- the attacks

def _owners(service: str, first: int, count: int) -> list[RequestSummary]:
    """``count`` customers each creating one to three consecutive objects from id ``first`` on; the ids' owners."""
    rng, out, oid = random.Random(5), [], first
    for c in range(count):
        for _ in range(rng.randint(1, 3)):
            oid += rng.randint(1, 2)
            out += create(c * 0.5, f"cust{c}", [oid], service=service)
    return out


@pytest.mark.parametrize("small_objects", [48, 0], ids=["small", "vectorised"])
def test_distributed_enumeration_on_a_403_endpoint_fires(small_objects: int) -> None:
    """30 principals walk one endpoint's sequential ids, 3-8 each; half behind one shared address."""
    events, rng, cursor = _owners("orders", 50_000, 150), random.Random(9), 50_000
    made = {e.object_ids_created[0] for e in events}
    walkers = [f"thief{k}" for k in range(30)]
    for k, who in enumerate(walkers):
        t, ip = 600 + rng.uniform(0, 500), "203.0.113.5" if k % 2 else f"203.0.114.{k}"
        for _ in range(rng.randint(3, 8)):
            cursor += 1
            status = 403 if hash_object_id(str(cursor), KEY) in made else 404
            events.append(ev(t, who, [cursor], status, ip=ip, service="orders"))
            t += rng.uniform(1, 10)
    found = detections(events, small_objects, batch_s=0.25)
    actors = {subject for rule, subject in found if rule == "bola-probes-long"}
    assert sum(any(w in a for a in actors) for w in walkers) >= 27, sorted(actors)
    assert any(rule == "bola-probers-source" and "203.0.113.5" in subject for rule, subject in found), found


@pytest.mark.parametrize("small_objects", [48, 0], ids=["small", "vectorised"])
def test_low_and_slow_prober_fires(small_objects: int) -> None:
    """One principal: a foreign object about once a minute for an hour on a 403-answering endpoint, between catalogue reads."""
    events, rng = _owners("profiles", 70_000, 200), random.Random(3)
    objects = [e.object_ids_created[0] for e in events]
    t = 300.0
    while t < 3900:
        oid = rng.choice(objects)
        events.append(RequestSummary(id=f"ls{t}", time=T0 + t, source=Source(ip="203.0.113.77", external=True),
                                     principal="slow", destination=Destination(service="profiles", namespace="app"),
                                     method="GET", path_template="/profiles/{id}", status=403, object_ids=[oid]))
        events.append(ev(t + 5, "slow", [], ip="203.0.113.77", service="catalog", template="/products"))
        t += rng.uniform(30, 90)
    assert any(rule == "bola-probes-long" and "slow" in subject for rule, subject in detections(events, small_objects))


@pytest.mark.parametrize("small_objects", [48, 0], ids=["small", "vectorised"])
def test_low_and_slow_walk_of_a_leaking_endpoint_fires_within_the_hour(small_objects: int) -> None:
    """A walk of sequential ids every 30-90 s where the API leaks (200): only its 404s on the gaps are probes, lone
    ones (0.5 each, as dead links), and they reach the floor within the hour."""
    events, rng = _owners("invoices", 80_000, 120), random.Random(4)
    made, oid, t = {e.object_ids_created[0] for e in events}, 80_000, 300.0
    while t < 3900:
        oid += 1
        events.append(ev(t, "walker", [oid], 200 if hash_object_id(str(oid), KEY) in made else 404, ip="203.0.113.78",
                         service="invoices"))
        t += rng.uniform(30, 90)
    assert any(rule == "bola-probes-long" and "walker" in subject for rule, subject in detections(events, small_objects))


@pytest.mark.parametrize("small_objects", [48, 0], ids=["small", "vectorised"])
def test_probers_source_needs_two_principals_behind_the_address(small_objects: int) -> None:
    """One genuine prober behind an address (twelve consecutive orders of twelve customers, all refused) is blocked
    as an actor, not the address; a second one walking the same blocks between its steps makes it the address."""
    events = [e for c in range(24) for e in create(c, f"cust{c}", [40_000 + c], service="proj")]

    def probe(who: str, c: int, t: float) -> RequestSummary:
        return ev(t, who, [40_000 + c], 403, ip="198.51.100.50", service="proj")

    one = events + [probe("mallory", c, 100 + 20 * c) for c in range(0, 24, 2)]
    found = detections(one, small_objects)
    assert not any(r == "bola-probers-source" for r, _ in found), found
    assert any(r == "bola-probes-long" and "mallory" in s for r, s in found), found
    two = one + [probe("trudy", c, 100 + 20 * c) for c in range(1, 24, 2)]
    assert any(r == "bola-probers-source" for r, _ in detections(two, small_objects))
