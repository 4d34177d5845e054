"""Benchmark of the per-node collector's file path: access-log entries parsed, summarised and published per CPU-second.

``bench_collectors(seconds, bootstrap)`` writes Envoy JSON access-log entries in
the CRI format into several pod log files (before the clock starts), then runs
the real ``Collector`` with an ``AccessLogFileSource`` over them: read, CRI
split, orjson, ``observation_from_envoy``, ``Joiner`` (access_log only: pass
through), ``Summarizer.summarize_many`` (JWT parsing and keyed hashing memoised
per token, templating, object-id hashing), ``SummaryPublisher.publish_rows``
(Arrow IPC envelopes with LZ4). With ``bootstrap`` the envelopes go to that
broker and an entry counts once the broker acknowledged it (``rows_sent``);
without, a null producer acknowledges at once (everything but the network).

The traffic mix: ``identities`` distinct end users (HS256 JWTs; 1 in 8 with
an API key, 1 in 16 anonymous), each with a client address and a calling pod
it usually comes through (40 caller pods; one call in ten through another),
12 services with 8 endpoints each carrying numeric and UUID ids, query strings
on a third of the calls, typical header sets (user agent, content type,
x-forwarded-for on calls through the ingress gateway, trace id), a status mix
with 4xx and 5xx, distinct request ids.

CPU is ``time.process_time()`` of this process over the run, from the first
read to the end of the final flush: it covers every thread, so the tailer,
summariser, the publisher's flusher and kafka-python's sender thread are all
in it. The broker runs in another process and is not counted. The result also
carries a per-stage split measured on a sample, and ``python_loop_ns`` (a plain
loop's cost per iteration) so that figures from different machines can be compared.

Run: ``.venv/bin/python -m deploy.lab.bench_collectors --seconds 10 [--bootstrap 127.0.0.1:9092 | --local-broker]``.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import hmac
import json
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["TARGET", "bench_collectors", "render_entries"]

TARGET = ">= 100000 entries per CPU-second, parsed, summarised and published"
_SERVICES = ("orders", "users", "payments", "catalog", "cart", "search", "reviews", "shipping", "inventory", "auth", "billing", "media")
_AGENTS = ("okhttp/4.12.0", "Go-http-client/1.1", "python-requests/2.32.3", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
           "grpc-java-netty/1.63.0", "curl/8.5.0")
_CALLER_PODS = 40
_STATUSES = (200,) * 14 + (201, 204, 304, 400, 401, 403, 404, 404, 429, 500, 503)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(subject: str, secret: bytes = b"bench-secret") -> str:
    head = _b64(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64(json.dumps({"sub": subject, "iss": "https://id.example", "aud": "api", "iat": 1714557600, "exp": 1914557600,
                            "scope": "orders:read orders:write"}).encode())
    signature = _b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{signature}"


def _endpoints(rng: random.Random) -> list[tuple[str, str, str]]:
    shapes = ("/api/v1/{s}/{n}", "/api/v1/{s}/{n}/items", "/api/v1/{s}/{u}", "/api/v1/{s}", "/api/v1/{s}/{n}/history",
              "/v2/{s}/{u}/status", "/api/v1/{s}/search", "/api/v1/{s}/{n}/items/{n}")
    methods = ("GET", "GET", "GET", "POST", "GET", "PUT", "GET", "DELETE")
    return [(service, methods[i], shape) for service in _SERVICES for i, shape in enumerate(shapes)]


def _path(shape: str, rng: random.Random) -> str:
    path = shape.replace("{u}", str(uuid.UUID(int=rng.getrandbits(128))))
    while "{n}" in path:
        path = path.replace("{n}", str(rng.randint(1, 5_000_000)), 1)
    if rng.random() < 0.33:
        path += f"?page={rng.randint(1, 40)}&limit=50"
    return path


class _Caller:
    """One end user: a token (or API key), the client address an ingress proxy saw, the pod that usually calls for them."""

    __slots__ = ("authorization", "api_key", "client_ip", "home_pod")

    def __init__(self, n: int, rng: random.Random) -> None:
        kind = rng.random()
        self.authorization = f"Bearer {_jwt(f'user-{n:06d}')}" if kind >= 1 / 8 + 1 / 16 else None
        self.api_key = f"key-{n:06d}" if kind < 1 / 8 else None
        self.client_ip = f"198.51.{rng.randint(0, 99)}.{rng.randint(1, 254)}"
        self.home_pod = rng.randrange(_CALLER_PODS)


def _entry(i: int, rng: random.Random, callers: Sequence[_Caller], endpoints: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    service, method, shape = endpoints[rng.randrange(len(endpoints))]
    caller = callers[rng.randrange(len(callers))]
    pod = caller.home_pod if rng.random() < 0.9 else rng.randrange(_CALLER_PODS)
    ingress = pod < _CALLER_PODS // 5  # calls that came through the ingress gateway carry the client address
    return {
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1714557600 + i // 2000)) + f".{i % 1000:03d}Z",
        "method": method, "path": _path(shape.replace("{s}", service), rng),
        "authority": f"{service}.shop.svc.cluster.local:8080", "protocol": "HTTP/1.1",
        "request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "response_code": rng.choice(_STATUSES),
        "response_flags": "-", "bytes_received": rng.choice((0, 0, 0, 128, 512)), "bytes_sent": rng.randint(40, 9000),
        "duration": rng.randint(1, 120), "upstream_cluster": f"inbound|8080||{service}.shop.svc.cluster.local",
        "downstream_peer_address": f"10.244.{pod // 20}.{pod % 20 + 2}:{rng.randint(30000, 60999)}",
        "user_agent": rng.choice(_AGENTS), "content_type": "application/json" if method in ("POST", "PUT") else None,
        "x_forwarded_for": caller.client_ip if ingress else None, "trace_id": f"{rng.getrandbits(128):032x}",
        "response_content_type": "application/json", "authorization": caller.authorization, "x_api_key": caller.api_key,
        "cookie": None,
    }


def render_entries(count: int, identities: int = 3000, seed: int = 7) -> list[bytes]:
    """``count`` CRI log lines, each an Envoy JSON access-log entry of the shipped format (distinct request ids)."""
    import orjson

    rng = random.Random(seed)
    callers = [_Caller(n, rng) for n in range(identities)]
    endpoints = _endpoints(rng)
    stamp = b"2024-05-01T10:00:00.123456789Z stdout F "
    return [stamp + orjson.dumps(_entry(i, rng, callers, endpoints)) + b"\n" for i in range(count)]


class _Future:
    def add_callback(self, fn: Any, *args: Any) -> _Future:
        fn(*args, None)
        return self

    def add_errback(self, fn: Any, *args: Any) -> _Future:
        return self


class _NullProducer:
    """Stands in for KafkaProducer when no broker is given: acknowledges every send at once."""

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> _Future:
        return _Future()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def python_loop_ns(iterations: int = 2_000_000) -> float:
    """CPU nanoseconds per iteration of a plain ``x += i`` loop: the machine's speed for pure Python."""
    started, x = time.process_time(), 0
    for i in range(iterations):
        x += i
    return (time.process_time() - started) / iterations * 1e9


def _stages(lines: list[bytes]) -> dict[str, float]:
    """Microseconds per entry of each stage on a sample: parse; summarise with a cold and a warm identity memo; publish."""
    from ingest.collectors.files import AccessLogFileSource, _File
    from ingest.publish import SummaryPublisher
    from ingest.summarize import Summarizer

    parser, summarizer = AccessLogFileSource(["/nonexistent/*.log"]), Summarizer()
    marks = [time.process_time()]
    observations = parser._parse(_File("sample", "sample", -1, 0, b""), [line[:-1] for line in lines], 0)
    marks.append(time.process_time())
    summarizer.summarize_many(observations)
    marks.append(time.process_time())
    rows = summarizer.summarize_many(observations)
    marks.append(time.process_time())
    publisher = SummaryPublisher("null", producer=_NullProducer(), envelope_rows=1000)
    publisher.publish_rows(rows)
    publisher.flush()
    marks.append(time.process_time())
    cost = [round((b - a) / len(lines) * 1e6, 2) for a, b in zip(marks, marks[1:])]
    return {"parse": cost[0], "summarize_cold": cost[1], "summarize_warm": cost[2], "publish": cost[3]}


def _write_logs(root: Path, lines: list[bytes], files: int, copies: int) -> int:
    block = b"".join(lines)
    for f in range(files):
        folder = root / f"shop_pod-{f}_{uuid.UUID(int=f)}" / "istio-proxy"
        folder.mkdir(parents=True)
        with open(folder / "0.log", "wb") as handle:
            for _ in range(copies):
                handle.write(block)
    return len(lines) * files * copies


def bench_collectors(seconds: float = 10.0, bootstrap: str | None = None, *, identities: int = 3000,
                     expected_rate: float = 150_000.0, workdir: Path | None = None) -> dict[str, Any]:
    """Entries parsed, summarised and published per CPU-second of the collector process (module docstring)."""
    from ingest.collectors.runner import Collector, tune_gc
    from ingest.collectors.settings import CollectorSettings
    from ingest.publish import SummaryPublisher
    from ingest.summarize import Summarizer
    from ingest.collectors.files import AccessLogFileSource

    root = Path(tempfile.mkdtemp(prefix="kubeward-bench-collectors-", dir=workdir))
    try:
        block = render_entries(50_000, identities)
        stages = _stages(block[:20_000])
        files = 4
        copies = max(1, round(seconds * expected_rate / (len(block) * files)))
        written = _write_logs(root / "pods", block, files, copies)
        settings = CollectorSettings(bootstrap=bootstrap or "null", metrics_port=None, checkpoint_s=5.0,
                                     publish={"linger_ms": 20.0})
        source = AccessLogFileSource([str(root / "pods" / "*" / "istio-proxy" / "*.log")], state_path=root / "offsets.json",
                                     initial_position="beginning", poll_s=0.05)
        producer = None if bootstrap else _NullProducer()
        publisher = SummaryPublisher(bootstrap or "null", envelope_rows=settings.publish.envelope_rows,
                                     linger_ms=settings.publish.linger_ms, client_id="bench-collectors", producer=producer)
        collector = Collector(settings, [source], Summarizer(), publisher)
        thresholds = gc.get_threshold()
        tune_gc()  # as ``kubeward collect`` does (undone below: other benchmarks may run in this process)
        cpu0, wall0 = time.process_time(), time.monotonic()
        collector.start()
        deadline = wall0 + seconds
        while time.monotonic() < deadline and source.counters()["entries"] < written:
            threading.Event().wait(0.05)
        collector.stop()
        publisher.flush()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        stats = publisher.stats()
        publisher.close()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    entries = stats["rows_sent"]
    return {"entries_per_cpu_second": round(entries / cpu) if cpu else 0.0, "entries": entries, "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3), "entries_per_wall_second": round(entries / wall), "rows_failed": stats["rows_failed"],
            "broker": bootstrap or "none (null producer)", "identities": identities, "stages_us_per_entry": stages,
            "python_loop_ns": round(python_loop_ns(), 1), "target": TARGET}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark and print its result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="longest measured run (default 10)")
    parser.add_argument("--bootstrap", help="publish to this broker (default: a null producer)")
    parser.add_argument("--local-broker", action="store_true", help="start a local Kafka broker for the run and publish to it (as make bench does)")
    parser.add_argument("--identities", type=int, default=3000, help="distinct JWT subjects (default 3000)")
    args = parser.parse_args(argv)
    if args.local_broker:
        from deploy.runtime.stack import LocalStack

        work = Path(tempfile.mkdtemp(prefix="kubeward-bench-broker-"))
        try:
            with LocalStack(work / "stack", with_worker=False, with_shim=False) as stack:
                print(json.dumps(bench_collectors(args.seconds, stack.bootstrap, identities=args.identities, workdir=work), indent=2))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    print(json.dumps(bench_collectors(args.seconds, args.bootstrap, identities=args.identities), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
