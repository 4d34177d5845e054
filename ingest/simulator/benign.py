"""Benign traffic: end users, support agents, services, partners and the reporting job.

``Benign`` is one Poisson stream (mean ``rate`` calls/s, modulated by a +-20%
sine over the run) mixing end users calling through ``shop/frontend`` (JWT, one
task at a time, mostly their own objects, sometimes a login with mistyped
passwords), support agents working tickets on other users' objects,
service-to-service calls along the dependency graph (mTLS, no principal) and
partner webhooks from the internet. Answers are mostly the endpoint's success
with its PII; ~1% are 404 and ~0.5% 5xx. ``reporting`` is the ``data/reporting``
batch job reading pages of PII at a steady rate. Each draws from its own
``random.Random`` seeded from the run's seed.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Iterator

from ingest.simulator.call import SimCall, new_call
from ingest.simulator.catalog import AGENT_READS, BY_KEY, CALLS, TASK_CUM, TASK_SWITCH, TASKS, USER_ACTIONS, Endpoint
from ingest.simulator.world import World, cumulative

__all__ = ["PARTNER_IPS", "REPORTING_SHARE", "Benign", "reporting"]

PARTNER_IPS = ("198.51.100.10", "198.51.100.11", "198.51.100.12")
# shares of the benign rate: end users and agents, partners, the reporting job; services take the rest
_USER_SHARE, _PARTNER_SHARE, REPORTING_SHARE = 0.69, 0.005, 0.001
_SESSION_S = 900.0  # a user logs in again only after this long


def _task_table(task: str) -> tuple[list[tuple[Endpoint, str, tuple[str, ...]]], list[float]]:
    rows = [(k, mode, wt, q) for k, mode, wt, tasks, q in USER_ACTIONS if task in tasks]
    return [(BY_KEY[k], mode, q) for k, mode, _, q in rows], cumulative([wt for _, _, wt, _ in rows])


class Benign:
    """The benign Poisson stream: users, support agents, services and partners."""

    __slots__ = ("w", "rng", "t0", "t1", "rate", "pending", "seq", "tasks", "callers", "caller_cum")

    def __init__(self, world: World, seed: int, t0: float, t1: float, rate: float) -> None:
        self.w, self.rng, self.t0, self.t1, self.rate = world, random.Random(f"{seed}:benign"), t0, t1, rate
        self.pending: list[tuple[float, int, SimCall]] = []
        self.seq = 0
        self.tasks = [_task_table(task) for task in TASKS]
        self.callers = [(w, [BY_KEY[k] for k in keys]) for w, (wt, keys) in CALLS.items() if wt > 0]
        self.caller_cum = cumulative([wt for wt, _ in CALLS.values() if wt > 0])

    def __iter__(self) -> Iterator[SimCall]:
        rng, pending, t1 = self.rng, self.pending, self.t1
        omega = 2 * math.pi / max(t1 - self.t0, 1e-9)
        t = self.t0
        while True:
            t += rng.expovariate(self.rate * (1.0 + 0.2 * math.sin(omega * (t - self.t0))))
            while pending and pending[0][0] <= t:
                call = heapq.heappop(pending)[2]
                if call.time < t1:
                    yield call
            if t >= t1:
                return
            yield self._next(t)

    def _next(self, t: float) -> SimCall:
        r = self.rng.random()
        if r < _USER_SHARE:
            u = bisect_right(self.w.user_cum, self.rng.random() * self.w.user_cum[-1])
            return self._agent(t, u) if u in self.w.agents else self._user(t, u)
        if r < _USER_SHARE + _PARTNER_SHARE:
            return self._partner(t)
        return self._service(t)

    def _user(self, t: float, u: int) -> SimCall:
        rng = self.rng
        task = self.w.task[u]
        if rng.random() < TASK_SWITCH:
            task = self.w.task[u] = bisect_right(TASK_CUM, rng.random())
        actions, cum = self.tasks[task]
        ep, mode, queries = actions[bisect_right(cum, rng.random() * cum[-1])]
        if mode == "login":
            return self._login(t, u)
        ids = self._user_ids(ep, mode, u)
        query = queries[int(rng.random() * len(queries))] if len(queries) > 1 else queries[0]
        raw = (ep.prefix + ids[0] + ep.suffix if ids and "{" in ep.template else ep.template) + query
        n = len(ids) if mode == "list" else 1
        return self._answer(t, "shop/frontend", self.w.principals[u], "jwt", ep, raw, ids, n)

    def _user_ids(self, ep: Endpoint, mode: str, u: int) -> list[str]:
        if mode == "none":
            return []
        pool = self.w.owned[u][ep.kind or ""]
        if mode == "list":
            return list(pool)
        if mode == "create":
            pool.append(self.w.new_id(ep.kind or ""))
            if len(pool) > 5:
                pool.pop(0)
            return [pool[-1]]
        focus = self.w.focus[u]
        oid = focus.get(ep.kind or "")
        if oid is None or self.rng.random() < 0.1:  # users stay on one order/document for a while
            oid = focus[ep.kind or ""] = pool[int(len(pool) * self.rng.random())]
        return [oid]

    def _agent(self, t: float, u: int) -> SimCall:
        """Support agents work a ticket: a few reads of one customer's objects, then the next."""
        w, rng = self.w, self.rng
        ticket = w.tickets.get(u)
        if ticket is None or (ticket[1] >= 3 and rng.random() < 0.2):
            ticket = w.tickets[u] = [w.owned[int(rng.random() * len(w.owned))], 0]
        ticket[1] += 1
        ep = BY_KEY[AGENT_READS[int(rng.random() * len(AGENT_READS))]]
        oid = ticket[0][ep.kind or ""][0]
        return self._answer(t, "shop/frontend", w.principals[u], "jwt", ep, ep.prefix + oid + ep.suffix, [oid], 1)

    def _login(self, t: float, u: int) -> SimCall:
        """A login (a token refresh if the user logged in lately); 5% start with 1-3 mistyped passwords."""
        rng, principal = self.rng, self.w.principals[u]
        if t - self.w.logged_in[u] < _SESSION_S:
            return self._plain(t, "shop/frontend", principal, "jwt", BY_KEY["identity/auth POST /token/refresh"], 200)
        ep = BY_KEY["identity/auth POST /login"]
        failures = 1 + int(rng.random() * 3) if rng.random() < 0.05 else 0
        at = t
        for i in range(1, failures + 1):
            at += 2.0 + rng.random() * 6.0
            self._defer(self._plain(at, "shop/frontend", principal, "none", ep, 200 if i == failures else 401))
        self.w.logged_in[u] = at
        return self._plain(t, "shop/frontend", principal, "none", ep, 401 if failures else 200)

    def _defer(self, call: SimCall) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (call.time, self.seq, call))

    def _service(self, t: float) -> SimCall:
        rng = self.rng
        workload, edges = self.callers[bisect_right(self.caller_cum, rng.random() * self.caller_cum[-1])]
        ep = edges[int(rng.random() * len(edges))]
        if ep.kind is None:
            return self._answer(t, workload, None, "mtls", ep, ep.template, [], 1)
        oid = self.w.random_id(ep.kind)
        return self._answer(t, workload, None, "mtls", ep, ep.prefix + oid + ep.suffix, [oid], 1)

    def _partner(self, t: float) -> SimCall:
        ep, rng = BY_KEY["payments/checkout POST /webhooks/psp"], self.rng
        ip = PARTNER_IPS[int(rng.random() * len(PARTNER_IPS))]
        return new_call(t, None, ip, True, None, "mtls", ep, ep.template, [], ep.ok_status, ep.request_bytes + 200,
                        ep.response_bytes, {}, ep.latency_ms * (0.5 + rng.expovariate(1.5)))

    def _answer(self, t: float, workload: str, principal: str | None, auth: str, ep: Endpoint, raw: str,
                ids: list[str], n: int) -> SimCall:
        """A benign answer: mostly the endpoint's success with its PII, ~1% 404, ~0.5% 5xx."""
        rng = self.rng
        r = rng.random()
        sens: dict[str, int]
        if r < 0.005:
            status, size, sens = (503 if r < 0.0025 else 500), 180, {}
        elif r < 0.015:
            status, size, sens = 404, 150, {}
        else:
            status, size = ep.ok_status, int(ep.response_bytes * n * (0.7 + 0.6 * rng.random()))
            sens = {k: v * n for k, v in ep.sensitive} if n != 1 else dict(ep.sensitive)
        ips = self.w.ips[workload]
        return new_call(t, workload, ips[int(rng.random() * len(ips))], False, principal, auth, ep, raw, ids, status,
                        ep.request_bytes + 250 + int(rng.random() * 400), size, sens,
                        ep.latency_ms * (0.5 + rng.expovariate(1.5)))

    def _plain(self, t: float, workload: str, principal: str | None, auth: str, ep: Endpoint, status: int) -> SimCall:
        rng, ips = self.rng, self.w.ips[workload]
        return new_call(t, workload, ips[int(rng.random() * len(ips))], False, principal, auth, ep, ep.template, [],
                        status, ep.request_bytes + 250, ep.response_bytes if status < 400 else 120, {},
                        ep.latency_ms * (0.5 + rng.expovariate(1.5)))


def reporting(world: World, seed: int, t0: float, t1: float, rate: float) -> Iterator[SimCall]:
    """The ``data/reporting`` batch job: pages of PII, round-robin over its endpoints, at a steady rate."""
    rng, ips = random.Random(f"{seed}:reporting"), world.ips["data/reporting"]
    edges = [BY_KEY[k] for k in CALLS["data/reporting"][1]]
    t, i = t0 + rng.random() / rate, 0
    while t < t1:
        ep = edges[i % len(edges)]
        ids = world.page(ep.kind, i // len(edges), ep.items) if ep.kind else []
        n = max(1, len(ids))
        raw = ep.template + (f"?page={i // len(edges)}&size={ep.items}" if ep.items > 1 else "")
        yield new_call(t, "data/reporting", ips[i % len(ips)], False, None, "mtls", ep, raw, ids, ep.ok_status,
                       ep.request_bytes + 300, ep.response_bytes * n, {k: v * n for k, v in ep.sensitive},
                       ep.latency_ms * (0.8 + 0.4 * rng.random()))
        t += (0.9 + 0.2 * rng.random()) / rate
        i += 1
