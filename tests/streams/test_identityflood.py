"""A flood of new identities (streams/identityflood.py): marked once per group and window, judged against the group's
own history, and never more memory than the configured bounds, however many identities arrive."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from ingest.envelope import decode_messages, encode_rows, summary_row
from streams.batch import BatchView
from streams.identityflood import IdentityFlood, IdentityFloodConfig, SeenFilter, network_of

T0 = 1_800_000_000.0
CONFIG = IdentityFloodConfig(learn_s=120.0, source_floor=50, service_floor=200)


def _row(k: int, t: float, ip: str | None = None, principal: str | None = None, workload: str | None = None,
         service: str = "orders") -> dict[str, Any]:
    return summary_row(id=f"r{k}", time=T0 + t, source={"ip": ip, "workload": workload}, principal=principal, method="GET",
                       destination={"service": service, "namespace": "shop"}, path_template="/orders/{id}", status=200)


def _run(enricher: IdentityFlood, rows: list[dict[str, Any]], size: int = 500) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in enricher.signals}
    for i in range(0, len(rows), size):
        table, errors = decode_messages([encode_rows(rows[i : i + size])], 1 << 30)
        assert table is not None and not errors
        for name, values in enricher.enrich(BatchView.decode(table)).items():
            out[name] += values.tolist()
    return out


def _steady(start: float, seconds: float, users: int = 40, every: float = 2.0) -> list[dict[str, Any]]:
    """Known users from many networks calling every ``every`` s."""
    return [_row(i, start + i * every / users, ip=f"10.{(i % users) // 4}.{i % users}.9", principal=f"jwt:user-{i % users}")
            for i in range(int(seconds / every * users))]


def _flood(start: float, count: int, rate: float, ip: str = "203.0.113.7", service: str = "orders") -> list[dict[str, Any]]:
    """One address presenting a new API key on every call."""
    return [_row(10**6 + i, start + i / rate, ip=ip, principal=f"apikey:{i:08x}", service=service) for i in range(count)]


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["time"])


def test_a_principal_flood_from_one_address_is_marked_once_per_group_and_window() -> None:
    enricher = IdentityFlood(CONFIG)
    rows = _sorted(_steady(0, 300) + _flood(200, 260, rate=5.0))  # 200 new keys in [180, 240), 60 in [240, 300)
    got = _run(enricher, rows)
    source = [(i, v) for i, v in enumerate(got["identity_flood_source"]) if v]
    service = [(i, v) for i, v in enumerate(got["identity_flood_service"]) if v]
    assert [v for _, v in source] == [50.0, 50.0] and [v for _, v in service] == [200.0]
    assert {rows[i]["source"]["ip"] for i, _ in source + service} == {"203.0.113.7"}
    assert sum(got["new_identity"]) == 40 + 260 and enricher.floods == 3


def test_known_identities_are_new_once_and_nothing_fires_while_learning() -> None:
    enricher = IdentityFlood(CONFIG)
    got = _run(enricher, _sorted(_steady(0, 200) + _flood(10, 100, rate=20.0)))  # the flood lands within learn_s
    assert sum(got["new_identity"]) == 140 and not any(got["identity_flood_source"]) and not any(got["identity_flood_service"])
    again = _run(enricher, _steady(200, 60) + _flood(260, 100, rate=20.0))  # the same keys again, after learning
    assert not any(again["new_identity"]) and not any(again["identity_flood_source"])


def test_an_address_rotating_through_its_ipv6_64_is_one_source() -> None:
    enricher = IdentityFlood(CONFIG)
    rotation = [_row(10**6 + i, 200 + i * 0.1, ip=f"2001:db8:7:9:{i:x}::1") for i in range(80)]
    got = _run(enricher, _sorted(_steady(0, 260) + rotation))
    assert [v for v in got["identity_flood_source"] if v] == [50.0]
    assert network_of("2001:db8:7:9:ffff::2") == network_of("2001:db8:7:9::1") != network_of("2001:db8:7:a::1")


def test_a_workload_minting_principals_is_one_source_whatever_its_addresses() -> None:
    enricher = IdentityFlood(CONFIG)
    minted = [_row(10**6 + i, 200 + i * 0.2, ip=f"10.244.{i % 7}.{i % 200}", principal=f"jwt:svc-{i}", workload="shop/batch") for i in range(60)]
    got = _run(enricher, _sorted(_steady(0, 260) + minted))
    assert [v for v in got["identity_flood_source"] if v] == [50.0]


def test_a_steady_stream_of_new_users_is_normal_and_ten_times_it_is_a_flood() -> None:
    """A gateway's workload brings ~30 new users a minute, every minute: its own baseline, not a flood; 10x is."""
    enricher = IdentityFlood(CONFIG)
    arrivals = [_row(i, i * 2.0, ip="10.0.0.5", principal=f"jwt:new-{i}", workload="edge/gateway") for i in range(30 * 12)]  # 12 windows
    spike = [_row(10**6 + i, 720 + i * 0.1, ip="10.0.0.5", principal=f"jwt:spike-{i}", workload="edge/gateway") for i in range(400)]
    got = _run(enricher, arrivals + spike)
    fired = [(i, v) for i, v in enumerate(got["identity_flood_source"]) if v]
    assert len(fired) == 1 and fired[0][0] >= len(arrivals) and fired[0][1] >= 50


def test_a_lasting_flood_is_marked_in_every_window_it_lasts() -> None:
    enricher = IdentityFlood(CONFIG)
    got = _run(enricher, _sorted(_steady(0, 600) + _flood(180, 4200, rate=10.0)))  # 420 s of 600 new keys a minute
    assert sum(1 for v in got["identity_flood_source"] if v) == 7  # the baseline never learns the flood


def test_batching_and_a_restore_give_the_same_signals() -> None:
    rows = _sorted(_steady(0, 300) + _flood(200, 300, rate=20.0))
    whole = _run(IdentityFlood(CONFIG), rows, size=10_000)
    first, second = IdentityFlood(CONFIG), IdentityFlood(CONFIG)
    head = _run(first, rows[:900], size=37)
    second.restore(first.export())
    tail = _run(second, rows[900:], size=53)
    assert {k: head[k] + tail[k] for k in whole} == whole
    assert IdentityFlood(CONFIG).export() and IdentityFlood(CONFIG).restore(b"") is None


def test_odd_rows_count_for_nothing() -> None:
    enricher = IdentityFlood(CONFIG)
    nan = _row(1, 0, ip="10.0.0.1")
    nan["time"] = math.nan
    anonymous = _row(2, 1)  # neither address nor principal: no identity at all
    got = _run(enricher, [nan, anonymous, _row(3, 2, ip="10.0.0.1")])
    assert got["new_identity"] == [0.0, 0.0, 1.0]
    late = _run(enricher, _sorted(_steady(3, 400)))  # groups now in later windows
    assert sum(late["new_identity"]) == 40
    stale = _run(enricher, [_row(9, 5, ip="198.51.100.1", principal=f"jwt:old-{i}") for i in range(60)])
    assert sum(stale["new_identity"]) == 60 and not any(stale["identity_flood_source"])  # rows from long before are not counted


def test_memory_stays_bounded_under_a_flood_of_new_identities() -> None:
    """100,000 new identities from 100,000 networks: the filters keep their size, the group table its budget."""
    config = IdentityFloodConfig(learn_s=0.0, capacity=5_000, bits=1 << 16, max_groups=1_000)
    enricher = IdentityFlood(config)
    sizes = (enricher.seen.current.nbytes, enricher.seen.previous.nbytes)
    for start in range(0, 100_000, 5_000):
        batch = [_row(i, i * 0.001, ip=f"{11 + i // 65536}.{(i // 256) % 256}.{i % 256}.1") for i in range(start, start + 5_000)]
        _run(enricher, batch, size=5_000)
        assert len(enricher.groups) <= config.max_groups
    assert (enricher.seen.current.nbytes, enricher.seen.previous.nbytes) == sizes == (8192, 8192)
    assert enricher.seen.rotations >= 19 and enricher.evicted >= 90_000 and enricher.new_identities >= 99_000
    assert len(enricher.export()) < 200_000
    assert enricher.floods >= 1  # the service group saw it all


def test_seen_filter_entering_hashes_already_in_the_older_generation_keeps_them_known() -> None:
    seen = SeenFilter(capacity=3, bits=4096, hashes=4)
    keep = np.array([42], dtype=np.uint64)
    seen.add(keep)
    for i in range(20):  # many rotations; 42 is seen in between and so carried forward
        assert not seen.add(np.concatenate([keep, np.array([1000 + i], dtype=np.uint64)]))[0]
    assert seen.rotations >= 5


def test_a_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="bits"):
        IdentityFloodConfig(bits=1000)
    with pytest.raises(ValueError, match="source_floor"):
        IdentityFloodConfig(source_floor=-1)
    assert IdentityFloodConfig.from_windows(30, 4).learn_s == 120.0


def test_a_flood_already_past_the_line_when_learning_ends_is_marked_at_once() -> None:
    enricher = IdentityFlood(IdentityFloodConfig(learn_s=90.0, source_floor=50, service_floor=10_000))
    got = _run(enricher, _sorted(_steady(0, 120) + _flood(60, 250, rate=5.0)))  # 150 new keys in [60, 90), during learning
    fired = [v for v in got["identity_flood_source"] if v]
    assert len(fired) == 1 and fired[0] > 150
