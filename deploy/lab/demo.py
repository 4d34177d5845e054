"""The demo: a shop under attack behind a real Envoy, defended live by the real loop.

``kubeward demo`` starts a fresh local Kafka broker, the worker, the shim, the
demo API (``deploy.runtime.demoapi``), a collector and Envoy
(``deploy.runtime.demostack``), then drives the simulated cluster's calls as
real HTTP through Envoy (``deploy.lab.driver``): users with their own JWTs,
workloads from their own addresses, attackers after a learning period. Envoy
asks the shim about every call (ext_authz), copies bodies to the collector's
ext_proc tap and logs every exchange to its access-log service; the collector
derives the summaries (identity, templates, object ids, personal data) and the
worker sees nothing else. Verdicts come back to the shim and the attackers'
next calls are denied. The simulator's ground truth stays here, with the tally.
AI agents run beside the shop (``deploy.lab.agents``): real MCP clients and model-API
clients, through the same Envoy, to two MCP servers built with the official SDK and
a model API; their attacks (a poisoned tool, a rug-pull mid-run, an injected
document, personal data to an external model, model extraction) and benign work
are counted apart, in the report's ``agents`` section. Every verdict is written to
``<workdir>/verdicts.jsonl`` and every denied agent call to ``agent-denials.jsonl``.
Progress is printed every two seconds; the end prints a summary table and
writes ``build/demo-report.json`` and a timeline plot, ``build/demo-timeline.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from deploy.lab.agents import AGENT_IPS, AGENT_SERVICES, AgentPlan, AgentRecorder, run_agents
from deploy.lab.driver import GATEWAY, TrafficDriver, expected_actor, loopback_for, pace, pod_map
from deploy.lab.tally import Tally, plot_timeline
from deploy.runtime.demoapi import ROUTES, openapi_specs
from deploy.runtime.demostack import DemoDataPlane, envoy_version
from deploy.runtime.stack import LocalStack
from ingest import VERDICTS, Policy, Verdict
from ingest.identity import IdentityConfig
from ingest.simulator import ClusterSimulator, plan_attacks
from ingest.simulator.world import World
from models import REGISTRY

__all__ = ["add_cli", "run_demo"]

REPO = Path(__file__).resolve().parents[2]
JWT_SECRET = "kubeward-demo-idp-secret"
PRINCIPAL_KEY = b"kubeward-dev-principal-key"
_CLASS_BY_DETECTOR = {name: make().attack_class for name, make in REGISTRY.items()}


class VerdictWatcher(threading.Thread):
    """Follows the verdict topic and records each subject's first verdict in the tallies (the shop's, the agents')."""

    def __init__(self, bootstrap: str, tallies: list[Tally], lock: threading.Lock, log: Path | None = None):
        super().__init__(daemon=True, name="verdict-watcher")
        self.bootstrap, self.tallies, self.lock, self.log = bootstrap, tallies, lock, log
        self.stop_event = threading.Event()

    def run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(VERDICTS.name, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", group_id=None, fetch_max_wait_ms=20)
        log = self.log.open("a") if self.log is not None else None
        while not self.stop_event.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                for rec in records:
                    if rec.value is None:
                        continue
                    v = Verdict.model_validate_json(rec.value)
                    if log is not None:  # every verdict as it came, for a person reading the run afterwards
                        log.write(rec.value.decode() + "\n")
                        log.flush()
                    cls = _CLASS_BY_DETECTOR.get(v.reasons[0].detector, v.reasons[0].detector) if v.reasons else "?"
                    with self.lock:
                        for tally in self.tallies:
                            tally.record_verdict(v.subject.value, cls, time.time(), v.subject.kind)
        consumer.close()
        if log is not None:
            log.close()


async def drive(sim: ClusterSimulator, seconds: float, driver: TrafficDriver, tally: Tally, lock: threading.Lock, progress: Any = None,
                max_in_flight: int = 256) -> None:
    """Send the simulator's calls in real time through the data plane; tally what came back."""
    slots = asyncio.Semaphore(max_in_flight)

    async def one(call: Any) -> None:
        async with slots:
            result = await driver.send(call, time.time())
        with lock:
            if result.error:
                tally.errors[result.error] += 1
            if result.kubeward_decision == "unparsed":
                tally.unparsed += 1
            tally.record_check(expected_actor(call, PRINCIPAL_KEY), call.malicious, call.scenario, call.attack_id,
                               result.denied_by_kubeward, result.kubeward_reason, result.sent_at)

    await pace(sim.calls(seconds), one, progress)


def _fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return dict(json.loads(resp.read()))


class Progress:
    """Prints one status line every ``every`` seconds."""

    def __init__(self, tally: Tally, lock: threading.Lock, seconds: float, every: float = 2.0, stream: Any = sys.stdout):
        self.tally, self.lock, self.seconds, self.every, self.stream = tally, lock, seconds, every, stream
        self._next, self._last_events, self._last_t = every, 0, 0.0

    def __call__(self, elapsed: float) -> None:
        if elapsed < self._next:
            return
        with self.lock:
            t = self.tally
            rate = (t.events - self._last_events) / max(elapsed - self._last_t, 1e-6)
            atk_req = sum(a.requests for a in t.attackers.values())
            atk_den = sum(a.denied for a in t.attackers.values())
            _, _, b_req, b_den = t.benign_counts()
            det = " ".join(f"{k}={v}" for k, v in sorted(t.detections.items())) or "none yet"
        self._last_events, self._last_t, self._next = t.events, elapsed, self._next + self.every
        bar = "#" * int(20 * elapsed / self.seconds)
        print(f"[{bar:<20}] {elapsed:5.0f}s {rate:7.0f} ev/s | detections: {det} | attacker calls denied {atk_den}/{atk_req} | benign denied {b_den}/{b_req}", file=self.stream, flush=True)


def summary_table(report: dict[str, Any]) -> str:
    """A plain-text table of the report's headline figures."""
    a, b, lat = report["attackers"], report["benign"], report["latency_ms"]
    rows = [
        ("data plane", report.get("data_plane")),
        ("events", report["events"]),
        ("attackers detected", f"{a['detected']}/{a['total']}"),
        ("attackers blocked", f"{a['blocked']}/{a['total']}"),
        ("attacker calls allowed before block (median)", a["requests_before_block_median"]),
        ("benign actors blocked", f"{b['actors_blocked']}/{b['actors']}"),
        ("benign requests blocked", f"{b['requests_blocked']}/{b['requests']}"),
        ("attackers' own legitimate calls blocked (collateral)", f"{b['collateral_requests_blocked']}/{b['collateral_requests']}"),
        ("denials by cause", report["denied_by_reason"]),
        (f"detect->enforce p50 ms (n={lat['samples']})", None if lat["detect_to_enforce_p50"] is None else round(lat["detect_to_enforce_p50"], 1)),
        (f"detect->enforce p99 ms (n={lat['samples']})", None if lat["detect_to_enforce_p99"] is None else round(lat["detect_to_enforce_p99"], 1)),
    ]
    lines = [f"{k:<54} {v}" for k, v in rows]
    lines.append("")
    lines.append(f"{'attack':<24} {'kind':<20} {'calls':>6} {'denied':>6} {'before block':>12}  detected as")
    for attack_id, d in a["by_attack"].items():
        lines.append(f"{attack_id:<24} {d['kind']:<20} {d['requests']:>6} {d['denied']:>6} {str(d['allowed_before_block']):>12}  {d['detected_as']}")
    agents = report.get("agents")
    if agents:
        aa, ab = agents["attackers"], agents["benign"]
        lines += ["", "AI agents (MCP servers and model APIs through the same Envoy)",
                  f"{'agent attacks detected':<54} {aa['detected']}/{aa['total']}",
                  f"{'agent attacks blocked':<54} {aa['blocked']}/{aa['total']}",
                  f"{'benign agent actors blocked':<54} {ab['actors_blocked']}/{ab['actors']}",
                  f"{'benign agent calls blocked':<54} {ab['requests_blocked']}/{ab['requests']}",
                  f"{'agent denials by cause':<54} {agents['denied_by_reason']}"]
        for attack_id, d in aa["by_attack"].items():
            lines.append(f"{attack_id:<24} {d['actor'][:40]:<40} {d['requests']:>6} {d['denied']:>6} {str(d['allowed_before_block']):>12}  {d['detected_as']}")
    return "\n".join(lines)


def draw_blueprint(bootstrap: str, page: Path) -> None:
    """The blueprint of what the workers learned in the run: page, PNG (headless Chromium) and OpenAPI documents beside it."""
    from deploy.blueprint import BlueprintError, read_topic, write_blueprint
    from ingest import FINDINGS, INVENTORY

    records, _ = read_topic(bootstrap, INVENTORY.name, "record")
    findings, _ = read_topic(bootstrap, FINDINGS.name, "finding")
    subtitle = f"the demo's traffic through Envoy: {len(records)} inventory records, {len(findings)} findings"
    try:
        bp = write_blueprint(records, findings, page, page.with_suffix(".png"), page.with_name("openapi"), subtitle)
    except BlueprintError as exc:  # no Chromium: the page and the documents are there, the PNG is not
        bp = write_blueprint(records, findings, page, None, page.with_name("openapi"), subtitle)
        print(f"blueprint: no screenshot ({exc})", flush=True)
    print(f"blueprint written to {page} ({bp.summary()['endpoints']} endpoints, {bp.summary()['agents']} agents)", flush=True)


def run_demo(seconds: float, rate: float, seed: int, workdir: Path, report_path: Path, users: int = 3000) -> dict[str, Any]:
    """Run the whole demo and return the report (also written to ``report_path``)."""
    warmup = min(40.0, max(25.0, 0.3 * seconds))
    attacks = plan_attacks(seed, seconds, warmup)
    workdir.mkdir(parents=True, exist_ok=True)
    specs_dir = workdir / "specs"
    openapi_specs(specs_dir)
    pods_file = workdir / "pods.json"
    (workdir / "rug-pull").unlink(missing_ok=True)
    world = World(seed, users)
    world_ips = world.ips
    pods_file.write_text(json.dumps(pod_map({**world_ips, **AGENT_IPS})))
    gateways = [f"{loopback_for(ip)}/32" for ip in world_ips[GATEWAY]]
    policy = Policy(default_mode="enforce", verdict_ttl_s=max(600.0, 2 * seconds))
    worker = {"window_s": 10, "learn_windows": 3, "policy": policy.model_dump(), "specs_dir": str(specs_dir)}
    identity = {"jwt_hs256_secret": JWT_SECRET, "pods_file": str(pods_file), "trusted_proxies": gateways, "internal_networks": ["127.244.0.0/16"]}
    shim = {"report": "denied", "policy": policy.model_dump(), "adapter": "envoy", "identity": {**identity, "trusted_hops": 1}}
    tally, agent_tally, lock = Tally(), Tally(), threading.Lock()
    services = sorted({r.service for r in ROUTES})
    data_plane = envoy_version()
    print(f"kubeward demo: {seconds:.0f} s, {rate:.0f} benign calls/s through {data_plane}, {len(attacks)} attacks after a {warmup:.0f} s learning period; logs in {workdir}", flush=True)
    with LocalStack(workdir, worker_settings=worker, shim_settings=shim) as stack:
        plane = DemoDataPlane(workdir, stack.bootstrap, stack.ports["shim"], seed, users, JWT_SECRET, pods_file, specs_dir,
                              collector_settings={"identity": identity},
                              agents={"services": AGENT_SERVICES, "source": loopback_for(AGENT_IPS["agents/mcp-shop"][0]),
                                      "rug_pull_when": workdir / "rug-pull"}).start(services)
        try:
            print(f"broker {stack.bootstrap}; worker, shim, collector, demo API and Envoy (port {plane.ports['envoy']}) are up", flush=True)
            (workdir / "verdicts.jsonl").unlink(missing_ok=True)
            watcher = VerdictWatcher(stack.bootstrap, [tally, agent_tally], lock, workdir / "verdicts.jsonl")
            watcher.start()
            start = time.time()
            sim = ClusterSimulator(seed=seed, users=users, start_time=start, attacks=attacks, benign_rate_eps=rate)
            agent_errors: dict[str, int] = {}

            async def main() -> None:
                driver = TrafficDriver("127.0.0.1", plane.ports["envoy"], JWT_SECRET.encode())
                recorder = AgentRecorder(agent_tally, lock, IdentityConfig(principal_key=PRINCIPAL_KEY, jwt_hs256_secret=JWT_SECRET.encode()),
                                         denials=workdir / "agent-denials.jsonl")
                agents = run_agents(f"http://127.0.0.1:{plane.ports['envoy']}", JWT_SECRET.encode(), recorder,
                                    AgentPlan.for_run(start, seconds, warmup, workdir / "rug-pull"), world.principals[:400],
                                    world.pool["order"][:2000], world.pool["profile"][:2000], seed)
                try:
                    _, errors = await asyncio.gather(drive(sim, seconds, driver, tally, lock, Progress(tally, lock, seconds)), agents)
                    agent_errors.update(errors)
                finally:
                    await driver.close()

            import uvloop

            uvloop.run(main())
            time.sleep(2.0)
            stats = _fetch_json(f"http://127.0.0.1:{stack.ports['shim_admin']}/stats")
            watcher.stop_event.set()
            draw_blueprint(stack.bootstrap, report_path.with_name("blueprint.html"))
        finally:
            plane.stop()
        with lock:
            report = tally.report(stats["latency_ms"], {"seconds": seconds, "benign_rate_eps": rate, "seed": seed, "data_plane": data_plane,
                                                        "shim_decisions": stats["decisions"]})
            agents = agent_tally.report([])
            report["agents"] = {"attackers": agents["attackers"], "benign": agents["benign"], "events": agents["events"],
                                "denied_by_reason": agents["denied_by_reason"], "client_errors": agent_errors}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    plot = report_path.with_name("demo-timeline.png")
    if plot_timeline(tally, plot):
        print(f"timeline plot written to {plot}", flush=True)
    return report


def _cmd_demo(args: argparse.Namespace) -> int:
    from deploy.logs import setup_logging

    setup_logging("warning")
    report = run_demo(args.seconds, args.rate, args.seed, Path(args.workdir), Path(args.report))
    print()
    print(summary_table(report))
    print(f"\nreport written to {args.report}")
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward demo``."""
    p = sub.add_parser("demo", help="run the live demo (broker, worker, shim, simulated attacks)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=120.0, help="length of the simulated traffic (default 120; DEMO_SECONDS in make)")
    p.add_argument("--rate", type=float, default=300.0, help="benign calls per second through Envoy (default 300)")
    p.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    p.add_argument("--workdir", default=str(REPO / "build" / "demo"), help="where logs and the broker's data go")
    p.add_argument("--report", default=str(REPO / "build" / "demo-report.json"), help="report path (default build/demo-report.json)")
    p.set_defaults(func=_cmd_demo)
