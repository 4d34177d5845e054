"""Memory and CPU of the per-node collector as the Helm chart runs it, at fixed access-log entry rates.

``python -m deploy.lab.footprint --rates 200,1000,5000 --seconds 75 --mode files|als``
(also ``kubeward bench collector-footprint``). For each rate, in a fresh directory:

1. the collector starts as its own process, the chart's entry point and command (``kubeward collect``,
   the ``kubeward`` next to this Python, else ``python -m deploy.cli collect``) with the environment
   deploy/helm/kubeward/templates/collector.yaml gives it under the default values (files glob and
   offsets file, ALS on, join [access_log], object-id and principal keys, trusted hops, trusted data
   planes, internal networks, pod watch on, Kafka PLAINTEXT); only paths, ports, the bootstrap and the
   keys are local stand-ins, and a kubeconfig replaces the in-cluster service account;
2. it publishes to a real Kafka broker started here (``deploy.runtime.stack.LocalStack``, broker only);
   the pod watch talks to a fake API server in this process (a LIST of ``--pods`` pods, the load's 40
   caller pods among them, then a watch that only sends bookmarks);
3. once /metrics answers (the chart's readiness probe), ``--idle`` s idle, then
   ``python -m deploy.lab.footprintload`` (its own process, so its CPU is not counted) writes entries
   of the bench mix at the rate for ``--seconds`` s: to 20 pod log files (``files``) or over 20 ALS
   streams (``als``); 5 s of drain, a last /metrics read, SIGTERM.

Every second the collector's RSS, CPU time (user+system, all threads) and thread count are sampled;
VmHWM (the kernel's peak RSS) is read at readiness and at the end. Steady = from ``--warmup`` s after
the load starts to its end: RSS median/min/max over those samples (n), cores = CPU seconds / wall
seconds across the window. Idle = after readiness, before the load. Published rows are the
collector's own ``kubeward_publish_rows_total{result="sent"}``; they should equal the entries written.

Writes one JSON object (``runs`` and the ``command``) to ``--out`` (build/collector-footprint.json)
and prints a table; progress goes to stderr. Takes about (``--seconds`` + 25 s) per rate plus the
broker's start: ~5 minutes for the defaults, so it is not part of the default ``kubeward bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploy.lab.footprintload import FakeApi

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "build" / "collector-footprint.json"
PREFIX = "KUBEWARD_COLLECTOR_"
# The values the chart renders for the collector with its default values (and ci/defaults.yaml's trusted data
# planes, the one value without a default); tests/deploy/test_footprint.py renders the chart and compares.
CHART_FIXED = {
    "ALS__ENABLED": "true",
    "ALS__HOST": "0.0.0.0",
    "JOIN__EXPECTED": '["access_log"]',
    "IDENTITY__TRUSTED_HOPS": "1",
    "IDENTITY__TRUSTED_DATA_PLANES": '["10.244.0.0/16"]',
    "IDENTITY__INTERNAL_NETWORKS": '["10.0.0.0/8","172.16.0.0/12","192.168.0.0/16","fd00::/8"]',
    "IDENTITY__POD_WATCH": "true",
    "KAFKA__PROTOCOL": "PLAINTEXT",
}
# Set here to local stand-ins: the chart's are a node's paths, a Secret's keys, the downward API, the cluster's broker.
LOCAL = ("NODE_NAME", "METRICS_PORT", "FILES__PATHS", "FILES__STATE_PATH", "ALS__PORT", "IDENTITY__OBJECT_ID_KEY",
         "IDENTITY__PRINCIPAL_KEY", "BOOTSTRAP")
SENT = 'kubeward_publish_rows_total{result="sent"}'
Sample = tuple[float, int, float, int]  # seconds since spawn, RSS bytes, CPU seconds, threads


def say(msg: str) -> None:
    print(f"[footprint {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the collector as the chart runs it
def chart_env(work: Path, bootstrap: str, metrics_port: int, als_port: int, kubeconfig: Path | None) -> dict[str, str]:
    """The collector container's environment with local stand-ins (see ``CHART_FIXED`` and ``LOCAL``)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})  # as deploy/containers/collector.Containerfile
    env.update({PREFIX + k: v for k, v in CHART_FIXED.items()})
    env.update({PREFIX + k: v for k, v in {
        "NODE_NAME": "node-0",
        "METRICS_PORT": str(metrics_port),
        "FILES__PATHS": json.dumps([str(work / "pods" / "*" / "istio-proxy" / "*.log")]),
        "FILES__STATE_PATH": str(work / "state" / "offsets.json"),
        "ALS__PORT": str(als_port),
        "IDENTITY__OBJECT_ID_KEY": "0" * 64,
        "IDENTITY__PRINCIPAL_KEY": "1" * 64,
        "BOOTSTRAP": bootstrap,
    }.items()})
    if kubeconfig is None:
        env[PREFIX + "IDENTITY__POD_WATCH"] = "false"
    else:
        env[PREFIX + "IDENTITY__KUBECONFIG"] = str(kubeconfig)
    return env


def collector_command() -> list[str]:
    """The chart's ``kubeward collect``: the console script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("kubeward")
    return [str(script), "collect"] if script.exists() else [sys.executable, "-m", "deploy.cli", "collect"]


# ---------------------------------------------------------------- samples and their statistics (pure)
def parse_metrics(text: str) -> dict[str, float]:
    """The collector's and publisher's samples from a Prometheus text page."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("kubeward_collector_", "kubeward_publish_")):
            m = re.match(r"(\S+)\s+(\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
    return out


def window(samples: Sequence[Sample], start: float, end: float) -> list[Sample]:
    """The samples taken from ``start`` to ``end`` (seconds since spawn), both included."""
    return [s for s in samples if start <= s[0] <= end]


def cores(win: Sequence[Sample]) -> float | None:
    """CPU seconds per wall second across the window (None under two samples)."""
    if len(win) < 2 or win[-1][0] <= win[0][0]:
        return None
    return round((win[-1][2] - win[0][2]) / (win[-1][0] - win[0][0]), 4)


def mib(b: float) -> float:
    return round(b / 2**20, 1)


def rss_stats(win: Sequence[Sample]) -> dict[str, Any]:
    """n, RSS median/min/max (MiB) and cores of a window."""
    rss = [s[1] for s in win]
    if not rss:
        return {"n": 0, "rss_median_mb": None, "rss_min_mb": None, "rss_max_mb": None, "cores": None}
    return {"n": len(rss), "rss_median_mb": mib(statistics.median(rss)), "rss_min_mb": mib(min(rss)), "rss_max_mb": mib(max(rss)), "cores": cores(win)}


def phases(samples: Sequence[Sample], ready_s: float, idle_end: float, load_start: float, load_end: float, warmup: float, rate: float) -> dict[str, Any]:
    """Idle (a second after readiness to the load), steady (``warmup`` s into the load to its end), whole load."""
    steady = window(samples, load_start + warmup, load_end)
    out = {"idle": rss_stats(window(samples, ready_s + 1, idle_end)), "steady": rss_stats(steady),
           "loaded_whole": rss_stats(window(samples, load_start, load_end))}
    c = out["steady"]["cores"]
    out["steady"]["window_s"] = [round(steady[0][0], 1), round(steady[-1][0], 1)] if steady else None
    out["steady"]["cpu_us_per_entry"] = round(c / rate * 1e6, 1) if c and rate else None
    return out


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Every ``period`` s: (seconds since ``t0``, RSS, CPU seconds, threads) of the process, until ``done`` or its exit."""

    def __init__(self, pid: int, t0: float, period: float = 1.0) -> None:
        import psutil

        super().__init__(daemon=True)
        self.proc, self.t0, self.period = psutil.Process(pid), t0, period
        self.samples: list[Sample] = []
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        due = time.monotonic()
        while not self.done.is_set():
            try:
                with self.proc.oneshot():
                    c = self.proc.cpu_times()
                    self.samples.append((time.monotonic() - self.t0, self.proc.memory_info().rss, c.user + c.system, self.proc.num_threads()))
            except psutil.Error:
                return
            due += self.period
            self.done.wait(max(0.0, due - time.monotonic()))


# ---------------------------------------------------------------- one rate
def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return parse_metrics(resp.read().decode())


def one_rate(rate: float, args: argparse.Namespace, bootstrap: str, api: FakeApi | None, base: Path) -> dict[str, Any]:
    from deploy.runtime.process import free_port

    work = base / f"{args.mode}-{int(rate)}"
    (work / "pods").mkdir(parents=True)
    (work / "state").mkdir()
    mport, aport = free_port(), free_port()
    env = chart_env(work, bootstrap, mport, aport, api.kubeconfig(work / "kubeconfig.json") if api else None)
    cmd = collector_command()
    if cmd[0] == sys.executable:
        env["PYTHONPATH"] = str(REPO)
    log_path = work / "collector.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            sampler = Sampler(proc.pid, t0)
            sampler.start()
            while True:  # readiness: /metrics answers
                if proc.poll() is not None:
                    raise RuntimeError(f"collector exited {proc.returncode}: {log_path.read_text()[-3000:]}")
                if time.monotonic() - t0 > 120:
                    raise RuntimeError("collector not ready after 120 s")
                try:
                    _scrape(mport)
                    break
                except OSError:
                    time.sleep(0.1)
            ready_s, hwm_ready = time.monotonic() - t0, vm_hwm(proc.pid)
            say(f"{args.mode} {rate:g}/s: collector ready in {ready_s:.1f} s; idle {args.idle:g} s, then {args.seconds:g} s of load")
            time.sleep(args.idle)
            idle_end = load_start = time.monotonic() - t0
            load_avg_start = os.getloadavg()
            gen = [sys.executable, "-m", "deploy.lab.footprintload", "--mode", args.mode, "--rate", str(rate), "--seconds", str(args.seconds),
                   "--files", str(args.files), "--identities", str(args.identities)]
            gen += ["--root", str(work / "pods")] if args.mode == "files" else ["--target", f"127.0.0.1:{aport}"]
            done = subprocess.run(gen, cwd=REPO, capture_output=True, text=True, timeout=args.seconds + 120)
            load_end = time.monotonic() - t0
            load_avg_end = os.getloadavg()
            if done.returncode != 0 or not done.stdout.strip():
                raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
            written = int(json.loads(done.stdout.strip().splitlines()[-1])["written"])
            time.sleep(args.drain)  # the join's hold, the publisher's linger, the broker's acks
            final = _scrape(mport)
            hwm_end = vm_hwm(proc.pid)
            sampler.done.set()
            sampler.join()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    samples = sampler.samples
    run = {"mode": args.mode, "rate_target": rate, "load_seconds": args.seconds, "written": written,
           "published": final.get(SENT), "achieved_rate": round(written / args.seconds, 1),
           "ready_s": round(ready_s, 2), "startup_peak_rss_mb_vmhwm": mib(hwm_ready),
           **phases(samples, ready_s, idle_end, load_start, load_end, args.warmup, rate),
           "peak_rss_mb_vmhwm": mib(hwm_end), "threads_max": max(s[3] for s in samples),
           "load_average": {"start": [round(x, 2) for x in load_avg_start], "end": [round(x, 2) for x in load_avg_end]},
           "lag_seconds": {k: v for k, v in final.items() if "lag_seconds" in k},
           "metrics_final": {k: v for k, v in final.items() if not k.endswith("_created")},
           "rss_trace_mb": [[round(s[0], 1), mib(s[1]), round(s[2], 2)] for s in samples[:: max(1, len(samples) // 40)]],
           "collector_rc": rc}
    if args.keep_logs:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, args.keep_logs / f"collector-{args.mode}-{int(rate)}.log")
    return run


# ---------------------------------------------------------------- the whole measurement
def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every rate of ``args.rates`` on one broker; returns (and writes to ``args.out``) the report."""
    from deploy.runtime.stack import LocalStack

    rates = [float(r) for r in str(args.rates).split(",") if r.strip()]
    base = Path(tempfile.mkdtemp(prefix="kw-footprint-"))
    api = FakeApi(args.pods) if args.pods else None
    report: dict[str, Any] = {"command": command(args), "argv": [sys.executable, *sys.argv], "collector_command": collector_command(),
                              "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "source": source(),
                              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
                              "runs": []}
    try:
        if args.bootstrap:
            stack, bootstrap = None, args.bootstrap
        else:
            say("starting a Kafka broker (LocalStack, broker only)")
            stack = LocalStack(base / "stack", with_worker=False, with_shim=False).start()
            bootstrap = stack.bootstrap
        try:
            for rate in rates:
                run = one_rate(rate, args, bootstrap, api, base)
                report["runs"].append(run)
                say(f"{args.mode} {rate:g}/s: written {run['written']}, published {run['published']}, steady RSS median "
                    f"{run['steady']['rss_median_mb']} MiB, {run['steady']['cores']} cores")
        finally:
            if stack is not None:
                stack.stop()
    finally:
        if api is not None:
            api.close()
        shutil.rmtree(base, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(table(report["runs"]))
    print(f"\nwritten to {out}")
    return report


def source() -> dict[str, Any]:
    """The commit measured and the files changed beside it (the collector runs from the working tree)."""
    def git(*a: str) -> str:
        done = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=30)
        return done.stdout.rstrip() if done.returncode == 0 else ""
    return {"commit": git("rev-parse", "HEAD").strip() or None, "changed": [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]}


def command(args: argparse.Namespace) -> str:
    """The command that reproduces this report (from the repository, with its venv)."""
    opts = [f"--rates {args.rates}", f"--seconds {args.seconds:g}", f"--mode {args.mode}"]
    for name, default in (("warmup", 15), ("idle", 10), ("drain", 5), ("files", 20), ("identities", 3000), ("pods", 2000)):
        if getattr(args, name) != default:
            opts.append(f"--{name} {getattr(args, name):g}")
    return ".venv/bin/python -m deploy.lab.footprint " + " ".join(opts)


def table(runs: Sequence[dict[str, Any]]) -> str:
    """The figures as a Markdown table (MiB, cores = CPU s / wall s)."""
    head = ("| path | rate/s | written | published | steady n | RSS median | RSS max | cores | us/entry | idle RSS | idle cores "
            "| peak (VmHWM) | ready s | lag s at end | load avg (1 min, start/end) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        s, i = r["steady"], r["idle"]
        la = r.get("load_average", {})
        lines.append(f"| {r['mode']} | {r['rate_target']:,.0f} | {r['written']:,} | {r['published'] or 0:,.0f} | {s['n']} | {s['rss_median_mb']} "
                     f"| {s['rss_max_mb']} | {s['cores']} | {s['cpu_us_per_entry']} | {i['rss_median_mb']} | {i['cores']} "
                     f"| {r['peak_rss_mb_vmhwm']} | {r['ready_s']} | {round(max(r['lag_seconds'].values(), default=0.0), 2)} | {la.get('start', ['?'])[0]}/{la.get('end', ['?'])[0]} |")
    return "\n".join(lines)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rates", default="200,1000,5000", help="entries per second, comma-separated; one collector per rate (default 200,1000,5000)")
    p.add_argument("--seconds", type=float, default=75, help="seconds of load per rate (default 75)")
    p.add_argument("--mode", choices=["files", "als"], default="files",
                   help="files: entries appended to pod log files the collector tails; als: entries sent over Envoy's gRPC access-log service")
    p.add_argument("--warmup", type=float, default=15, help="seconds of load left out of 'steady' (default 15)")
    p.add_argument("--idle", type=float, default=10, help="seconds idle after readiness, before the load (default 10)")
    p.add_argument("--drain", type=float, default=5, help="seconds after the load before the last /metrics read (default 5)")
    p.add_argument("--files", type=int, default=20, help="meshed pods on the node: log files or ALS streams (default 20)")
    p.add_argument("--identities", type=int, default=3000, help="distinct end users in the traffic mix (default 3000)")
    p.add_argument("--pods", type=int, default=2000, help="pods the fake API server lists to the pod watch; 0 turns the watch off (default 2000)")
    p.add_argument("--bootstrap", help="use this Kafka broker instead of starting one")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the JSON report (default {DEFAULT_OUT.relative_to(REPO)})")
    p.add_argument("--keep-logs", type=Path, help="copy each collector's log into this directory")


def add_cli(sub: Any) -> None:
    """Register ``collector-footprint`` on ``sub`` (the suites of ``kubeward bench``)."""
    p = sub.add_parser("collector-footprint", help="the collector's RSS and CPU at fixed entry rates, as the chart runs it (build/collector-footprint.json)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(p)
    p.set_defaults(func=lambda args: (measure(args), 0)[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.lab.footprint", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(p)
    measure(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
