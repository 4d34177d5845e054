"""Zero loss across faults, counted end to end on the real broker (issue 9, item 5).

Each test runs one fault of ``deploy.lab.faults`` (fresh broker, workers, shim, traffic through the
spooling publisher) and checks that every summary and every verdict is accounted for:
sent = processed + dead-lettered, nothing lost; repeats (at least once) are counted apart and a
verdict delivered twice has the same effect in the shim's cache. Counts go to build/faults.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Fault = Callable[[str], dict[str, Any]]


def accounted(c: dict[str, Any]) -> None:
    """What every fault must show."""
    brief = json.dumps({k: c[k] for k in ("sent", "processed", "dead_lettered", "lost", "not_on_topic", "uncommitted_messages",
                                          "verdicts", "attackers", "publisher", "timeline")})
    assert c["lost"] == 0, brief
    assert c["sent"] == c["processed"] + c["dead_lettered"], brief
    assert c["not_on_topic"] == 0 and c["uncommitted_messages"] == 0, brief
    assert c["processed"] > 5000 and c["dead_lettered"] > 0, brief  # traffic flowed, and probes reached the dead-letter topic
    assert c["publisher"]["rows_dropped"] == 0 and c["publisher"]["rows_failed"] == 0, brief
    assert c["publisher"]["rows_replayed"] == c["publisher"]["rows_spooled"], brief  # the spool was drained in the end
    v = c["verdicts"]
    assert v["lost"] == 0 and v["sent"] == v["processed"] + v["dead_lettered"], brief
    assert v["same_effect"], "a verdict issued again must carry the same subject, scope, action and mode"
    assert c["attackers"]["sent"] > 0 and c["attackers"]["denied"] == c["attackers"]["sent"], brief
    again = v["redelivered"]
    assert again["applied_again"] + again["stale"] == again["records"] > 0, again  # each one taken, none refused
    assert again["cache_entries_after"] == again["cache_entries_before"] == v["sent"], again
    assert again["attackers_denied_after"] == c["attackers"]["sent"], again


def test_broker_restart_mid_stream_loses_nothing(fault: Fault) -> None:
    c = fault("broker-restart")
    accounted(c)
    assert c["publisher"]["rows_spooled"] > 0, "the broker was away longer than the delivery timeout: the publisher should have spooled"


def test_worker_kill_9_and_restart_loses_nothing(fault: Fault) -> None:
    c = fault("worker-kill")
    accounted(c)
    assert [w["ended"] for w in c["workers"]] == ["killed", "running"]
    assert c["reprocessed"] >= 0 and not c["reprocessed_exact"]  # rows past the last commit are processed again


def test_two_workers_with_rebalance_lose_nothing(fault: Fault) -> None:
    c = fault("workers-2")
    accounted(c)
    assert {w["name"] for w in c["workers"] if w["processed"] > 0} == {"w1", "w2"}


def test_three_workers_with_rebalance_lose_nothing(fault: Fault) -> None:
    c = fault("workers-3")
    accounted(c)
    assert {w["name"] for w in c["workers"] if w["processed"] > 0} == {"w1", "w2", "w3"}


def test_shim_restart_rebuilds_every_verdict(fault: Fault) -> None:
    c = fault("shim-restart")
    accounted(c)


def test_broker_paused_30_s_loses_nothing(fault: Fault) -> None:
    c = fault("broker-pause")
    accounted(c)
    pause = [s for s in c["timeline"] if s["step"] in ("broker_pause", "broker_resume")]
    assert pause[1]["at_s"] - pause[0]["at_s"] >= 30.0
    assert c["publisher"]["rows_spooled"] > 0, "sends timed out during the pause: they should have gone to disk"


def test_publisher_spool_replays_after_the_broker_and_the_publisher_come_back(fault: Fault) -> None:
    c = fault("publisher-spool")
    accounted(c)
    assert c["publisher"]["publishers"] == 2
    assert c["publisher"]["left_in_spool"][0] > 0, "the first publisher closed with rows on disk"
    assert c["publisher"]["left_in_spool"][-1] == 0
