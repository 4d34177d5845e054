"""``kubeward bench waf``: Kubeward behind a real Envoy beside ModSecurity v3 + OWASP CRS at paranoia 1 and 2.

The same labeled rows (``deploy.lab.waf_rows``) go to three systems in front of
the same echo upstream (``deploy.runtime.echo``, in a process of its own):

* ``kubeward``: Envoy with ``deploy/dataplanes/envoy/ext_authz-http-body.yaml``
  (ext_authz HTTP with the request body) asking a ``kubeward shim`` process
  that runs without Kafka, its policy's default mode ``enforce`` (inline
  findings deny) and its shipped inspection settings. Envoy fails closed here,
  so a slow shim shows up as 503 under ``other_status``, never as a pass.
* ``crs_pl1`` / ``crs_pl2``: nginx as a reverse proxy with the Debian
  ModSecurity module and the Debian CRS 3.3, configured from
  ``deploy/dataplanes/nginx/modsecurity/`` with the paranoia level rendered in;
  nginx is restarted between the two levels.

Blocked means HTTP 403. Requests go over keep-alive raw sockets (CRS tests use
targets and headers an HTTP library would rewrite), from 1-4 client threads,
within a bounded time per system and block. Results: ``build/waf-compare.json``
(per dataset and position, per system: tpr, fpr, p50_ms, p99_ms, n,
per_category, per_paranoia for CRS rows, other_status) and a table. The
datasets are development data, and the tables say so.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from deploy.lab.waf_rows import POSITIONS, BenchRow, Outcome, Position, load_crs, load_morzeux, render_table, request_bytes, sample_rows, summarize
from deploy.runtime.process import free_port, start_shim, stop_process, wait_http
from deploy.runtime.proxies import DATAPLANES, Proxy, ProxyError, envoy_binary, envoy_version, nginx_binary, nginx_version, spawn, wait_ready

__all__ = ["SYSTEMS", "add_cli", "main", "render_envoy_body", "render_modsecurity", "run_rows", "start_crs_nginx", "start_kubeward_envoy"]

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO.parent / "shared" / "datasets"
SYSTEMS = ("kubeward", "crs_pl1", "crs_pl2")
MODSEC = DATAPLANES / "nginx" / "modsecurity"
UNICODE_MAP = Path("/etc/nginx/unicode.mapping")  # shipped by libnginx-mod-http-modsecurity; CRS's t:urlDecodeUni reads it
ProgressFn = Callable[[str], None]


# ------------------------------------------------------------------ the peer: nginx + ModSecurity + CRS


def render_modsecurity(workdir: Path, paranoia: int, port: int, upstream_port: int) -> Path:
    """Write nginx.conf, rules.conf, modsecurity.conf and crs-setup.conf (paranoia rendered in) into ``workdir``; returns nginx.conf."""
    if paranoia not in (1, 2, 3, 4):
        raise ValueError(f"paranoia must be 1-4, got {paranoia!r}")
    for sub in ("logs", "tmp", "modsec-tmp", "modsec-data"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    values = {"@WORKDIR@": str(workdir), "@PARANOIA@": str(paranoia), "@PORT@": str(port), "@UPSTREAM_PORT@": str(upstream_port), "@USER@": user}
    for name in ("nginx.conf", "rules.conf", "modsecurity.conf", "crs-setup.conf"):
        text = (MODSEC / name).read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        if name == "modsecurity.conf" and UNICODE_MAP.exists():
            text += f"SecUnicodeMapFile {UNICODE_MAP} 20127\n"
        (workdir / name).write_text(text)
    return workdir / "nginx.conf"


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def start_crs_nginx(workdir: Path, upstream_port: int, paranoia: int, timeout: float = 30) -> Proxy:
    """nginx + ModSecurity + CRS at ``paranoia`` in front of the upstream (own prefix; nothing under /etc/nginx)."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = render_modsecurity(workdir, paranoia, port, upstream_port)
    base = [str(nginx_binary()), "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "logs" / "error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        raise ProxyError(f"nginx rejected {conf}:\n{check.stderr[-2000:]}")
    out = workdir / "logs" / "nginx.out"
    proc = spawn(base, out, workdir)
    wait_ready(lambda: _listening(port), proc, "nginx+modsecurity", [workdir / "logs" / "error.log"], timeout)
    return Proxy("nginx-modsecurity", port, proc, workdir, workdir / "logs" / "error.log", nginx_version(), "allow")


# ------------------------------------------------------------------ Kubeward: Envoy (with body) + shim


def _find_authz(config: dict[str, Any]) -> dict[str, Any]:
    for chain in config["static_resources"]["listeners"][0]["filter_chains"]:
        for net in chain["filters"]:
            for http_filter in net["typed_config"].get("http_filters", []):
                if http_filter["name"] == "envoy.filters.http.ext_authz":
                    found: dict[str, Any] = http_filter["typed_config"]
                    return found
    raise ProxyError("ext_authz-http-body.yaml has no envoy.filters.http.ext_authz filter")


def render_envoy_body(shim_port: int, upstream_port: int, port: int, admin_port: int, fail_closed: bool = True) -> dict[str, Any]:
    """``deploy/dataplanes/envoy/ext_authz-http-body.yaml`` with these ports (and, for the bench, failing closed)."""
    config: dict[str, Any] = yaml.safe_load((DATAPLANES / "envoy" / "ext_authz-http-body.yaml").read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    ports = {"orders": upstream_port, "kubeward_shim": shim_port}
    for cluster in config["static_resources"]["clusters"]:
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = ports[cluster["name"]]
    authz = _find_authz(config)
    authz["failure_mode_allow"] = not fail_closed
    authz["http_service"]["server_uri"]["uri"] = f"http://127.0.0.1:{shim_port}"
    return config


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=1) as resp:
        return bool(resp.status == 200)


def start_kubeward_envoy(workdir: Path, shim_port: int, upstream_port: int, timeout: float = 30) -> Proxy:
    """Envoy with ext_authz (request body included) to the shim on ``shim_port``; returns once /ready is LIVE."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port, admin = free_port(), free_port()
    conf = workdir / "envoy.yaml"
    conf.write_text(yaml.safe_dump(render_envoy_body(shim_port, upstream_port, port, admin), sort_keys=False))
    log = workdir / "envoy.log"
    cmd = [str(envoy_binary()), "-c", str(conf), "--log-path", str(log), "-l", "warning", "--disable-hot-restart", "--concurrency", "1"]
    proc = spawn(cmd, workdir / "envoy.out", workdir)
    wait_ready(lambda: _http_ok(f"http://127.0.0.1:{admin}/ready"), proc, "envoy", [workdir / "envoy.out"], timeout)
    return Proxy("envoy", port, proc, workdir, log, envoy_version(), "deny")


@contextmanager
def _kubeward(workdir: Path, upstream_port: int) -> Iterator[int]:
    shim_port, admin_port = free_port(), free_port()
    # every row comes from one client: each is judged on its own (the fast tier would refuse the client after a burst)
    settings = {"bootstrap": None, "port": shim_port, "admin_port": admin_port, "report": "none", "adapter": "envoy", "policy": {"default_mode": "enforce"},
                "fast_tier": {"enabled": False}}
    shim = start_shim(workdir / "shim.log", settings)
    try:
        with start_kubeward_envoy(workdir / "envoy", shim_port, upstream_port) as envoy:
            yield envoy.port
    finally:
        stop_process(shim)


@contextmanager
def _crs(workdir: Path, upstream_port: int, paranoia: int) -> Iterator[int]:
    with start_crs_nginx(workdir, upstream_port, paranoia) as nginx:
        yield nginx.port


@contextmanager
def _echo_upstream(workdir: Path) -> Iterator[int]:
    port = free_port()
    # TCP_NODELAY: the echo writes headers and body in two sends, and with Nagle on, the second waits for the
    # proxy's delayed ACK (a 40 ms p50 for every request that passes, measured). The echo keeps every request
    # it saw; the list is emptied each second so a long run does not grow without bound.
    code = (f"import socketserver, time\nsocketserver.StreamRequestHandler.disable_nagle_algorithm = True\n"
            f"from deploy.runtime.echo import EchoUpstream\ne = EchoUpstream(port={port}).start()\nwhile True:\n    time.sleep(1)\n    e.seen.clear()")
    with (workdir / "echo.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(lambda: _listening(port), proc, "echo upstream", [workdir / "echo.log"], 20)
        yield port
    finally:
        stop_process(proc)


# ------------------------------------------------------------------ the client


class _Connection:
    """One client connection: raw request bytes out, one parsed HTTP response back; reconnects when the server closed."""

    def __init__(self, port: int, timeout: float):
        self.port, self.timeout = port, timeout
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _exchange(self, data: bytes, method: str) -> tuple[int, bool]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(data)
        resp = http.client.HTTPResponse(self.sock, method=method)
        resp.begin()
        resp.read()
        return resp.status, bool(resp.will_close)

    def send(self, row: BenchRow) -> Outcome:
        data = request_bytes(row)
        if row.one_shot:
            self.close()
        for attempt in (0, 1):
            reused = self.sock is not None
            start = time.perf_counter()
            try:
                status, closing = self._exchange(data, row.method)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 0 and isinstance(exc, (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine)):
                    continue  # the server closed an idle keep-alive connection: once more on a fresh one
                return Outcome(row.id, 0, (time.perf_counter() - start) * 1000, type(exc).__name__)
            ms = (time.perf_counter() - start) * 1000
            if closing or row.one_shot:
                self.close()
            return Outcome(row.id, status, ms)
        raise AssertionError("unreachable")


def run_rows(port: int, rows: Sequence[BenchRow], concurrency: int = 2, budget_s: float = 600, timeout: float = 10,
             progress: ProgressFn | None = None) -> list[Outcome]:
    """Send ``rows`` to 127.0.0.1:``port`` from ``concurrency`` threads (keep-alive each) until done or ``budget_s`` is spent."""
    if not 1 <= concurrency <= 16:
        raise ValueError(f"concurrency must be 1-16, got {concurrency!r}")
    outcomes: list[Outcome] = []
    lock, deadline, cursor = threading.Lock(), time.monotonic() + budget_s, iter(rows)

    def work() -> None:
        conn = _Connection(port, timeout)
        try:
            while time.monotonic() < deadline:
                with lock:
                    row = next(cursor, None)
                if row is None:
                    return
                got = conn.send(row)
                with lock:
                    outcomes.append(got)
                    if progress is not None and len(outcomes) % 500 == 0:
                        progress(f"{len(outcomes)}/{len(rows)}")
        finally:
            conn.close()

    threads = [threading.Thread(target=work, daemon=True, name=f"waf-client-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


# ------------------------------------------------------------------ the run


def load_blocks(datasets: Path, names: Sequence[str], positions: Sequence[Position], limit: int | None, sample: int | None) -> tuple[dict[str, list[BenchRow]], dict[str, dict[str, int]]]:
    """Rows per ``dataset/position`` block (cut to ``limit`` first rows, or a stratified ``sample``), and skipped rows by reason."""
    blocks: dict[str, list[BenchRow]] = {}
    skipped: dict[str, dict[str, int]] = {}
    for name in names:
        if name == "http-params-morzeux":
            wanted = [p for p in positions if p in ("query", "json")]
            for position, rows in load_morzeux(datasets / name / "httpparams_train.jsonl", wanted).items():
                blocks[f"{name}/{position}"] = rows
        elif name == "crs-regression":
            if "request" in positions:
                blocks[f"{name}/request"], skipped[f"{name}/request"] = load_crs(datasets / name / "crs_regression.jsonl")
        else:
            raise ValueError(f"dataset {name!r} is not one of ('http-params-morzeux', 'crs-regression')")
    for key, rows in blocks.items():
        blocks[key] = sample_rows(rows, sample) if sample else rows[:limit] if limit else rows
    return blocks, skipped


def _system(name: str, workdir: Path, upstream_port: int) -> Any:
    if name == "kubeward":
        return _kubeward(workdir / "kubeward", upstream_port)
    if name in ("crs_pl1", "crs_pl2"):
        return _crs(workdir / name, upstream_port, int(name[-1]))
    raise ValueError(f"system {name!r} is not one of {SYSTEMS}")


def _prefixed(progress: ProgressFn, prefix: str) -> ProgressFn:
    return lambda message: progress(prefix + message)


def run_bench(blocks: dict[str, list[BenchRow]], systems: Sequence[str], workdir: Path, concurrency: int, budget_s: float,
              progress: ProgressFn) -> dict[str, dict[str, dict[str, Any]]]:
    """Every block through every system (one system up at a time, the same rows in the same order); figures per block and system."""
    results: dict[str, dict[str, dict[str, Any]]] = {key: {} for key in blocks}
    with _echo_upstream(workdir) as upstream_port:
        for system in systems:
            with _system(system, workdir, upstream_port) as port:
                for key, rows in blocks.items():
                    run_rows(port, rows[:20], concurrency, 30)  # warm connections and caches; not counted
                    started = time.monotonic()
                    outcomes = run_rows(port, rows, concurrency, budget_s, progress=_prefixed(progress, f"  {system} {key} "))
                    results[key][system] = summarize(rows, outcomes)
                    progress(f"{system} {key}: {len(outcomes)} rows in {time.monotonic() - started:.1f} s")
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubeward bench waf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(p)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", default=str(DATASETS), help=f"dev datasets folder (default {DATASETS})")
    p.add_argument("--names", default="http-params-morzeux,crs-regression", help="comma-separated datasets under --datasets")
    p.add_argument("--out", default=str(REPO / "build" / "waf-compare.json"), help="where to write the JSON results")
    p.add_argument("--positions", default=",".join(POSITIONS), help="comma-separated: query, json (Morzeux), request (CRS)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--limit", type=int, help="only the first N rows of each dataset/position")
    p.add_argument("--sample", type=int, help="a stratified sample of about N rows per dataset/position (every category kept)")
    p.add_argument("--concurrency", type=int, default=2, choices=(1, 2, 3, 4), help="client connections (default 2)")
    p.add_argument("--budget-s", type=float, default=900, help="time limit per system and dataset/position (default 900 s)")
    p.add_argument("--workdir", default=str(REPO / "build" / "waf-bench"), help="configs and logs of the proxies")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _run(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    positions = [p for p in POSITIONS if p in _split(args.positions)]
    systems = _split(args.systems)
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"--systems: {unknown} not among {list(SYSTEMS)}")
    blocks, skipped = load_blocks(Path(args.datasets), _split(args.names), positions, args.limit, args.sample)
    progress("rows: " + ", ".join(f"{k} {len(v)}" for k, v in blocks.items()) + (f"; skipped {skipped}" if any(skipped.values()) else ""))
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results = run_bench(blocks, systems, workdir, args.concurrency, args.budget_s, progress)
    meta = {"dev_data": True, "datasets": _split(args.names), "limit": args.limit, "sample": args.sample, "concurrency": args.concurrency,
            "skipped": skipped, "versions": {"envoy": envoy_version(), "nginx": nginx_version(), "crs": "3.3.4 (Debian modsecurity-crs)"},
            "blocked_means": "HTTP 403", "kubeward_shim": "kubeward shim, no Kafka, policy default_mode enforce, shipped inspection settings"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**results, "meta": meta}, indent=2))
    what = f"stratified sample of ~{args.sample} rows per block" if args.sample else f"first {args.limit} rows per block" if args.limit else "all rows"
    print(render_table(results, f"WAF comparison on DEV data ({what}; recall (attacks), false positives (benign), latency p50/p99 with counts)"))
    print(f"\nwritten to {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``kubeward bench waf [--datasets DIR] [--out FILE] [--limit N | --sample N] [--positions ...] [--systems ...]``."""
    return _run(_parser().parse_args(argv))


def add_cli(sub: Any) -> None:
    """Register ``waf`` on ``sub`` (the subparsers of ``kubeward bench``)."""
    p = sub.add_parser("waf", help="Kubeward through Envoy beside ModSecurity + CRS PL1/PL2 (build/waf-compare.json)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(p)
    p.set_defaults(func=_run)


if __name__ == "__main__":
    sys.exit(main())
