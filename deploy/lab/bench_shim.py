"""The shim under a realistic mix, as users run it: many identities, a few under verdicts, varied paths, reports on.

The mix (``realistic_requests``): ``identities`` end users (10,000), each with
its own HS256 JWT (checked: ``identity.jwt_hs256_secret`` is set) and client
address, calling through Envoy as the shipped ``ext_authz-http.yaml`` asks:
``x-forwarded-for`` with the client and Envoy's own entry, a fresh
``x-request-id`` per request, the route's ``x-kubeward-destination``, a user
agent; 20 endpoint templates over 4 services with random ids and queries; one
request in ten a POST with a small JSON body (inspected inline). ``blocked_share``
of the identities (1%) are under an enforced block verdict, published signed on
the verdict topic before the run; their keys come from the shim's own identity
derivation, so the verdicts match what the shim derives.

Two figures:

* ``bench_realistic_inprocess``: CPU per decision through the shim's HTTP
  protocol object (no sockets), the reports turned into summary rows in the
  same thread (the reporter's work counted too); steady on a shared machine.
* ``bench_realistic_wrk``: a ``kubeward shim`` process pinned to one core with
  ``report=all`` and a real broker, driven by ``wrk`` (64 connections, the
  other core) replaying the pre-rendered requests: decisions/s and p50/p99.

Run: ``python -m deploy.lab.bench_shim [--inprocess-only] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["NullTransport", "bench_realistic_inprocess", "bench_realistic_wrk", "realistic_requests", "shim_settings"]

JWT_SECRET = "bench-jwt-secret"
_TEMPLATES = (
    ("orders", "GET", "/orders/{id}"), ("orders", "GET", "/orders/{id}/items"), ("orders", "GET", "/orders?page={n}&status=open"),
    ("orders", "POST", "/orders"), ("orders", "GET", "/users/{id}/orders"), ("catalog", "GET", "/products/{id}"),
    ("catalog", "GET", "/products?q=shoe+{n}&sort=price"), ("catalog", "GET", "/categories/{n}/products"),
    ("catalog", "GET", "/products/{id}/reviews"), ("catalog", "POST", "/products/{id}/reviews"), ("users", "GET", "/users/{id}"),
    ("users", "GET", "/users/{id}/addresses"), ("users", "POST", "/users/{id}/addresses"), ("users", "GET", "/users/me"),
    ("users", "GET", "/users/{id}/payment-methods"), ("cart", "GET", "/cart"), ("cart", "POST", "/cart/items"),
    ("cart", "GET", "/cart/items/{id}"), ("cart", "GET", "/cart/summary?currency=EUR"), ("cart", "POST", "/cart/checkout"),
)


class NullTransport:
    """A transport for the shim's HTTP protocol object that drops what it writes (in-process benchmarks)."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_for(sub: str, secret: str = JWT_SECRET) -> str:
    """An HS256 JWT for ``sub``."""
    head = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps({"sub": sub, "iss": "shop", "scope": "orders:read"}).encode())
    return head + "." + _b64(hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest())


def shim_settings(**extra: Any) -> dict[str, Any]:
    """The shim's settings for the mix: shipped defaults, JWTs checked, reports on."""
    return {"report": "all", "identity": {"trusted_hops": 1, "jwt_hs256_secret": JWT_SECRET}, **extra}


def realistic_requests(count: int = 20_000, identities: int = 10_000, seed: int = 11) -> list[bytes]:
    """``count`` raw HTTP/1.1 check requests as Envoy's ext_authz HTTP service sends them (see the module docstring)."""
    rng = random.Random(seed)
    tokens = [jwt_for(f"user-{i:05d}") for i in range(identities)]
    out = []
    for _ in range(count):
        who = rng.randrange(identities)
        service, method, template = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
        path = template.replace("{id}", str(rng.randrange(1, 2_000_000))).replace("{n}", str(rng.randrange(1, 50)))
        body = json.dumps({"sku": f"SKU-{rng.randrange(9999)}", "qty": rng.randrange(1, 5), "note": "leave at the door"}).encode() if method == "POST" else b""
        head = (f"{method} {path} HTTP/1.1\r\nhost: {service}\r\nauthorization: Bearer {tokens[who]}\r\n"
                f"x-forwarded-for: 10.{who // 250 % 250}.{who % 250}.7,127.0.0.1\r\nx-request-id: {uuid.UUID(int=rng.getrandbits(128))}\r\n"
                f"x-kubeward-destination: shop/{service}\r\nuser-agent: shop-web/4.2 (iPhone; iOS 17.1)\r\n")
        if body:
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        out.append(head.encode() + b"\r\n" + body)
    return out


def blocked_keys(requests: list[bytes], identities: int, share: float, settings: dict[str, Any]) -> list[str]:
    """The verdict-cache keys (as the shim derives them) of the first ``share`` of the identities seen in ``requests``."""
    from enforcement.settings import ShimSettings
    from enforcement.shim import Shim

    shim = Shim(ShimSettings(bootstrap=None, **{**settings, "report": "none"}))
    wanted, keys = max(1, int(identities * share)), {}
    for raw in requests:
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        method, url, _ = head[0].decode().split(" ")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head[1:])}
        view = shim.adapter.view_of(method, url, headers, "127.0.0.1", None)
        keys.setdefault(headers[b"authorization"], view.subject_keys()[0])
        if len(keys) >= wanted:
            break
    return list(keys.values())


def _verdicts(keys: list[str]) -> list[Any]:
    from ingest import Subject, Verdict

    now = time.time()
    return [Verdict(id=f"bench-{i}", subject=Subject(kind=key.split(":", 1)[0], value=key.split(":", 1)[1]), action="block", mode="enforce",
                    expires_at=now + 3600, issued_at=now - 60, evidence_time=now - 60) for i, key in enumerate(keys)]  # type: ignore[arg-type]


def bench_realistic_inprocess(requests: int = 200_000, identities: int = 10_000, blocked_share: float = 0.01) -> dict[str, Any]:
    """CPU per decision of the realistic mix through the shim's HTTP protocol object, reports encoded in the same thread."""
    from enforcement.server import DecisionTimer, check_connection
    from enforcement.settings import ShimSettings
    from enforcement.shim import Shim, summary_row

    settings = shim_settings()
    mix = realistic_requests(20_000, identities)
    shim = Shim(ShimSettings(bootstrap=None, **settings))
    shim.warm_up()
    shim.synced.set()
    for verdict in _verdicts(blocked_keys(mix, identities, blocked_share, settings)):
        shim.cache.apply(verdict)

    conn = check_connection(shim, DecisionTimer(shim.settings.timing_sample) if shim.settings.timing_sample else None)
    conn.connection_made(NullTransport())
    key = shim.settings.object_id_key.get_secret_value().encode()
    for raw in mix:  # one pass to fill the identity memo, as a running shim has
        conn.data_received(raw)
    shim.take_pending()
    started, reported = time.process_time(), 0
    decide_s = 0.0
    for i in range(requests):
        conn.data_received(mix[i % len(mix)])
        if i % 2000 == 1999:
            t = time.process_time()
            rows = [summary_row(t_, r, d, key) for t_, r, d in shim.take_pending()]
            reported += len(rows)
            decide_s += time.process_time() - t
    total = time.process_time() - started
    counts = shim.decision_counts()
    return {"requests": requests, "identities": identities, "blocked_share": blocked_share, "us_per_decision": round(total / requests * 1e6, 2),
            "us_per_decision_reporting": round(decide_s / requests * 1e6, 2), "decisions_per_cpu_second": round(requests / total),
            "reported": reported, "decisions": counts}


def bench_realistic_wrk(workdir: Path, seconds: int = 10, connections: int = 64, identities: int = 10_000, blocked_share: float = 0.01) -> dict[str, Any]:
    """``kubeward shim`` (report=all, real broker) on core 0 under wrk on core 1 replaying the realistic mix."""
    from kafka import KafkaProducer

    from deploy.lab.bench import _wrk
    from deploy.lab.bench_worker import cpu_seconds
    from deploy.runtime.process import free_port, start_shim, stop_process
    from deploy.runtime.stack import LocalStack
    from ingest import VERDICTS, sign_verdict
    from ingest.signing import DEV_VERDICT_KEY

    workdir.mkdir(parents=True, exist_ok=True)
    settings = shim_settings()
    mix = realistic_requests(20_000, identities)
    keys = blocked_keys(mix, identities, blocked_share, settings)
    script = workdir / "realistic.lua"
    lines = ",\n".join(json.dumps(raw.decode()) for raw in mix)
    script.write_text(f"local reqs = {{\n{lines}\n}}\nlocal i = 0\nrequest = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
    with LocalStack(workdir / "stack", with_worker=False, with_shim=False) as stack:
        producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
        for verdict in _verdicts(keys):
            signed = sign_verdict(verdict, DEV_VERDICT_KEY.encode())
            producer.send(VERDICTS.name, key=signed.entry_key.encode(), value=signed.model_dump_json().encode())
        producer.flush()
        producer.close()
        port, admin = free_port(), free_port()
        proc = start_shim(workdir / "shim.log", {"bootstrap": stack.bootstrap, "port": port, "admin_port": admin, **settings}, cpu=0)
        try:
            _wrk(port, 2, connections, script, cpu=1)
            c0, t0 = cpu_seconds(proc.pid), time.time()
            res: dict[str, Any] = dict(_wrk(port, seconds, connections, script, cpu=1))
            res["cpu_cores"] = round((cpu_seconds(proc.pid) - c0) / (time.time() - t0), 2)
            import urllib.request

            stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=5).read())
            res["decisions"] = stats["decisions"]
            res["reports_dropped"] = stats["reports_dropped"]
        finally:
            stop_process(proc)
    res.update({"connections": connections, "identities": identities, "blocked_share": blocked_share, "seconds": seconds})
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.lab.bench_shim", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--inprocess-only", action="store_true", help="only the in-process CPU figure")
    parser.add_argument("--seconds", type=int, default=10, help="wrk run length (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=200_000, help="in-process requests (default: %(default)s)")
    args = parser.parse_args(argv)
    print(json.dumps({"inprocess": bench_realistic_inprocess(args.requests)}, indent=2))
    if not args.inprocess_only:
        print(json.dumps({"wrk": bench_realistic_wrk(Path("build/bench/realistic"), args.seconds)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
