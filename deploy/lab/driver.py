"""The traffic driver: the simulated cluster's calls sent as real HTTP through a real data plane.

Each ``SimCall`` becomes an HTTP request to Envoy's listener: the Host header
names the destination service (``orders.shop.svc.cluster.local``), end users
carry their own HS256 JWT (minted by the demo's identity provider), logins post
credentials, and every simulated workload sends from its own loopback address
(``10.244.a.b`` becomes ``127.244.a.b``; an internet address ``203.0.113.7``
becomes ``127.203.113.7``), so Envoy sees a distinct peer per workload exactly
as it would see pod IPs. End users' calls come through the gateway workload
``shop/frontend``, which appends the user's own address to ``x-forwarded-for``
(Kubeward trusts the gateway as a proxy, so it attributes them to the user).
What reaches Kubeward is only what Envoy forwards and
logs; the call's ground truth stays here, with the tally.

``expected_actor`` computes the actor key the worker will derive for a call,
from the same public functions (``ingest.identity``), so the tally can match
verdicts to attackers without any detector reading the simulator.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from deploy.runtime.demoapi import DemoDb, mint_jwt
from ingest import actor_key
from ingest.principal import hash_principal

__all__ = ["GATEWAY", "DriveResult", "TrafficDriver", "pace", "end_user_ip", "expected_actor", "loopback_for", "pod_map", "via_gateway"]

CLUSTER_DOMAIN = "svc.cluster.local"


def loopback_for(ip: str) -> str:
    """The loopback address that stands in for a simulated address (distinct per address)."""
    a, b, c, d = (int(x) for x in ip.split("."))
    return f"127.{a if a != 10 else b}.{c}.{d}"


def pod_map(workload_ips: dict[str, list[str]]) -> dict[str, str]:
    """Loopback address -> workload (``namespace/name``): the demo's pod directory."""
    return {loopback_for(ip): workload for workload, ips in workload_ips.items() for ip in ips}


GATEWAY = "shop/frontend"


def end_user_ip(principal: str) -> str:
    """The internet address of an end user (``user-00042`` -> ``198.18.0.42``), as the gateway sees it."""
    n = int("".join(ch for ch in principal if ch.isdigit()) or 0)
    return f"198.{18 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def via_gateway(call: Any) -> bool:
    """An end user's call: it reaches Envoy from the gateway, which appends the user's address."""
    return bool(call.source_workload == GATEWAY and call.principal)


def _sends_token(call: Any) -> bool:
    return bool(call.principal and call.auth_type == "jwt" and not (call.method == "POST" and call.raw_path == "/login"))


def expected_actor(call: Any, principal_key: bytes) -> str:
    """The actor key Kubeward derives for this call: the user's address behind the gateway, else the workload, else the peer."""
    principal = hash_principal("jwt", call.principal, principal_key) if _sends_token(call) else None
    if via_gateway(call):
        return actor_key(end_user_ip(call.principal), principal)
    return actor_key(call.source_workload or loopback_for(call.source_ip), principal)


def _host(call: Any) -> str:
    if call.dest_namespace:
        return f"{call.dest_service}.{call.dest_namespace}.{CLUSTER_DOMAIN}"
    return str(call.dest_service)


@dataclass(frozen=True, slots=True)
class DriveResult:
    """What the client got back: status, and Kubeward's decision headers when Kubeward answered."""

    status: int
    kubeward_decision: str | None
    kubeward_reason: str | None
    sent_at: float
    error: str | None = None

    @property
    def denied_by_kubeward(self) -> bool:
        """A 403/429 that Kubeward (a verdict or a signature) caused, not the API's own refusal."""
        return self.status in (403, 429) and self.kubeward_reason is not None


class TrafficDriver:
    """Sends calls through Envoy at ``host:port`` from per-workload loopback addresses."""

    def __init__(self, host: str, port: int, jwt_secret: bytes, connections_per_source: int = 8, timeout_s: float = 10.0):
        self.base = f"http://{host}:{port}"
        self.secret = jwt_secret
        self.per_source = connections_per_source
        self.timeout_s = timeout_s
        self._sessions: dict[str, Any] = {}
        self._tokens: dict[str, str] = {}

    def _session(self, local_ip: str) -> Any:
        import aiohttp

        session = self._sessions.get(local_ip)
        if session is None:
            connector = aiohttp.TCPConnector(local_addr=(local_ip, 0), limit=self.per_source, force_close=False)
            session = self._sessions[local_ip] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s), auto_decompress=False, skip_auto_headers=("User-Agent",))
        return session

    def _token(self, principal: str) -> str:
        token = self._tokens.get(principal)
        if token is None:
            token = self._tokens[principal] = mint_jwt(principal, self.secret)
        return token

    def request_parts(self, call: Any) -> tuple[str, dict[str, str], bytes | None]:
        """(path, headers, body) of the HTTP request for one call."""
        headers = {"host": _host(call), "user-agent": "shop-client/2.3"}
        if _sends_token(call):
            headers["authorization"] = f"Bearer {self._token(call.principal)}"
        if via_gateway(call):
            headers["x-forwarded-for"] = end_user_ip(call.principal)
        # sim-B: a call that brings its own body and headers (ingest.simulator.owasp_catalog.OwaspCall) is sent as it is
        body: bytes | None = getattr(call, "body", None)
        headers.update(getattr(call, "headers", ()))
        if body is not None:
            headers["content-type"] = "application/json"
        elif call.raw_path == "/login" and call.method == "POST":
            user = call.principal or f"user-{abs(hash(call.time)) % 3000:05d}"
            ok = call.status == 200
            body = json.dumps({"username": user, "password": DemoDb.password(user) if ok else "hunter2"}).encode()
            headers["content-type"] = "application/json"
        elif call.method in ("POST", "PUT", "PATCH"):
            size = max(2, min(int(call.request_bytes or 64), 65536))
            body = json.dumps({"data": "x" * max(0, size - 12)}).encode()
            headers["content-type"] = "application/json"
        return call.raw_path, headers, body

    async def send(self, call: Any, now: float) -> DriveResult:
        """Send one call and return what came back."""
        path, headers, body = self.request_parts(call)
        session = self._session(loopback_for(call.source_ip))
        try:
            async with session.request(call.method, self.base + path, headers=headers, data=body) as resp:
                await resp.read()
                return DriveResult(resp.status, resp.headers.get("x-kubeward-decision"), resp.headers.get("x-kubeward-reason"), now)
        except (asyncio.TimeoutError, OSError, Exception) as exc:  # noqa: BLE001 - the tally counts every failure
            return DriveResult(0, None, None, now, error=type(exc).__name__)

    async def close(self) -> None:
        """Close every session."""
        for session in self._sessions.values():
            await session.close()


async def pace(calls: Iterable[Any], one: Callable[[Any], Awaitable[None]], progress: Callable[[float], None] | None = None) -> None:
    """Start ``one(call)`` for each call at its simulated time (real time), then wait for them all."""
    pending: set[asyncio.Task[None]] = set()
    t0 = time.time()
    for call in calls:
        delay = call.time - time.time()
        if delay > 0.002:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(call))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if progress is not None:
            progress(time.time() - t0)
    if pending:
        await asyncio.gather(*pending)
