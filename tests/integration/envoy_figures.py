"""Figures for the Envoy gRPC endpoints (not tests): ``.venv/bin/python -m tests.integration.envoy_figures``.

* client latency through Envoy with no tap, the shipped observability-mode tap, and a BUFFERED tap;
* CPU the collector process spends per exchange (tap) and per access-log entry (ALS), behind real Envoy;
* CPU the ALS source spends per entry when a gRPC client streams pre-serialized batches of
  40, 160 and 640 entries (the per-message cost of gRPC against the per-entry cost of parsing).

Every server runs in a child process so that it shares no GIL with the client; CPU comes
from /proc (10 ms ticks). On a shared machine, report the load average with the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from ingest.collectors.als import SERVICE_NAME as ALS_SERVICE
from tests.ingest.test_als import make_entry, message
from tests.integration.envoy_util import Envoy, Upstream, free_ports, retarget

TOKEN = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2ln"


def _child(module: str, cls: str) -> tuple[subprocess.Popen[str], int]:
    """A source serving on a free port in a child process; (process, port). End it with ``communicate("")``."""
    serve = f"import sys; from {module} import {cls} as S; s = S(port=0); print(s.start(lambda b: None), flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", serve], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return child, int(child.stdout.readline()) if child.stdout else 0


def measure_tap_latency(requests: int = 600) -> dict[str, tuple[float, float]]:
    """Median and p90 client latency (ms) through Envoy: no tap, the shipped observability tap, a BUFFERED tap.

    Three Envoys run side by side and requests alternate between them, so load on
    the machine affects all three alike. Sequential keep-alive GETs of a 3 KiB
    JSON body from a local upstream; the tap runs in its own process so that it
    does not share the client's GIL.
    """
    import http.client
    import statistics
    import tempfile

    body = json.dumps({"items": [{"id": i, "email": f"user{i}@example.com"} for i in range(80)]}).encode()
    upstream = Upstream(lambda path: (200, body)).start()
    tap_proc, tap_port = _child("ingest.collectors.extproc", "ExtProcTapSource")
    labels = ("no ext_proc", "observability_mode STREAMED (shipped)", "BUFFERED, answers CONTINUE")
    envoys: list[Envoy] = []
    conns: list[http.client.HTTPConnection] = []
    took: dict[str, list[float]] = {label: [] for label in labels}
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for n, label in enumerate(labels):
                listener, admin = free_ports(2)
                config = retarget("ext_proc-tap.yaml", listener, admin, {"app": upstream.port, "kubeward_tap": tap_port})
                hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
                if n == 0:
                    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_proc"]
                elif n == 2:
                    tap = hcm["http_filters"][0]["typed_config"]
                    tap["observability_mode"] = False
                    tap["processing_mode"].update(request_body_mode="BUFFERED", response_body_mode="BUFFERED")
                (Path(workdir) / str(n)).mkdir()
                envoys.append(Envoy(config, Path(workdir) / str(n), admin).start())
                conns.append(http.client.HTTPConnection("127.0.0.1", listener, timeout=10))
            for i in range(requests + 20):
                for label, conn in zip(labels, conns):
                    start = time.perf_counter()
                    conn.request("GET", f"/orders/{i}")
                    assert conn.getresponse().read() == body
                    if i >= 20:
                        took[label].append((time.perf_counter() - start) * 1e3)
        finally:
            for conn in conns:
                conn.close()
            for envoy in envoys:
                envoy.stop()
            tap_proc.communicate("", timeout=10)
            upstream.stop()
    return {label: (statistics.median(v), sorted(v)[int(len(v) * 0.9)]) for label, v in took.items()}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_collector_cpu(requests: int = 3000) -> dict[str, float]:
    """CPU (us) the collector process spends per exchange: the tap per exchange, the ALS source per entry.

    Each source runs alone in a child process behind its shipped Envoy config;
    sequential keep-alive GETs; CPU from /proc (10 ms ticks, so use thousands of requests).
    ALS is measured at Envoy's default buffer_size_bytes (16 KiB) and the shipped 256 KiB.
    """
    import http.client
    import tempfile

    upstream = Upstream(lambda path: (200, b'{"ok": true}')).start()
    results: dict[str, float] = {}
    cases = [("ext_proc tap, us per exchange", "ext_proc-tap.yaml", "kubeward_tap", "ingest.collectors.extproc", "ExtProcTapSource", None),
             ("ALS 16 KiB batches, us per entry", "access-log-service.yaml", "kubeward_als", "ingest.collectors.als", "AccessLogServiceSource", 16384),
             ("ALS 256 KiB batches, us per entry", "access-log-service.yaml", "kubeward_als", "ingest.collectors.als", "AccessLogServiceSource", 262144)]
    try:
        for label, name, cluster, module, cls, buffer in cases:
            child, port = _child(module, cls)
            try:
                listener, admin = free_ports(2)
                config = retarget(name, listener, admin, {"app": upstream.port, cluster: port})
                if buffer is not None:
                    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
                    hcm["access_log"][0]["typed_config"]["common_config"]["buffer_size_bytes"] = buffer
                with tempfile.TemporaryDirectory() as workdir:
                    envoy = Envoy(config, Path(workdir), admin).start()
                    try:
                        conn = http.client.HTTPConnection("127.0.0.1", listener, timeout=10)
                        for i in range(50):
                            conn.request("GET", "/warm")
                            conn.getresponse().read()
                        time.sleep(1.5)  # the warm-up's access-log batch has left
                        before = _cpu_seconds(child.pid)
                        for i in range(requests):
                            conn.request("GET", f"/orders/{i}", headers={"authorization": TOKEN})
                            conn.getresponse().read()
                        time.sleep(1.5)  # the last batch has arrived
                        results[label] = (_cpu_seconds(child.pid) - before) / requests * 1e6
                        conn.close()
                    finally:
                        envoy.stop()
            finally:
                child.communicate("", timeout=10)
    finally:
        upstream.stop()
    return results


def measure_als_grpc(per_message: int, entries: int = 30_000) -> float:
    """CPU (us) per entry of the ALS source in a child process, fed pre-serialized batches over gRPC."""
    child, port = _child("ingest.collectors.als", "AccessLogServiceSource")
    try:
        batches = [message(*(make_entry(b * per_message + i) for i in range(per_message))).SerializeToString() for b in range(entries // per_message)]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = channel.stream_unary(f"/{ALS_SERVICE}/StreamAccessLogs", request_serializer=None, response_deserializer=None)
            stream(iter(batches[:5]), timeout=30)
            time.sleep(0.5)
            before = _cpu_seconds(child.pid)
            stream(iter(batches), timeout=120)
            time.sleep(0.3)
            return (_cpu_seconds(child.pid) - before) / (len(batches) * per_message) * 1e6
    finally:
        child.communicate("", timeout=10)


if __name__ == "__main__":
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, (p50, p90) in measure_tap_latency().items():
        print(f"{name:40s} p50 {p50:6.2f} ms   p90 {p90:6.2f} ms")
    for name, cpu in measure_collector_cpu().items():
        print(f"{name:40s} {cpu:6.1f} us CPU")
    for per in (40, 160, 640):
        cpu = measure_als_grpc(per)
        print(f"ALS over gRPC, {per:3d} entries/message      {cpu:6.1f} us CPU per entry ({1e6 / cpu:,.0f} entries/CPU-s)")
