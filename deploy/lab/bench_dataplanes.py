"""What Kubeward costs in front of a real proxy: Envoy and nginx with the shim, against the same proxy without it.

For each data plane, in the same run and against the same upstream (the
constant-200 server of ``deploy.lab.bench``), ``wrk`` measures the plain proxy
and the proxy asking the shim (shipped configuration, shipped shim defaults,
HS256 JWTs checked), alternating plain / with-shim twice and keeping each
side's better run. Requests rotate through 2,000 users' JWTs and 500 paths with
ids, so the shim's identity memo and the proxies see a realistic mix rather
than one repeated request. Figures: requests/s ratio (with shim / plain) and the
p99 the shim adds, each with its request count; and, to separate the data
plane's own cost of asking from the shim's, the same proxy asking a server that
answers every check with a constant 200.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deploy.runtime.demoapi import mint_jwt
from deploy.runtime.process import free_port, start_shim, stop_process
from deploy.runtime.proxies import start_envoy, start_nginx

__all__ = ["bench_dataplanes"]

REPO = Path(__file__).resolve().parents[2]
SECRET = "kubeward-bench-idp-secret"


def _script(path: Path, users: int = 2000, paths: int = 500, seed: int = 5) -> Path:
    rng = random.Random(seed)
    tokens = [mint_jwt(f"user-{u:05d}", SECRET.encode()) for u in range(users)]
    routes = [rng.choice(("/orders/{}", "/orders/{}/items", "/invoices/{}", "/profiles/{}", "/search?q=shoes&page={}")).format(rng.randrange(10**5, 10**6))
              for _ in range(paths)]
    lua = ["tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}", "paths = {" + ",".join(f'"{p}"' for p in routes) + "}",
           "i = 0",
           "request = function()",
           "  i = i + 1",
           '  return wrk.format("GET", paths[(i % #paths) + 1], {["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1], ["Host"] = "orders.shop.svc.cluster.local"})',
           "end"]
    path.write_text("\n".join(lua) + "\n")
    return path


def _wrk(port: int, seconds: int, connections: int, script: Path) -> dict[str, float]:
    from deploy.lab.bench import parse_wrk

    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/"]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout, seconds)


def _measure(start: Any, workdir: Path, seconds: int, connections: int, script: Path) -> dict[str, float]:
    proxy = start(workdir)
    try:
        _wrk(proxy.port, 1, connections, script)  # warm connections and caches
        return _wrk(proxy.port, seconds, connections, script)
    finally:
        proxy.stop()


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return max(runs, key=lambda r: r["rps"])


def bench_dataplanes(workdir: Path, seconds: int = 8, connections: int = 32) -> dict[str, Any]:
    """Plain proxy vs proxy + shim, for Envoy and nginx (see the module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = _script(workdir / "mix.lua")
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", f"from deploy.lab.bench import serve_constant; serve_constant({upstream_port})"],
                                cwd=REPO, start_new_session=True)
    results: dict[str, Any] = {"seconds": seconds, "connections": connections, "users": 2000, "paths": 500}
    try:
        time.sleep(1.0)
        for kind, starter in (("envoy", start_envoy), ("nginx", start_nginx)):
            shim_port, admin_port = free_port(), free_port()
            shim = start_shim(workdir / f"shim-{kind}.log", {"bootstrap": None, "port": shim_port, "admin_port": admin_port, "report": "none",
                                                              "adapter": kind, "identity": {"jwt_hs256_secret": SECRET, "trusted_hops": 1}})
            try:
                plain, guarded, constant = [], [], []
                for _ in range(2):
                    plain.append(_measure(lambda d, s=starter: s(d, shim_port, upstream_port, plain=True), workdir / f"{kind}-plain", seconds, connections, script))
                    guarded.append(_measure(lambda d, s=starter: s(d, shim_port, upstream_port), workdir / f"{kind}-shim", seconds, connections, script))
                    # the same check sent to a server that always answers 200: what the data plane's own check costs
                    constant.append(_measure(lambda d, s=starter: s(d, upstream_port, upstream_port), workdir / f"{kind}-constant", seconds, connections, script))
            finally:
                stop_process(shim)
            p, g, c = _best(plain), _best(guarded), _best(constant)
            results[kind] = {"plain": p, "with_shim": g, "with_constant_check": c, "ratio_vs_plain": round(g["rps"] / p["rps"], 3),
                             "added_p99_ms": round(g["p99_ms"] - p["p99_ms"], 3),
                             "constant_check_ratio_vs_plain": round(c["rps"] / p["rps"], 3)}
    finally:
        stop_process(upstream)
    return results
