"""The enforcement shim's state and its per-request path (no sockets here: see ``enforcement.server``).

``Shim`` holds what every check shares: the verdict cache, token buckets,
the inline inspector (``enforcement.inspection``, built from the
``inspection`` settings and ``rules_path``), the policy, decision counters and the decisions waiting to
be reported. ``Shim.handle(method, url, headers, peer, body)`` answers one check with
the full HTTP response bytes: the configured adapter (setting ``adapter``:
``envoy`` | ``nginx`` | ``traefik``, see ``enforcement.adapters``) reads the
check into a ``RequestView``, ``decide`` decides, and the adapter renders the
answer. ``Shim.decide_view`` is the same decision for adapters that parse their
own requests (Envoy ext_authz gRPC).

Outage and garbage are named, never accidents: before the verdict cache has
synced, inline inspection still runs (it needs no Kafka) and ``failure_mode``
answers what it lets through (``allow`` or ``deny``); so does a check the
adapter cannot read; an unreadable check is answered with
``x-kubeward-decision: unparsed``, counted (``unparsed``) and reported. Once
synced, losing Kafka changes nothing on the request path: the cache keeps
answering (its age is on ``/readyz``). Decisions waiting to be reported are
capped at ``report_queue_max``; past it they are dropped and counted
(``reports_dropped``), never queued without bound while Kafka is away.

The learned allow-list (setting ``allow_list``, ``enforcement.allowlist``), when
a file is configured, is read at start (a bad file stops the start, naming the
key and value) and given to ``decide``; it needs no Kafka, so it applies before
the cache has synced too. ``Shim.reload_allowlist`` reads the file again when
its modification time or size changed and swaps the new list in (one reference
assignment); a file that no longer loads is logged and counted while the list
in force stays. The server calls it from a thread every ``allow_list.reload_s``,
never on the request path: parsing costs about 0.2 ms per endpoint (1 s for
5,000, measured on a loaded machine). Refusals are counted by reason and mode
(``allowlist_refusals``).

``Shim.warm_up`` runs a few synthetic checks through every inspector and waits
for background model loads before the server opens the check ports: a cold
first check (first-use imports, a classifier still loading) could otherwise
outlast the data plane's 250 ms check timeout.

Hot path, measured with ``deploy/lab/bench.py`` (in-process figure): the
identity of a check is memoised per distinct identity headers
(``HeaderIdentity``), the allow answer is one precomputed bytes object, other
answers are rendered once per distinct decision, and an allowed request
touches no counter but one integer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from typing import Any

from enforcement.adapters.envoy_http import EnvoyHttpAdapter
from enforcement.adapters.httpcheck import HeaderIdentity, HttpAdapter, PodLookup, UnparsedRequest, unparsed_decision
from enforcement.adapters.nginx import NginxAdapter
from enforcement.adapters.traefik import TraefikAdapter
from enforcement.allowlist import AllowList, AllowListError
from enforcement.allowlistfile import load_allowlist
from enforcement.cache import VerdictCache
from enforcement.decision import ALLOW, ALLOWLIST, Decision, RequestView, decide
from enforcement.fasttier import FastTier
from enforcement.ratelimit import TokenBuckets
from enforcement.settings import ShimSettings
from enforcement.inspectors import build_shim_inspectors
from enforcement.inspection import Inspectors, build_inspector
from enforcement.propertyschema import build_property_validator
from ingest import Policy, RequestSummary, hash_object_id, row_to_summary, template_path
from ingest import summary_row as envelope_row
from ingest.identity import IdentityConfig, IdentityResolver
from ingest.identitysettings import identity_config as config_of
from ingest.podsource import pod_lookup

__all__ = ["ADAPTERS", "Shim", "build_adapter", "identity_config", "run", "summarize", "summary_row"]

log = logging.getLogger("kubeward.shim")

#: adapter setting -> adapter class (one module per data plane under ``enforcement/adapters/``)
ADAPTERS: dict[str, type[HttpAdapter]] = {
    "envoy": EnvoyHttpAdapter,
    "nginx": NginxAdapter,
    "traefik": TraefikAdapter,
}


def identity_config(settings: ShimSettings) -> IdentityConfig:
    """How this shim derives identities (its ``identity`` section)."""
    return config_of(settings.identity)


def build_adapter(settings: ShimSettings, pods: PodLookup | None = None) -> HttpAdapter:
    """The HTTP check adapter the ``adapter`` setting names, with its identity resolver and pod lookup."""
    try:
        cls = ADAPTERS[settings.adapter]
    except KeyError:
        raise ValueError(f"adapter {settings.adapter!r} is unknown; valid: {sorted(ADAPTERS)}") from None
    identity = HeaderIdentity(IdentityResolver(identity_config(settings)), cls.authority_header, settings.trust_kubeward_headers, pods)
    inspection = settings.inspection
    if not inspection.enabled:
        return cls(identity, path_prefix=settings.path_prefix)
    return cls(identity, path_prefix=settings.path_prefix, inspected_headers=inspection.headers, body_limit=inspection.max_body_bytes)


_NO_VERDICTS = VerdictCache()  # what decide() reads before the cache has synced (never written)

_FORM = "application/x-www-form-urlencoded"
#: synthetic checks run by ``Shim.warm_up``: each body kind the inspectors parse, a query, inspected headers, a model call
_WARM_UP: tuple[tuple[str, str, dict[str, str], bytes | None], ...] = (
    ("GET", "/kubeward-warm-up/1?q=a%20b&id=2", {"user-agent": "kubeward-warm-up", "referer": "http://x/", "cookie": "a=b"}, None),
    ("POST", "/kubeward-warm-up", {"content-type": "application/json"}, b'{"a": {"b": [1, "two"]}, "c": "d e"}'),
    ("POST", "/kubeward-warm-up", {"content-type": _FORM}, b"a=1&b=two+three"),
    ("POST", "/kubeward-warm-up", {"content-type": "multipart/form-data; boundary=kw"},
     b'--kw\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--kw--\r\n'),
    ("POST", "/v1/chat/completions", {"content-type": "application/json"},
     b'{"model": "m", "messages": [{"role": "tool", "content": "The weather is mild today."}]}'),
)


class Shim:
    """Decision state shared by all connections: cache, buckets, inline inspector, policy, counters, reports."""

    def __init__(self, settings: ShimSettings, adapter: HttpAdapter | None = None):
        self.settings = settings
        self.pod_watcher: Any = None
        self.pods: PodLookup | None = None
        if adapter is None:
            self.pods, self.pod_watcher = pod_lookup(settings.identity.pods_file, settings.identity.pod_watch, settings.identity.kubeconfig)
            adapter = build_adapter(settings, self.pods)
        self.adapter = adapter
        self.cache = VerdictCache()
        self.buckets = TokenBuckets()
        parts = build_shim_inspectors(settings)
        self.inspector, self.waf, self.schema, self.honeytokens = parts.inspector, parts.waf, parts.schema, parts.honeytokens
        self.policy = settings.policy
        self.fast = FastTier(settings.fast_tier.config()) if settings.fast_tier.enabled else None
        self.counts: dict[str, int] = {}
        #: decisions waiting for the reporter thread: appended on the loop, taken from the left by the reporter (a deque: both
        #: ends are safe across threads, where swapping a list could lose an append made during the swap)
        self.pending: deque[tuple[float, RequestView, Decision]] = deque()
        self.report_queue_max = settings.report_queue_max
        self.reports_dropped = 0
        #: reports the reporter thread could not publish (its own counter), and its publisher once connected
        self.report_failures = 0
        self.report_publisher: Any = None
        self.synced = threading.Event()
        self.warm = threading.Event()
        self._prompt = parts.prompt
        self.allowed = 0
        self.unparsed = 0
        self._allowlist_file = settings.allow_list.file
        self._allowlist_stamp = _stamp(self._allowlist_file)  # before reading: a change made meanwhile is read again
        self.allowlist: AllowList | None = settings.allow_list.load()
        #: allow-list refusals by (reason, mode); reloads of the file, and changed files that did not load
        self.allowlist_refusals: dict[tuple[str, str], int] = {}
        self.allowlist_reloads = 0
        self.allowlist_reload_errors = 0
        deny = settings.failure_mode == "deny"
        self._unsynced = Decision(403 if deny else 200, "deny" if deny else "allow", deny, "kubeward-unsynced")
        self._deny_unsynced = deny
        self._report = settings.report
        self._report_all = settings.report == "all"
        self._view = self.adapter.view_of
        self._respond = self.adapter.respond
        self._allow: bytes | None = self.adapter.allow_response
        if isinstance(self.adapter, HttpAdapter) and self.adapter.request_id_header:  # answers name each call's id: per call
            self.adapter.own_request_ids = True
            self._allow = None

    def handle(self, method: str, url: str, headers: dict[bytes, bytes], peer_ip: str | None, body: bytes | None = None) -> bytes:
        """Decide one check request (with the request body the data plane forwarded, if any) and return the full HTTP response bytes."""
        try:
            req = self._view(method, url, headers, peer_ip, body)
        except UnparsedRequest as exc:
            return self.handle_unparsed(method, url, peer_ip, exc)
        decision = self.decide_view(req)
        answer = self._allow
        if decision is ALLOW and answer is not None:
            return answer
        return self._respond(decision, req)

    def decide_view(self, req: RequestView) -> Decision:
        """Decide a request an adapter has already read; counted and reported like ``handle``."""
        now = time.time()
        if self.synced.is_set():
            decision = decide(req, self.cache, self.buckets, self.inspector, self.policy, now, self.allowlist)
            if self.fast is not None:
                decision = self.fast.check(req, decision, self.policy, now, self.cache.lifted)
            if self.schema is not None and decision.status == 200 and decision.would in ("allow", "redact"):
                self.schema.learn(req)  # learned only from requests that pass, and never before the cache synced
        else:
            # Inline inspection and the fast tier need no Kafka: they run before the verdict cache has synced too;
            # only what needs the cache answers per failure_mode.
            decision = decide(req, _NO_VERDICTS, self.buckets, self.inspector, self.policy, now, self.allowlist)
            if self.fast is not None:
                decision = self.fast.check(req, decision, self.policy, now)
            # failure_mode deny refuses whatever is not refused yet (an observe-mode finding included); allow answers
            # "unsynced" for what nothing found
            if decision is ALLOW or (self._deny_unsynced and decision.status == 200):
                decision = self._unsynced
        if decision is ALLOW:
            self.allowed += 1
            if self._report_all:
                if len(self.pending) < self.report_queue_max:
                    self.pending.append((now, req, decision))
                else:
                    self.reports_dropped += 1
            return decision
        self._record(now, req, decision)
        return decision

    def handle_unparsed(self, method: str, url: str, peer_ip: str | None, error: UnparsedRequest) -> bytes:
        """Answer a check the adapter (or the HTTP parser) could not read, per ``failure_mode``; count and report it."""
        self.unparsed += 1
        log.debug("unparsed check request", extra={"error": str(error), "peer": peer_ip})
        decision = unparsed_decision(self.settings.failure_mode, error.part)
        view = RequestView(method or "-", url if url.startswith("/") else "/", ip=peer_ip, peer_ip=peer_ip)
        if self._report != "none":
            self.queue_report(time.time(), view, decision)
        return self._respond(decision, view)

    def _record(self, now: float, req: RequestView, decision: Decision) -> None:
        mode = "enforce" if decision.enforced else "observe"
        label = f"{decision.would}:{mode}"
        self.counts[label] = self.counts.get(label, 0) + 1
        reason = decision.reason
        if reason is not None and reason.startswith(ALLOWLIST):
            key = (reason[len(ALLOWLIST) :], mode)
            self.allowlist_refusals[key] = self.allowlist_refusals.get(key, 0) + 1
        if self._report != "none":
            self.queue_report(now, req, decision)

    def queue_report(self, now: float, req: RequestView, decision: Decision) -> None:
        """Queue a decision for the reporter, or count it dropped when ``report_queue_max`` are waiting."""
        if len(self.pending) < self.report_queue_max:
            self.pending.append((now, req, decision))
        else:
            self.reports_dropped += 1

    def warm_up(self, timeout: float = 30.0) -> float:
        """Run the synthetic checks of ``_WARM_UP`` through every inspector (nothing is learned, reported or
        rate-limited; the inspectors' own scan counters include them), then
        wait up to ``timeout`` s for the prompt classifier to load; set ``warm`` and return the seconds it took."""
        started = time.perf_counter()
        buckets = TokenBuckets()  # not the shim's: warm-up checks leave no trace in the rate limits
        for method, path, headers, body in _WARM_UP:
            view = RequestView(method, path, service="kubeward-warm-up", ip="127.0.0.1", headers=headers, peer_ip="127.0.0.1", body=body)
            try:
                decide(view, _NO_VERDICTS, buckets, self.inspector, self.policy, time.time())
            except Exception:  # noqa: BLE001 - a warm-up check is never worth failing the start
                log.warning("warm-up check failed", exc_info=True, extra={"path": path})
        if self._prompt is not None and not self._prompt.loaded.wait(timeout):
            log.warning("prompt classifier still loading after warm-up timeout; serving with the rules alone meanwhile", extra={"timeout_s": timeout})
        self.warm.set()
        return time.perf_counter() - started

    def reload_allowlist(self) -> bool:
        """Read the allow-list file again if it changed since it was last read; True when a new list was swapped in.
        A file that is gone or does not load is logged and counted (once per change); the list in force stays.
        One caller at a time (the server's reload thread); checks keep using whichever list they read."""
        path = self._allowlist_file
        stamp = _stamp(path)
        if path is None or stamp == self._allowlist_stamp:
            return False
        self._allowlist_stamp = stamp
        try:
            if stamp is None:
                raise AllowListError(f"{path}: the file is gone")
            found = load_allowlist(path)
        except AllowListError as exc:
            self.allowlist_reload_errors += 1
            log.error("allow-list not reloaded; the list in force stays: %s", exc)
            return False
        self.allowlist = found
        self.allowlist_reloads += 1
        log.info("allow-list reloaded: %d endpoints of %d destinations from %s", len(found), len(found.destinations), path)
        return True

    def set_policy(self, policy: Policy) -> None:
        """Swap in a new policy snapshot (one reference assignment; the next check uses it)."""
        self.policy = policy

    def decision_counts(self) -> dict[str, int]:
        """Decisions so far by outcome and mode (``allow``, ``deny:enforce``, ``throttle:observe``...)."""
        return {"allow": self.allowed, **self.counts}

    def take_pending(self) -> list[tuple[float, RequestView, Decision]]:
        """Take the decisions waiting to be reported (those queued while this runs wait for the next call)."""
        pending, take = self.pending, self.pending.popleft
        return [take() for _ in range(len(pending))]


def _stamp(path: os.PathLike[str] | None) -> tuple[int, int] | None:
    """(modification time in ns, size) of a file; None when there is none."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _recorded(decision: Decision) -> str:
    if decision.would == "unparsed":
        return "unparsed"
    return decision.would if decision.enforced or decision.would == "allow" else f"observe:{decision.would}"


def summarize(now: float, req: RequestView, decision: Decision, object_key: bytes) -> RequestSummary:
    """The ``RequestSummary`` a shim reports for one decision (request side only: no upstream status)."""
    return row_to_summary(summary_row(now, req, decision, object_key))


def summary_row(now: float, req: RequestView, decision: Decision, object_key: bytes) -> dict[str, Any]:
    """The same record as an envelope row (the reporter thread's path); the data plane's request id is the record id.

    ``source.external`` is the adapter's ``RequestView.external`` (the identity resolver's, from
    ``identity.internal_networks``), as a collector sets it: ``policy suggest`` names an external caller by the
    ``cidr:`` around its address, an in-cluster one without a workload as ``address:<ip>`` (never allowed).
    """
    template, ids = template_path(req.path)
    workload = req.source_workload
    return envelope_row(
        id=req.request_id or uuid.uuid4().hex,
        time=now,
        reporter="shim",
        source={"workload": workload, "namespace": workload.split("/", 1)[0] if workload else None, "ip": req.ip,
                "external": req.external and not workload},
        principal=req.principal,
        auth_type=req.auth_type,
        destination={"service": req.service or "-", "namespace": req.namespace},
        method=req.method,
        path_template=template,
        status=decision.status if decision.status != 200 else None,
        object_ids=[hash_object_id(i, object_key) for i in ids],
        inline_findings=list(decision.findings),
        redacted=dict(decision.redacted),
        decision=_recorded(decision),
    )


def run(settings: ShimSettings) -> None:
    """Run the shim's servers in this process (``enforcement.server.run``; kept here for ``kubeward shim``)."""
    from enforcement.server import run as run_server

    run_server(settings)
