"""What suggested policies would do to recorded calls: our own matchers of Istio, Cilium and NetworkPolicy semantics.

Used to measure a suggestion (``kubeward policy suggest``) on traffic it was not
learned from: each recorded call is checked against the generated objects as
the data plane would check it, and the calls refused are counted per scenario
of the simulator's ground truth (read here for scoring only; the suggestion
never sees it).

* Istio: the ``ALLOW`` policies whose selector matches the destination's pod
  labels; none means allowed. A rule matches when one ``from`` source matches
  (principal, exact or ``*``-prefix/suffix; ``ipBlocks``; ``namespaces``) and
  one ``to`` operation matches (method; path exact, ``x*``, ``*x``, ``*``, or a
  template with ``{*}`` = one segment and ``{**}`` = the rest).
* Cilium: policies whose ``endpointSelector`` matches; a rule matches by
  ``fromEndpoints`` (labels with the namespace label) or ``fromCIDR``, and an
  HTTP rule whose method and path regexes match in full (path with the query).
* NetworkPolicy: L4, the peer only (recorded calls carry no pod port).

A call's path is its ``raw_path`` when recorded, else its template with every
placeholder filled by a sample segment. Calls to hosts outside the cluster are
*not covered*. Pure, apart from ``main`` (``python -m deploy.policymatch``,
which reads Parquet archives and prints the figures).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from deploy.policymapping import PolicyMapping
from deploy.policysuggest import CILIUM_NAMESPACE_LABEL

__all__ = ["Call", "CiliumCheck", "IstioCheck", "NetworkPolicyCheck", "Outcome", "calls_of", "evaluate", "main", "sample_path"]

Outcome = Literal["allowed", "denied", "not covered"]
_PLACEHOLDER = re.compile(r"\{[^{}/]*\}")


@dataclass(frozen=True)
class Call:
    """One recorded call, as the data plane sees it; ``label`` is the ground truth's scenario (scoring only)."""

    workload: str | None
    ip: str | None
    namespace: str | None
    service: str
    method: str
    path: str
    dest_external: bool = False
    external: bool = False
    label: str = "benign"
    malicious: bool = False


def sample_path(template: str) -> str:
    """A concrete path for a template: each placeholder becomes ``k1``.

    >>> sample_path("/orders/{id}/items"), sample_path("/calls/{id}.json")
    ('/orders/k1/items', '/calls/k1.json')
    """
    return _PLACEHOLDER.sub("k1", template)


def _selected(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    wanted = (selector or {}).get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


class _Check:
    kind = ""

    def __call__(self, call: Call) -> Outcome:
        raise NotImplementedError

    def __init__(self, objects: Iterable[dict[str, Any]], mapping: PolicyMapping | None = None) -> None:
        self.mapping = mapping or PolicyMapping()
        self.by_namespace: dict[str, list[dict[str, Any]]] = {}
        for obj in objects:
            if obj.get("kind") == self.kind:
                self.by_namespace.setdefault(obj["metadata"].get("namespace", "default"), []).append(obj)

    def _policies(self, call: Call, selector_key: str) -> list[dict[str, Any]]:
        labels = self.mapping.labels(call.namespace or "", call.service)
        return [p for p in self.by_namespace.get(call.namespace or "", []) if _selected(p["spec"].get(selector_key), labels)]

    def _rule(self, rule: dict[str, Any], call: Call) -> bool:
        raise NotImplementedError

    def judge(self, call: Call, selector_key: str) -> Outcome:
        if call.dest_external:
            return "not covered"
        policies = self._policies(call, selector_key)
        if not policies:
            return "allowed"
        return "allowed" if any(self._rule(rule, call) for p in policies for rule in self._rules(p)) else "denied"

    def _rules(self, policy: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError


def _in_blocks(ip: str | None, blocks: Iterable[str]) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
        return any(addr in ipaddress.ip_network(b, strict=False) for b in blocks)
    except ValueError:
        return False


def _istio_string(pattern: str, value: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _istio_path(pattern: str, path: str) -> bool:
    if "{*}" in pattern or "{**}" in pattern:
        regex = "".join("[^/]+" if part == "{*}" else ".*" if part == "{**}" else re.escape(part) for part in re.split(r"(\{\*\*?\})", pattern))
        return re.fullmatch(regex, path) is not None
    return _istio_string(pattern, path)


class IstioCheck(_Check):
    """Istio ``AuthorizationPolicy`` (ALLOW only) semantics over recorded calls."""

    kind = "AuthorizationPolicy"

    def __call__(self, call: Call) -> Outcome:
        """Allowed, denied, or not covered (external destination)."""
        return self.judge(call, "selector")

    def _rules(self, policy: dict[str, Any]) -> list[dict[str, Any]]:
        return list(policy["spec"].get("rules") or []) if policy["spec"].get("action", "ALLOW") == "ALLOW" else []

    def _source(self, source: dict[str, Any], call: Call) -> bool:
        principal = self.mapping.principal(*call.workload.split("/", 1)) if call.workload and "/" in call.workload else None
        checks = []
        if "principals" in source:
            checks.append(principal is not None and any(_istio_string(p, principal) for p in source["principals"]))
        if "ipBlocks" in source:
            checks.append(_in_blocks(call.ip, source["ipBlocks"]))
        if "namespaces" in source:
            namespace = call.workload.split("/", 1)[0] if call.workload and "/" in call.workload else None
            checks.append(namespace is not None and any(_istio_string(n, namespace) for n in source["namespaces"]))
        return all(checks)

    def _operation(self, op: dict[str, Any], call: Call) -> bool:
        if "methods" in op and call.method not in op["methods"]:
            return False
        return "paths" not in op or any(_istio_path(p, call.path) for p in op["paths"])

    def _rule(self, rule: dict[str, Any], call: Call) -> bool:
        sources = [f.get("source") or {} for f in rule.get("from") or []]
        ops = [t.get("operation") or {} for t in rule.get("to") or []]
        return (not sources or any(self._source(s, call) for s in sources)) and (not ops or any(self._operation(o, call) for o in ops))


class CiliumCheck(_Check):
    """``CiliumNetworkPolicy`` ingress semantics (endpoints, CIDRs, HTTP rules) over recorded calls."""

    kind = "CiliumNetworkPolicy"

    def __call__(self, call: Call) -> Outcome:
        """Allowed, denied, or not covered (external destination)."""
        return self.judge(call, "endpointSelector")

    def _rules(self, policy: dict[str, Any]) -> list[dict[str, Any]]:
        return list(policy["spec"].get("ingress") or [])

    def _peer(self, rule: dict[str, Any], call: Call) -> bool:
        if call.workload and "/" in call.workload:
            namespace, name = call.workload.split("/", 1)
            labels = {**self.mapping.labels(namespace, name), CILIUM_NAMESPACE_LABEL: namespace}
            if any(_selected(sel, labels) for sel in rule.get("fromEndpoints") or []):
                return True
        return _in_blocks(call.ip, rule.get("fromCIDR") or [])

    def _rule(self, rule: dict[str, Any], call: Call) -> bool:
        if not self._peer(rule, call):
            return False
        http = [h for port in rule.get("toPorts") or [] for h in (port.get("rules") or {}).get("http") or []]
        return any(re.fullmatch(h.get("method", ".*"), call.method) and re.fullmatch(h.get("path", ".*"), call.path) for h in http)


class NetworkPolicyCheck(_Check):
    """Kubernetes ``NetworkPolicy`` ingress (L4, peers only) over recorded calls."""

    kind = "NetworkPolicy"

    def __call__(self, call: Call) -> Outcome:
        """Allowed, denied, or not covered (external destination)."""
        return self.judge(call, "podSelector")

    def _rules(self, policy: dict[str, Any]) -> list[dict[str, Any]]:
        return list(policy["spec"].get("ingress") or [])

    def _rule(self, rule: dict[str, Any], call: Call) -> bool:
        for peer in rule.get("from") or []:
            if "ipBlock" in peer and _in_blocks(call.ip, [peer["ipBlock"]["cidr"]]):
                return True
            if "podSelector" in peer and call.workload and "/" in call.workload:
                namespace, name = call.workload.split("/", 1)
                if _selected(peer["podSelector"], self.mapping.labels(namespace, name)) and \
                        _selected(peer.get("namespaceSelector"), {"kubernetes.io/metadata.name": namespace}):
                    return True
        return False


def calls_of(table: pa.Table, labels: Mapping[str, tuple[str, bool]] | None = None) -> list[Call]:
    """The calls of a summaries table; scenario labels from ``labels`` (id -> (scenario, malicious)) or the ground-truth column."""
    rows = table.select([c for c in ("id", "source", "destination", "method", "path_template", "raw_path", "ground_truth")
                         if c in table.column_names]).to_pylist()
    out = []
    for r in rows:
        truth = r.get("ground_truth") or {}
        scenario, malicious = (labels or {}).get(r["id"], (truth.get("scenario") or "benign", bool(truth.get("malicious"))))
        src, dst = r["source"] or {}, r["destination"] or {}
        out.append(Call(src.get("workload") or None, src.get("ip"), dst.get("namespace"), dst.get("service") or "-",
                        (r.get("method") or "-").upper(), r.get("raw_path") or sample_path(r.get("path_template") or "/"),
                        bool(dst.get("external")), bool(src.get("external")), scenario, malicious))
    return out


def evaluate(calls: Iterable[Call], objects: list[dict[str, Any]], mapping: PolicyMapping | None = None) -> Counter[tuple[str, str, bool, Outcome]]:
    """(format, scenario, malicious, outcome) -> calls, for each format present in ``objects``."""
    checks = {"istio": IstioCheck(objects, mapping), "cilium": CiliumCheck(objects, mapping), "networkpolicy": NetworkPolicyCheck(objects, mapping)}
    checks = {name: check for name, check in checks.items() if check.by_namespace}
    out: Counter[tuple[str, str, bool, Outcome]] = Counter()
    for call in calls:
        for name, check in checks.items():
            out[(name, call.label, call.malicious, check(call))] += 1
    return out


def _table(paths: list[Path], until: float | None) -> pa.Table:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(p) for p in paths])
    return table if until is None else table.filter(pc.less(table["time"], until))


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.policymatch --learn A.parquet --check B.parquet``: suggest from A, count what it refuses in B."""
    from deploy.policyedges import EdgeFold
    from deploy.policysuggest import Thresholds, judge, namespaces_seen, render

    p = argparse.ArgumentParser(prog="python -m deploy.policymatch", description=main.__doc__)
    p.add_argument("--learn", type=Path, nargs="+", required=True, help="Parquet archives the policy is suggested from")
    p.add_argument("--learn-seconds", type=float, help="learn only the first SECONDS of the learning archives")
    p.add_argument("--check", type=Path, nargs="+", required=True, help="Parquet archives whose calls are checked")
    p.add_argument("--min-calls", type=int, default=Thresholds.min_calls)
    p.add_argument("--min-callers", type=int, default=Thresholds.min_callers)
    p.add_argument("--default-deny", action="store_true", help="add a deny-all per namespace seen (as suggest --default-deny)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON lines")
    args = p.parse_args(argv)
    learn = _table(args.learn, None)
    if args.learn_seconds is not None:
        learn = _table(args.learn, float(min(learn["time"].to_pylist())) + args.learn_seconds)
    fold = EdgeFold()
    fold.update(learn)
    suggestion = judge(fold.edges(), Thresholds(args.min_calls, args.min_callers))
    objects = render(suggestion, deny_namespaces=namespaces_seen(suggestion) if args.default_deny else ())
    counts = evaluate(calls_of(_table(args.check, None)), objects)
    print(f"learned from {learn.num_rows} calls: {len(fold.edges())} edges, {len(suggestion.allowed)} allowed, "
          f"{len(suggestion.review)} for review; {len(objects)} objects")
    for fmt in ("istio", "cilium", "networkpolicy"):
        scenarios = sorted({(s, m) for f, s, m, _ in counts if f == fmt})
        for scenario, malicious in scenarios:
            row = {o: counts[(fmt, scenario, malicious, o)] for o in ("allowed", "denied", "not covered")}
            if args.json:
                print(json.dumps({"format": fmt, "scenario": scenario, "malicious": malicious, **row}))
            else:
                print(f"{fmt:<14} {scenario:<22} {'attack' if malicious else 'benign':<7} "
                      f"allowed {row['allowed']:>7} denied {row['denied']:>6} not covered {row['not covered']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
