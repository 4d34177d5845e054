"""Benchmarks of the real parts, printed and written to ``build/bench.json``.

``kubeward bench`` measures, on one local stack (fresh broker, worker, shim):

* ``worker.records_per_cpu_second``: summaries per CPU-second of the worker
  process (shipped defaults: every rule, every enricher) while it drains a
  topic pre-filled with Arrow envelopes of fresh summaries (event time moving
  forward, new actors appearing: ``deploy.lab.bench_worker``); in the same
  run, ``..._no_detection`` for a worker with no detector and no enricher
  and ``..._single`` for one JSON summary per message, plus the ratios.
  Broker CPU and the load average are reported beside them.
  ``worker.inprocess_records_per_cpu_second``: the same rows through
  ``Pipeline.handle_many`` in 20k-row envelopes, without Kafka.
* ``latency_ms``: from a summary's timestamp to its verdict applied in the
  shim's cache, while simulated traffic flows at ``rate_eps``; probe actors
  that enumerate objects trigger one verdict each.
* ``latency_ms.fast_tier``: the same for the signals the shim acts on itself
  (``enforcement.fasttier``): from sending the request that completes an
  enumeration to the shim's refusal of it, 1,000 probes beside 2,000 benign
  checks/s with reports on (``deploy.lab.bench_fasttier``).
* ``shim``: decisions per second and latency percentiles under ``wrk`` (64
  connections, shim pinned to one core), with and without summary reports;
  ``shim.realistic``: the same under the realistic mix of ``deploy.lab.bench_shim``
  (10,000 identities, 1% under a verdict, varied paths and bodies, reports on).
* ``scale``: summaries per wall second with 1, 2 and 4 workers sharing a
  4-partition topic (``deploy.lab.bench_scale``).
* ``worker.bytes_per_identity``: state bytes per actor with 100k actors.
* ``worker.process_bytes_per_identity``: the worker process's resident memory
  per additional identity (the slope of RSS against identities tracked, 100k
  to 1M, a realistic mix with event time moving forward, through
  ``Pipeline.handle_many`` in a fresh process: ``deploy.lab.bench_memory``).

Nothing here asserts a target; the figures are printed next to the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from deploy.lab.bench_real import bench_real_traffic, real_traffic_summary, say
from deploy.lab.bench_scale import bench_scale
from deploy.lab.bench_shim import NullTransport, bench_realistic_inprocess, bench_realistic_wrk
from deploy.lab.bench_worker import bench_worker, bench_worker_inprocess, cpu_seconds
from ingest import actor_key, summary_row

__all__ = ["add_cli", "run_bench"]

REPO = Path(__file__).resolve().parents[2]
TARGETS = {
    "worker.records_per_cpu_second": ">= 250000",
    "worker.inprocess_records_per_cpu_second": ">= 250000 (no Kafka)",
    "latency_ms.probes": ">= 1000",
    "shim.realistic.decisions_per_second": ">= 100000 (one core, 64 connections, reports on)",
    "shim.realistic.p99_ms": "<= 1.5",
    "latency_ms.p50": "<= 10 at 10000 eps",
    "latency_ms.p99": "<= 50 at 10000 eps",
    "latency_ms.fast_tier.p99": "<= 50",
    "latency_ms.fast_tier.probes": ">= 1000",
    "shim.decisions_per_second": ">= 100000 on one core, 64 connections",
    "shim.p99_ms": "<= 1.5",
    "worker.bytes_per_identity": "<= 256",
    "worker.process_bytes_per_identity": "<= 256 (RSS slope, all in)",
    "envoy.ratio_vs_plain": ">= 0.6",
    "envoy.added_p99_ms": "<= 1.5",
    "nginx.ratio_vs_plain": ">= 0.6",
    "nginx.added_p99_ms": "<= 1.5",
    "collectors.entries_per_cpu_second": ">= 100000",
    "templating.exact": ">= 0.98",
    "sensitive.min_precision": ">= 0.95 (dev)",
    "sensitive.min_recall": ">= 0.95 (dev)",
    "inspection.us_per_request_p50": "<= 50 (no body)",
    "inspection.us_per_kb": "<= 10",
    "inspection.crafted_60kb_ms_p50": "< 250 (the shipped check timeout)",
    "redaction.us_per_kb": "<= 10",
    "redaction.min_precision": ">= 0.95 (dev)",
    "redaction.min_recall": ">= 0.95 (dev)",
}


def bench_latency(workdir: Path, rate_eps: float, seconds: float, worker_settings: dict[str, Any] | None = None, publisher_linger_ms: float = 5.0,
                  probe_interval_s: float = 0.035) -> dict[str, Any]:
    """Summary time -> verdict applied in the shim, under simulated load at ``rate_eps``, one probe actor every
    ``probe_interval_s`` (about 28 a second: over 1,000 probes in 40 s)."""
    from deploy.runtime.stack import LocalStack
    from ingest.publish import SummaryPublisher
    from ingest.simulator import ClusterSimulator

    with LocalStack(workdir / "latency", worker_settings={"window_s": 60, **(worker_settings or {})}, shim_settings={"report": "none"}) as stack:
        pub = SummaryPublisher(stack.bootstrap, envelope_rows=1000, linger_ms=publisher_linger_ms, client_id="bench-latency")
        pub.start_background_flush(0.001)
        # about 0.5 calls/s per user, as in the demo, so users keep their usual breadth
        sim = ClusterSimulator(seed=5, users=min(90_000, int(rate_eps * 2)), start_time=time.time(), benign_rate_eps=rate_eps)
        say(f"latency: driving {rate_eps:.0f} events/s for {seconds:.0f} s with a probe attacker every {probe_interval_s * 1000:.0f} ms")
        t0, sent, next_probe, probes, batch = time.time(), 0, time.time() + 2.0, 0, []
        for call in sim.calls(seconds):
            batch.append(call.to_row(uuid.uuid4().hex, b"bench-key"))
            if len(batch) >= 50 or call.time - time.time() > 0.003:
                delay = call.time - time.time()
                if delay > 0:
                    time.sleep(delay)
                pub.publish_rows(batch)
                sent += len(batch)
                batch = []
            if time.time() >= next_probe:
                pub.publish_rows(_probe_rows(probes))
                probes, next_probe = probes + 1, next_probe + probe_interval_s
        pub.flush()
        achieved = sent / (time.time() - t0)
        time.sleep(2.0)
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['shim_admin']}/stats", timeout=5).read())
        worker_metrics = urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['worker_web']}/metrics", timeout=5).read().decode()
        pub.close()
    lag = {m.group(1): float(m.group(2)) for m in re.finditer(r'^kubeward_worker_event_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', worker_metrics, re.M)}
    lat = sorted(stats["latency_ms"])
    pick = lambda q: round(lat[min(len(lat) - 1, int(q / 100 * (len(lat) - 1)))], 2) if lat else None  # noqa: E731
    delivery = sorted(stats.get("verdict_delivery_ms", []))
    return {"verdict_delivery_ms_p50": round(delivery[len(delivery) // 2], 2) if delivery else None, "worker_lag_histogram": lag, "rate_eps": rate_eps, "rate_eps_achieved": round(achieved), "probes": probes, "verdicts_measured": len(lat), "p50": pick(50), "p90": pick(90), "p99": pick(99), "max": lat[-1] if lat else None}


def _probe_rows(n: int) -> list[dict[str, Any]]:
    """30 reads of distinct objects by a fresh end user, stamped now: one BOLA verdict."""
    now = time.time()
    return [
        summary_row(
            id=uuid.uuid4().hex, time=now, reporter="bench", principal=f"probe-{n}", auth_type="jwt",
            source={"workload": "shop/frontend", "namespace": "shop", "ip": "10.9.9.9"},
            destination={"service": "orders", "namespace": "shop"},
            method="GET", path_template="/orders/{id}", status=404, object_ids=[uuid.uuid4().hex[:16]],
        )
        for _ in range(30)
    ]


def parse_wrk(out: str, seconds: float) -> dict[str, float]:
    """Requests/s, p50/p90/p99 (ms), request count and non-2xx answers from ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            lat[q] = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"rps": rps, "p50_ms": lat.get("50", 0.0), "p90_ms": lat.get("90", 0.0), "p99_ms": lat.get("99", 0.0),
            "requests": int(total.group(1)) if total else int(rps * seconds), "non_2xx": int(errors.group(1)) if errors else 0}


def _wrk(port: int, seconds: int, connections: int, script: Path, cpu: int) -> dict[str, float]:
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/orders/81231"]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout, seconds)


def _publish_verdicts(bootstrap: str, count: int) -> None:
    """Signed block verdicts for other actors, so the shim's lookups run against a populated cache."""
    from kafka import KafkaProducer

    from ingest import VERDICTS, Subject, Verdict, sign_verdict

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    now = time.time()
    for i in range(count):
        verdict = Verdict(id=f"bench-{i}", subject=Subject(kind="actor", value=actor_key("shop/frontend", f"blocked-{i}")), action="block", mode="enforce", expires_at=now + 3600, issued_at=now - 60, evidence_time=now - 60)
        signed = sign_verdict(verdict, b"kubeward-dev-verdict-key")
        producer.send(VERDICTS.name, key=signed.entry_key.encode(), value=signed.model_dump_json().encode())
    producer.flush()
    producer.close()


def serve_constant(port: int) -> None:
    """The baseline: the shim's own HTTP protocol answering a constant 200, with no decision at all."""
    import asyncio

    import uvloop

    from enforcement.adapters.httpcheck import render
    from enforcement.server import HttpConnection

    allow = render(200, [("x-kubeward-decision", "allow")])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: HttpConnection(lambda m, u, h, p, b: allow), "127.0.0.1", port, backlog=1024)
        await asyncio.Event().wait()

    uvloop.run(main())


def _baseline(workdir: Path, seconds: int, connections: int, script: Path) -> dict[str, float]:
    port = _free_port()
    proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", f"from deploy.lab.bench import serve_constant; serve_constant({port})"], cwd=REPO, start_new_session=True)
    try:
        _wait_port(port)
        _wrk(port, 2, connections, script, cpu=1)
        c0, t0 = cpu_seconds(proc.pid), time.time()
        res = _wrk(port, seconds, connections, script, cpu=1)
        res["cpu_cores"] = round((cpu_seconds(proc.pid) - c0) / (time.time() - t0), 2)
        return res
    finally:
        proc.terminate()
        proc.wait(10)


def _free_port() -> int:
    from deploy.runtime.process import free_port

    return free_port()


def _wait_port(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def bench_shim(workdir: Path, seconds: int, connections: int) -> dict[str, Any]:
    """Shim decisions/s under wrk; shim on core 0, wrk on core 1; with and without summary reports."""
    from deploy.runtime.process import free_port, start_shim, stop_process
    from deploy.runtime.stack import LocalStack

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run `make tools` (apt-get install wrk)")
    script = workdir / "headers.lua"
    workdir.mkdir(parents=True, exist_ok=True)
    script.write_text('wrk.headers["x-kubeward-source-workload"] = "shop/frontend"\nwrk.headers["x-kubeward-principal"] = "user-00042"\nwrk.headers["x-forwarded-for"] = "10.1.2.3"\n')
    results: dict[str, Any] = {}
    say(f"shim: baseline (the same HTTP server answering a constant 200), wrk -c{connections} for {seconds} s")
    results["baseline_constant_200"] = _baseline(workdir, seconds, connections, script)
    say(f"shim: baseline {results['baseline_constant_200']['rps']:,.0f} responses/s")
    with LocalStack(workdir / "shim", with_worker=False, with_shim=False) as stack:
        _publish_verdicts(stack.bootstrap, 1000)
        for label, report in (("no_reports", "none"), ("with_reports", "all")):
            port, admin = free_port(), free_port()
            proc = start_shim(workdir / f"shim-{label}.log", {"bootstrap": stack.bootstrap, "port": port, "admin_port": admin, "report": report}, cpu=0)
            say(f"shim ({label}): wrk -c{connections} for {seconds} s")
            _wrk(port, 2, connections, script, cpu=1)
            c0, t0 = cpu_seconds(proc.pid), time.time()
            res = _wrk(port, seconds, connections, script, cpu=1)
            res["cpu_cores"] = round((cpu_seconds(proc.pid) - c0) / (time.time() - t0), 2)
            results[label] = res
            say(f"shim ({label}): {res['rps']:,.0f} decisions/s, p99 {res['p99_ms']} ms, {res['cpu_cores']} cores")
            stop_process(proc)
    best = results["no_reports"]
    ratio = best["rps"] / results["baseline_constant_200"]["rps"]
    return {"decisions_per_second": round(best["rps"]), "vs_constant_baseline": round(ratio, 2), "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"], "connections": connections, "cpu_cores": best["cpu_cores"], "runs": results}


def bench_shim_inprocess(requests: int = 200_000) -> dict[str, Any]:
    """CPU per request through the shim's HTTP protocol object, without sockets: constant answer vs. full decision.

    Steadier than wrk on a shared machine; the gap is what ``decide`` and its inputs cost.
    """
    from enforcement.settings import ShimSettings
    from enforcement.server import DecisionTimer, HttpConnection, check_connection
    from enforcement.shim import Shim
    from ingest import Subject, Verdict

    request = (b"GET /orders/81231 HTTP/1.1\r\nHost: orders\r\nx-kubeward-source-workload: shop/frontend\r\n"
               b"x-kubeward-principal: user-00042\r\nx-forwarded-for: 10.1.2.3\r\n\r\n")
    shim = Shim(ShimSettings(bootstrap=None, report="none"))
    shim.synced.set()
    for i in range(1000):
        shim.cache.apply(Verdict(id=f"v{i}", subject=Subject(kind="actor", value=actor_key("shop/frontend", f"blocked-{i}")), action="block", mode="enforce", expires_at=time.time() + 3600, issued_at=0, evidence_time=0))
    out: dict[str, Any] = {}
    constant = HttpConnection(lambda m, u, h, p, b: shim.adapter.allow_response)
    decision = check_connection(shim, DecisionTimer(shim.settings.timing_sample) if shim.settings.timing_sample else None)
    for label, conn in (("constant_200_us", constant), ("decision_us", decision)):
        conn.connection_made(NullTransport())
        started = time.process_time()
        for _ in range(requests):
            conn.data_received(request)
        out[label] = round((time.process_time() - started) / requests * 1e6, 2)
    out["decide_share"] = round(1 - out["constant_200_us"] / out["decision_us"], 2)
    return out


def bench_state(identities: int) -> dict[str, Any]:
    """Worker state bytes per tracked identity after ``identities`` distinct actors."""
    import tracemalloc

    from streams import WorkerSettings
    from streams.replay import Replay

    template = _probe_rows(0)[0]
    rows = (dict(template, id=f"{i}", principal=f"user-{i}", object_ids=[f"{i:016x}"]) for i in range(identities))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    run = Replay(WorkerSettings())
    run.run(rows, batch_rows=5000)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    store = run.processor().store
    allocated = sum(s.size_diff for s in after.compare_to(before, "filename") if "streams" in str(s.traceback) or "numpy" in str(s.traceback))
    return {"identities": len(store), "bytes_per_identity": round(store.nbytes() / len(store), 1), "allocated_bytes_per_identity": round(allocated / len(store), 1)}


def bench_process_memory(points: str) -> dict[str, Any]:
    """``deploy.lab.bench_memory`` in a fresh process (this one's heap holds the other benchmarks' leftovers)."""
    cmd = [sys.executable, "-m", "deploy.lab.bench_memory", "--points", points]
    return dict(json.loads(subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, timeout=3600).stdout))


def run_bench(out: Path, quick: bool = False) -> dict[str, Any]:
    """Run every benchmark and write the JSON report."""
    work = REPO / "build" / "bench"
    shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "targets": TARGETS}
    say("state: 100k identities")
    results["worker_state"] = bench_state(100_000)
    say("worker memory: whole process, a growing population (deploy.lab.bench_memory)")
    results["worker_memory"] = bench_process_memory("100000,200000,400000" if quick else "100000,200000,500000,1000000")
    say("shim: CPU per request in-process (no sockets)")
    results["shim_inprocess"] = bench_shim_inprocess()
    results["shim"] = bench_shim(work, seconds=5 if quick else 10, connections=64)
    say("shim: the realistic mix (10,000 JWT identities, 1% blocked, varied paths and bodies, reports on), wrk -c64")
    results["shim_realistic"] = bench_realistic_wrk(work / "realistic", seconds=5 if quick else 10)
    results["shim_realistic_inprocess"] = bench_realistic_inprocess(50_000 if quick else 200_000)
    say("scale-out: 1, 2 and 4 workers on a 4-partition topic (deploy.lab.bench_scale)")
    results["scale"] = bench_scale(work / "scale", rows_total=400_000 if quick else 1_500_000)
    # few singles: a one-summary message costs ~14 ms of per-batch work once the state has grown (40k took over 10 min)
    results["worker"] = bench_worker(work, envelope_rows_total=200_000 if quick else 1_000_000, single_total=2_000 if quick else 5_000)
    say("worker: in process (Pipeline.handle_many, 20k-row envelopes), shipped defaults then no detection")
    results["worker_inprocess"] = bench_worker_inprocess(100_000 if quick else 300_000)
    results["worker_inprocess_no_detection"] = bench_worker_inprocess(100_000 if quick else 300_000, detectors=[], enrichers=[])
    results["latency_ms"] = bench_latency(work, rate_eps=10_000.0, seconds=15 if quick else 40, worker_settings={"batch_within_s": 0.005}, publisher_linger_ms=2.0)
    say("latency through the shim's fast tier: enumeration probes refused on the request that completes them (deploy.lab.bench_fasttier)")
    from deploy.lab.bench_fasttier import bench_fast_tier
    results["latency_ms_fast_tier"] = bench_fast_tier(work, probes=1000, seconds=30 if quick else 60)
    say("latency at 2,000 events/s, for comparison")
    results["latency_ms_2000eps"] = bench_latency(work, rate_eps=2_000.0, seconds=15 if quick else 30, worker_settings={"batch_within_s": 0.005}, publisher_linger_ms=2.0)
    results["real_traffic"] = bench_real_traffic(work, quick)
    flat = {
        "worker.records_per_cpu_second": results["worker"]["records_per_cpu_second"],
        "worker.records_per_cpu_second_single": results["worker"]["records_per_cpu_second_single"],
        "worker.envelope_vs_single_ratio": results["worker"]["envelope_vs_single_ratio"],
        "worker.records_per_cpu_second_no_detection": results["worker"]["records_per_cpu_second_no_detection"],
        "worker.vs_no_detection_ratio": results["worker"]["vs_no_detection_ratio"],
        "worker.load_average": results["worker"]["envelope_run"]["load_average_end"],
        "worker.inprocess_records_per_cpu_second": results["worker_inprocess"]["records_per_cpu_second"],
        "worker.inprocess_records_per_cpu_second_no_detection": results["worker_inprocess_no_detection"]["records_per_cpu_second"],
        "worker.inprocess_load_average": results["worker_inprocess"]["load_average_end"],
        "latency_ms.probes": results["latency_ms"]["probes"],
        "latency_ms.verdicts_measured": results["latency_ms"]["verdicts_measured"],
        "latency_ms.p50": results["latency_ms"]["p50"],
        "latency_ms.p99": results["latency_ms"]["p99"],
        "latency_ms.rate_eps": results["latency_ms"]["rate_eps_achieved"],
        "latency_ms.fast_tier.probes": results["latency_ms_fast_tier"]["completing_request_ms"]["n"],
        "latency_ms.fast_tier.p50": results["latency_ms_fast_tier"]["completing_request_ms"].get("p50"),
        "latency_ms.fast_tier.p99": results["latency_ms_fast_tier"]["completing_request_ms"].get("p99"),
        "latency_ms.fast_tier.benign_refusals": results["latency_ms_fast_tier"]["background_fast_tier_refusals"],
        "latency_ms.p50_at_2000eps": results["latency_ms_2000eps"]["p50"],
        "latency_ms.p99_at_2000eps": results["latency_ms_2000eps"]["p99"],
        "shim.decisions_per_second": results["shim"]["decisions_per_second"],
        "shim.vs_constant_baseline": results["shim"]["vs_constant_baseline"],
        "shim.decisions_per_second_with_reports": round(results["shim"]["runs"]["with_reports"]["rps"]),
        "shim.p99_ms": results["shim"]["p99_ms"],
        "shim.connections": results["shim"]["connections"],
        "shim.inprocess_us_per_decision": results["shim_inprocess"]["decision_us"],
        "shim.inprocess_us_constant_baseline": results["shim_inprocess"]["constant_200_us"],
        "shim.cpu_cores": results["shim"]["cpu_cores"],
        "shim.realistic.decisions_per_second": round(results["shim_realistic"]["rps"]),
        "shim.realistic.p99_ms": results["shim_realistic"]["p99_ms"],
        "shim.realistic.cpu_cores": results["shim_realistic"]["cpu_cores"],
        "shim.realistic.inprocess_us_per_decision": results["shim_realistic_inprocess"]["us_per_decision"],
        "scale.records_per_second_by_workers": results["scale"]["records_per_second_by_workers"],
        "worker.bytes_per_identity": results["worker_state"]["allocated_bytes_per_identity"],
        "worker.process_bytes_per_identity": results["worker_memory"]["rss_bytes_per_identity"],
        **real_traffic_summary(results["real_traffic"]),
    }
    results["summary"] = flat
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print()
    for key, value in flat.items():
        print(f"{key:<42} {value!s:>12}   target {TARGETS.get(key, '-')}")
    print(f"\nwritten to {out}")
    return results


def add_cli(sub: Any) -> None:
    """Register ``kubeward bench``."""
    p = sub.add_parser("bench", help="run the benchmarks (writes build/bench.json)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "build" / "bench.json"), help="where to write the JSON results")
    p.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    p.add_argument("--real-traffic-only", action="store_true", help="only the real-traffic figures (proxies vs plain, collector, templating, sensitive data)")
    p.set_defaults(func=_cmd)
    from deploy.lab.footprint import add_cli as add_footprint_cli
    from deploy.lab.soak import add_cli as add_soak_cli
    from deploy.lab.waf_bench import add_cli as add_waf_cli

    suites = p.add_subparsers(dest="suite", metavar="SUITE", title="suites")
    add_waf_cli(suites)
    add_soak_cli(suites)
    add_footprint_cli(suites)  # about 5 minutes per path: not part of the default run


def _cmd(args: argparse.Namespace) -> int:
    if not args.real_traffic_only:
        run_bench(Path(args.out), args.quick)
        return 0
    real = bench_real_traffic(REPO / "build" / "bench", args.quick)
    flat = real_traffic_summary(real)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"real_traffic": real, "summary": flat, "targets": TARGETS}, indent=2, default=str))
    for key, value in flat.items():
        print(f"{key:<42} {value!s:>12}   target {TARGETS.get(key, '-')}")
    return 0
