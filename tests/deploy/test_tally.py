"""The demo's scoring against ground truth, and its timeline plot."""

from __future__ import annotations

from pathlib import Path

from deploy.lab.tally import Tally, plot_timeline


def _run() -> Tally:
    tally = Tally()
    for i in range(10):  # attacker: 3 calls allowed, then denied
        tally.record_check("shop/web|mallory", True, "bola", "bola-1", denied=i >= 3, reason="bola_breadth" if i >= 3 else None, t=100.0 + i)
    for i in range(50):
        tally.record_check(f"shop/web|user-{i % 5}", False, "benign", None, denied=(i == 7), reason="inline:injection" if i == 7 else None, t=100.0 + i / 5)
    tally.record_check("shop/web|mallory", False, "bola", "bola-1", denied=True, reason="bola_breadth", t=111.0)
    tally.record_verdict("shop/web|mallory", "bola", 102.5)
    tally.record_verdict("shop/web|mallory", "bola", 109.0)  # only the first verdict per subject counts
    return tally


def test_report_counts_attackers_and_benign_actors_separately() -> None:
    report = _run().report([5.0, 10.0, 20.0])
    attackers, benign = report["attackers"], report["benign"]
    assert (attackers["total"], attackers["detected"], attackers["blocked"]) == (1, 1, 1)
    assert attackers["requests_before_block_median"] == 3
    assert attackers["by_attack"]["bola-1"]["requests"] == 10  # the attacker's benign-labelled call is not an attack call
    assert (benign["actors"], benign["actors_blocked"], benign["requests"], benign["requests_blocked"]) == (5, 1, 50, 1)
    assert report["detections_by_class"] == {"bola": 1}
    assert report["latency_ms"]["detect_to_enforce_p50"] == 10.0
    assert report["denied_by_reason"] == {"bola_breadth": 8, "inline:injection": 1}


def test_timeline_buckets_calls_per_second_and_the_plot_is_written(tmp_path: Path) -> None:
    tally = _run()
    assert tally.timeline[0] == [1, 0]  # second 0: one malicious call, allowed
    assert sum(s[1] for s in tally.timeline.values()) == 7  # malicious calls denied
    assert tally.actor_seconds[11, "shop/web|mallory", True] == 1  # mallory's ordinary call, denied, stays with mallory
    assert sum(n for (_, a, d), n in tally.actor_seconds.items() if d and a != "shop/web|mallory") == 1
    assert tally.verdict_seconds == [(2.5, "bola")]
    path = tmp_path / "timeline.png"
    assert plot_timeline(tally, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_verdict_on_the_client_address_detects_every_actor_from_it() -> None:
    tally = Tally()
    for i in range(5):
        tally.record_check("203.0.113.9|-", True, "credential_stuffing", "stuffing-1", denied=i >= 2, reason="account-enumeration", t=100.0 + i)
    tally.record_check("203.0.113.10|-", True, "credential_stuffing", "stuffing-2", denied=False, reason=None, t=100.0)
    tally.record_verdict("203.0.113.9", "credential_abuse", 101.5, kind="ip")
    tally.record_verdict("203.0.113.10|-", "bola", 101.5)  # an actor verdict whose value merely looks like an address
    attackers = tally.report([1.0])["attackers"]
    assert attackers["detected"] == 2
    assert [attackers["by_attack"][k]["detected_as"] for k in ("stuffing-1", "stuffing-2")] == ["credential_abuse", "bola"]
    other = Tally()
    other.record_check("203.0.113.9|-", True, "credential_stuffing", "stuffing-1", denied=False, reason=None, t=100.0)
    other.record_verdict("203.0.113.99", "credential_abuse", 101.5, kind="ip")
    assert other.report([1.0])["attackers"]["detected"] == 0


def test_the_plot_takes_calls_answered_before_the_first_second(tmp_path: Path) -> None:
    tally = _run()
    tally.actor_seconds[-1, "shop/web|early", False] += 1  # a call timed just before the run's start
    assert plot_timeline(tally, tmp_path / "early.png")


def test_a_tool_verdict_covers_the_calls_counted_under_the_tool() -> None:
    """A tool attack's calls are counted under ``tool:<server>/<tool>`` (not the agent that made them), and the verdict
    on the tool subject (kind ``tool``) is what detects it; the agent's other calls stay benign."""
    tally = Tally()
    for i in range(4):
        tally.record_check("tool:agents/mcp/weather", True, "poisoned-tool", "poisoned-tool", denied=i >= 1,
                           reason="mcp-tool-poisoning" if i >= 1 else None, t=100.0 + i)
        tally.record_check("agents/travel|jwt:1", False, "agent", None, denied=False, reason=None, t=100.0 + i)
    tally.record_verdict("agents/mcp/weather", "mcp-tool-poisoning", 100.5, "tool")
    report = tally.report([])
    assert report["attackers"]["detected"] == 1 and report["attackers"]["by_attack"]["poisoned-tool"]["allowed_before_block"] == 1
    assert (report["benign"]["actors"], report["benign"]["actors_blocked"]) == (1, 0)


def test_the_agents_ground_truth_names_tool_attacks_by_tool_and_time() -> None:
    from threading import Lock

    from deploy.lab.agents import COMMUNITY, SHOP, AgentPlan, AgentRecorder
    from ingest.identity import IdentityConfig

    recorder = AgentRecorder(Tally(), Lock(), IdentityConfig())
    call = {"method": "tools/call", "params": {"name": "currency_rates", "arguments": {}}}
    assert recorder.tool_attack("a", SHOP, call) is None  # before the rug-pull: an ordinary call
    recorder.rug_pull_at = 0.0
    assert recorder.tool_attack("a", SHOP, call) == ("rug-pull", "tool:agents/mcp-shop/currency_rates")
    weather = {"method": "tools/call", "params": {"name": "weather"}}
    assert recorder.tool_attack("a", COMMUNITY, weather) == ("poisoned-tool", "tool:agents/mcp-community/weather")
    assert recorder.tool_attack("a", COMMUNITY, {"method": "tools/list"}) is None
    plan = AgentPlan.for_run(1000.0, 120.0, 36.0)
    assert 1036.0 < plan.injected_document_at < plan.rug_pull_at < plan.pii_exfiltration_at < plan.extraction_at < plan.end == 1120.0
    assert recorder.actor("agents/crm", {"Authorization": "Bearer opaque-key"}).startswith("agents/crm|bearer:")
    assert recorder.actor("agents/crm", {}) == "agents/crm|-"


def test_an_attack_spanning_two_actors_of_one_agent_counts_neither_as_benign() -> None:
    """A hijacked agent's model call carries its API key, its tool calls none: two actors, one attack."""
    tally = Tally()
    tally.record_check("agents/bot|-", False, "agent", None, denied=False, reason=None, t=1.0)  # before the hijack
    tally.record_check("agents/bot|bearer:k", True, "injected-document", "injected-document", denied=True, reason="inline", t=2.0)
    tally.record_check("agents/bot|-", True, "injected-document", "injected-document", denied=True, reason="agent-injected", t=3.0)
    tally.record_verdict("agents/bot|-", "prompt_injection", 2.5)
    report = tally.report([])
    assert report["benign"]["actors"] == 0 and report["benign"]["collateral_requests"] == 1
    assert report["attackers"]["by_attack"]["injected-document"]["detected_as"] == "prompt_injection"
