"""The load of ``deploy.lab.footprint``: Envoy access-log entries at a fixed rate, to pod log files or to the gRPC ALS.

Run as its own process (``python -m deploy.lab.footprintload``) so that none of its CPU is counted
against the collector being measured. The traffic mix is ``deploy.lab.bench_collectors``'s
(``_Caller``/``_endpoints``/``_entry``: end users with HS256 JWTs, some API keys, some anonymous,
40 caller pods, 12 services x 8 endpoints with numeric and UUID ids, query strings, a status mix,
distinct request ids), each entry stamped with the wall clock at the moment it is written.

files: one ``<ns>_<pod>_<uid>/istio-proxy/0.log`` per serving pod (``--files`` of them) under
       ``--root``, appended every 50 ms as CRI lines (``<time> stdout F <json>``).
als:   ``--files`` gRPC streams to ``--target`` (one per sidecar), each flushed when its buffer passes
       16 KiB or every second, as Envoy's http_grpc access logger does by default.

``FakeApi`` is the cluster these callers live in, as the collector's pod watch sees it (a pods LIST and a
WATCH); ``deploy.lab.footprint`` serves it in its own process.

Prints one JSON line at the end: ``{"written": N, "seconds": S, "caller_pods": 40}``.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from deploy.lab.bench_collectors import _CALLER_PODS, _Caller, _endpoints, _entry

TICK = 0.05
ALS_BUFFER_BYTES = 16384
ALS_FLUSH_S = 1.0
_METHODS = {"GET": 1, "HEAD": 2, "POST": 3, "PUT": 4, "DELETE": 5, "PATCH": 9}


def _stamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


class Mix:
    """Entries of the bench mix, stamped at the time given."""

    def __init__(self, identities: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.callers = [_Caller(n, self.rng) for n in range(identities)]
        self.endpoints = _endpoints(self.rng)
        self.i = 0

    def entry(self, now: float) -> dict[str, Any]:
        e = _entry(self.i, self.rng, self.callers, self.endpoints)
        self.i += 1
        e["start_time"] = _stamp(now)
        return e


def due(rate: float, elapsed: float, written: int) -> int:
    """Entries owed at ``elapsed`` seconds into a run at ``rate``/s when ``written`` have gone out."""
    return max(0, int(rate * elapsed) - written)


def run_files(root: Path, rate: float, seconds: float, files: int, mix: Mix) -> int:
    handles = []
    for f in range(files):
        folder = root / f"shop_pod-{f}_{uuid.UUID(int=f + 1)}" / "istio-proxy"
        folder.mkdir(parents=True, exist_ok=True)
        handles.append(open(folder / "0.log", "ab"))
    pick = random.Random(3)
    start, written = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < seconds:
        owed = due(rate, elapsed, written)
        if owed:
            now = time.time()
            cri = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1e9) % 1_000_000_000:09d}Z stdout F ").encode()
            per: dict[int, list[bytes]] = {}
            for _ in range(owed):  # the serving pod: uniform, so every file is active
                per.setdefault(pick.randrange(files), []).append(cri + orjson.dumps(mix.entry(now)) + b"\n")
            for f, lines in per.items():
                handles[f].write(b"".join(lines))
                handles[f].flush()
            written += owed
        time.sleep(max(0.0, TICK - ((time.monotonic() - start) % TICK)))
    for h in handles:
        h.close()
    return written


def to_proto(e: dict[str, Any], now: float) -> Any:
    """The bench entry as Envoy's ``HTTPAccessLogEntry``."""
    from ingest.proto import envoy_accesslog_pb2 as data

    m = data.HTTPAccessLogEntry()
    c, r, p = m.common_properties, m.request, m.response
    c.start_time.seconds, c.start_time.nanos = int(now), int((now % 1) * 1e9)
    c.duration.nanos = e["duration"] * 1_000_000
    c.time_to_last_downstream_tx_byte.nanos = e["duration"] * 1_000_000
    host, port = e["downstream_peer_address"].rsplit(":", 1)
    for addr in (c.downstream_remote_address, c.downstream_direct_remote_address):
        addr.socket_address.address = host
        addr.socket_address.port_value = int(port)
    c.upstream_cluster = e["upstream_cluster"]
    r.request_method = _METHODS[e["method"]]  # type: ignore[assignment]
    r.authority, r.path, r.user_agent, r.request_id = e["authority"], e["path"], e["user_agent"], e["request_id"]
    r.scheme = "http"
    if e["x_forwarded_for"]:
        r.forwarded_for = e["x_forwarded_for"]
    r.request_body_bytes = e["bytes_received"]
    if e["authorization"]:
        r.request_headers["authorization"] = e["authorization"]
    if e["x_api_key"]:
        r.request_headers["x-api-key"] = e["x_api_key"]
    r.request_headers["traceparent"] = f"00-{e['trace_id']}-{e['trace_id'][:16]}-01"
    p.response_code.value = e["response_code"]
    p.response_body_bytes = e["bytes_sent"]
    p.response_headers["content-type"] = e["response_content_type"]
    return m


def run_als(target: str, rate: float, seconds: float, streams: int, mix: Mix) -> int:
    import grpc

    from ingest.proto import envoy_als_pb2 as als
    from ingest.proto import envoy_als_pb2_grpc as als_grpc

    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = als_grpc.AccessLogServiceStub(channel)  # type: ignore[no-untyped-call]
    queues: list[queue.Queue[Any]] = [queue.Queue() for _ in range(streams)]

    def messages(k: int) -> Iterator[Any]:
        first = True
        while (msg := queues[k].get()) is not None:
            if first:  # Envoy identifies the sidecar on a stream's first message only
                msg.identifier.node.id = f"sidecar~10.244.9.{k + 2}~pod-{k}.shop~shop.svc.cluster.local"
                msg.identifier.log_name = "kubeward"
                first = False
            yield msg

    calls = [threading.Thread(target=lambda k=k: stub.StreamAccessLogs(messages(k)), daemon=True) for k in range(streams)]
    for t in calls:
        t.start()
    buffers: list[list[Any]] = [[] for _ in range(streams)]
    sizes, flushed = [0] * streams, [time.monotonic()] * streams
    pick = random.Random(3)

    def flush(k: int) -> None:
        if buffers[k]:
            msg = als.StreamAccessLogsMessage()
            msg.http_logs.log_entry.extend(buffers[k])
            queues[k].put(msg)
        buffers[k], sizes[k], flushed[k] = [], 0, time.monotonic()

    start, written = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < seconds:
        owed = due(rate, elapsed, written)
        now = time.time()
        for _ in range(owed):
            k = pick.randrange(streams)
            m = to_proto(mix.entry(now), now)
            buffers[k].append(m)
            sizes[k] += m.ByteSize()
            if sizes[k] >= ALS_BUFFER_BYTES:
                flush(k)
        written += owed
        mono = time.monotonic()
        for k in range(streams):
            if mono - flushed[k] >= ALS_FLUSH_S:
                flush(k)
        time.sleep(max(0.0, TICK - ((time.monotonic() - start) % TICK)))
    for k in range(streams):
        flush(k)
        queues[k].put(None)
    for t in calls:
        t.join(timeout=30)
    channel.close()
    return written


# ---------------------------------------------------------------- the cluster the load comes from, as the pod watch sees it
def fake_pods(n: int) -> list[dict[str, Any]]:
    """``n`` running pods; the first 40 carry the load's caller addresses 10.244.{k//20}.{k%20+2}."""
    items = []
    for k in range(n):
        if k < 40:
            ip, ns, app = f"10.244.{k // 20}.{k % 20 + 2}", "shop", f"caller-{k % 8}"
        else:
            ip, ns, app = f"10.{100 + k // 60000}.{(k // 250) % 240}.{k % 250 + 2}", f"ns-{k % 37}", f"app-{k % 300}"
        owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{app}-7d9f8c6b5", "uid": "x", "controller": True}
        items.append({
            "metadata": {"name": f"{app}-7d9f8c6b5-{k:05d}", "namespace": ns, "uid": f"00000000-0000-0000-0000-{k:012d}",
                         "resourceVersion": "100", "creationTimestamp": "2026-12-01T00:00:00Z",
                         "labels": {"app": app, "pod-template-hash": "7d9f8c6b5"}, "ownerReferences": [owner]},
            "spec": {"nodeName": f"node-{k % 50}", "serviceAccountName": app},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        })
    return items


class FakeApi:
    """A pods LIST and a WATCH that sends only bookmarks, on 127.0.0.1 in a thread."""

    def __init__(self, pods: int) -> None:
        body = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "100"}, "items": fake_pods(pods)}).encode()
        stop = self.stop_event = threading.Event()
        bookmark = json.dumps({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "100"}}}).encode() + b"\n"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (the base class's name)
                watch = "watch=true" in self.path.lower()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header(*(("Transfer-Encoding", "chunked") if watch else ("Content-Length", str(len(body)))))
                self.end_headers()
                if not watch:
                    self.wfile.write(body)
                    return
                try:
                    while not stop.wait(20):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(bookmark), bookmark))
                        self.wfile.flush()
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kubeconfig(self, path: Path) -> Path:
        cluster = {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "fake", "clusters": [cluster],
                                    "users": [{"name": "fake", "user": {"token": "x"}}],
                                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
        return path

    def close(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.lab.footprintload", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["files", "als"], required=True)
    ap.add_argument("--root", type=Path, help="pod log root (files)")
    ap.add_argument("--target", help="host:port of the collector's ALS (als)")
    ap.add_argument("--rate", type=float, required=True, help="entries per second")
    ap.add_argument("--seconds", type=float, required=True, help="how long to write")
    ap.add_argument("--files", type=int, default=20, help="pod log files / ALS streams (meshed pods on the node)")
    ap.add_argument("--identities", type=int, default=3000, help="distinct end users in the mix")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    if (a.mode == "files") != (a.root is not None) or (a.mode == "als") != (a.target is not None):
        ap.error("--mode files takes --root, --mode als takes --target")
    mix = Mix(a.identities, a.seed)
    t0 = time.monotonic()
    n = run_files(a.root, a.rate, a.seconds, a.files, mix) if a.mode == "files" else run_als(a.target, a.rate, a.seconds, a.files, mix)
    print(json.dumps({"written": n, "seconds": round(time.monotonic() - t0, 2), "caller_pods": _CALLER_PODS}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
