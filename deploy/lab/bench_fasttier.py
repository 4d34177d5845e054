"""Detect->enforce through the shim's fast tier, on the real shim with its worker and broker, reports on.

Background: benign checks from the simulator (``ClusterSimulator``, its users, workloads and paths) at
``background_cps``, over 32 keep-alive connections, the shim publishing a report of each decision (its
default) to the broker and the worker consuming them. Probes: ``probes`` fresh principals, each reading
distinct objects through the shim until the fast tier's enumeration floor (``fast_tier.max_distinct_objects``,
shipped default) is reached, several at once. Per probe the latency is from sending the request that completes
the enumeration to the shim's refusal of it; the next request of the probe is checked refused too. Benign
background checks the fast tier refused are counted (its false positives in this mix), and so is every
background answer's latency, for the load the probes met.

``python -m deploy.lab.bench_fasttier --help``; ``kubeward bench`` runs it as ``latency_ms.fast_tier``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from deploy.lab.checkclient import CheckClient, check_request

__all__ = ["bench_fast_tier", "percentiles"]

PROBE_WORKLOAD, PROBE_SERVICE, PROBE_NAMESPACE = "shop/frontend", "orders", "shop"


def percentiles(values: list[float]) -> dict[str, Any]:
    """n, p50, p90, p99 and max of ``values`` (milliseconds, two decimals); nothing but n when empty."""
    s = sorted(values)
    if not s:
        return {"n": 0}
    pick = lambda q: round(s[min(len(s) - 1, int(q / 100 * (len(s) - 1)))], 2)  # noqa: E731
    return {"n": len(s), "p50": pick(50), "p90": pick(90), "p99": pick(99), "max": round(s[-1], 2)}


async def _background(client: CheckClient, rate: float, seconds: float, seed: int, out: dict[str, Any]) -> None:
    from ingest.simulator import ClusterSimulator

    sim = ClusterSimulator(seed=seed, users=min(90_000, int(rate * 2)), start_time=time.time(), benign_rate_eps=rate)
    t0, pending, lat = time.time(), set(), out["background_ms"]

    async def one(request: bytes, actor: tuple[str | None, str | None, str]) -> None:
        began = time.perf_counter()
        result = await client.check(request)
        lat.append((time.perf_counter() - began) * 1000)
        out["background_checks"] += 1
        if result.reason is not None and result.reason.startswith("fast-tier:"):
            out["background_fast_tier_refusals"] += 1
            out["background_refused_actors"].add(actor)
        elif result.decision != "allow":
            out["background_refused_other"] += 1  # the worker's verdicts or inline inspection, not the fast tier

    for call in sim.calls(seconds):
        if call.malicious:
            continue  # benign only: what the fast tier refuses here is a false positive
        delay = call.time - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        request = check_request(call.method, call.raw_path, call.dest_service, call.dest_namespace, call.source_workload, call.principal, call.source_ip)
        task = asyncio.ensure_future(one(request, (call.source_workload, call.principal, call.source_ip)))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    out["background_seconds"] = time.time() - t0


async def _probe(client: CheckClient, n: int, floor: int, out: dict[str, Any]) -> None:
    principal = f"fast-probe-{n}"

    def request(i: int) -> bytes:
        return check_request("GET", f"/orders/{n * 100_000 + i}", PROBE_SERVICE, PROBE_NAMESPACE, PROBE_WORKLOAD, principal, "10.9.8.7")

    for i in range(floor - 1):
        result = await client.check(request(i))
        if result.decision != "allow":
            out["refused_early"] += 1
            return
    began = time.perf_counter()
    completing = await client.check(request(floor - 1))
    elapsed = (time.perf_counter() - began) * 1000
    after = await client.check(request(floor))
    if completing.reason is not None and completing.reason.startswith("fast-tier:"):
        out["latency_ms"].append(elapsed)
        out["next_refused"] += after.status == 403 and (after.reason or "").startswith("fast-tier:")
    else:
        out["not_refused"] += 1


async def _run(port: int, floor: int, probes: int, concurrency: int, background_cps: float, seconds: float, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"latency_ms": [], "next_refused": 0, "not_refused": 0, "refused_early": 0, "background_ms": [],
                           "background_checks": 0, "background_fast_tier_refusals": 0, "background_refused_other": 0, "background_refused_actors": set()}
    client = CheckClient("127.0.0.1", port, connections=32 + concurrency)
    await client.open()
    try:
        background = asyncio.ensure_future(_background(client, background_cps, seconds, seed, out))
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(probes):
            queue.put_nowait(n)

        async def prober() -> None:
            while not queue.empty():
                await _probe(client, queue.get_nowait(), floor, out)

        await asyncio.sleep(1.0)
        began = time.time()
        await asyncio.gather(*(prober() for _ in range(concurrency)))
        out["probe_seconds"] = time.time() - began
        await background
    finally:
        await client.close()
    return out


def bench_fast_tier(workdir: Path, probes: int = 1000, concurrency: int = 8, background_cps: float = 2000.0,
                    seconds: float = 60.0, seed: int = 11) -> dict[str, Any]:
    """Run the stack, the background and the probes; the figures (module docstring)."""
    from deploy.lab.bench import say
    from deploy.runtime.stack import LocalStack
    from enforcement.settings import FastTierSettings

    floor = FastTierSettings().max_distinct_objects
    # enforce mode: the probes' refusals are what is measured (observe mode answers 200 with x-kubeward-would)
    with LocalStack(workdir / "fast-tier", worker_settings={"window_s": 60}, shim_settings={"policy": {"default_mode": "enforce"}}) as stack:
        say(f"fast tier: {probes} enumeration probes ({floor} distinct objects each, {concurrency} at once) "
            f"beside {background_cps:.0f} benign checks/s for up to {seconds:.0f} s, reports on")
        out = asyncio.run(_run(stack.ports["shim"], floor, probes, concurrency, background_cps, seconds, seed))
    return {
        "floor": floor, "probes": probes, "completing_request_ms": percentiles(out["latency_ms"]),
        "next_request_refused": out["next_refused"], "not_refused": out["not_refused"], "refused_early": out["refused_early"],
        "probe_seconds": round(out.get("probe_seconds", 0.0), 1),
        "background_checks": out["background_checks"],
        "background_checks_per_second": round(out["background_checks"] / max(out.get("background_seconds", 1.0), 1e-9)),
        "background_ms": percentiles(out["background_ms"]),
        "background_fast_tier_refusals": out["background_fast_tier_refusals"],
        "background_actors_refused": len(out["background_refused_actors"]),
        "background_refused_other": out["background_refused_other"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("build/bench-fast-tier"), help="where the stack keeps its data")
    p.add_argument("--probes", type=int, default=1000, help="enumeration probes (default 1000)")
    p.add_argument("--concurrency", type=int, default=8, help="probes at once (default 8)")
    p.add_argument("--background-cps", type=float, default=2000.0, help="benign checks per second beside them (default 2000)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the background (default 60)")
    p.add_argument("--seed", type=int, default=11, help="simulator seed of the background (default 11)")
    args = p.parse_args(argv)
    result = bench_fast_tier(args.workdir, args.probes, args.concurrency, args.background_cps, args.seconds, args.seed)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
