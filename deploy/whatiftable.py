"""The ``kubeward whatif`` report (``deploy.whatifreport.report``'s dictionary) as a table for a terminal."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

__all__ = ["render"]


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(name: str, base: Any, cand: Any, diff: Any = "") -> str:
    return f"  {name:<44} {base!s:>12} {cand!s:>12} {diff!s:>12}"


def _signed(n: int) -> str:
    return f"{n:+d}"


def _of(labels: dict[str, Any], key: str, total: str) -> str:
    return f"{labels[key]}/{labels[total]}"


def _pairs(title: str, counts: dict[str, Any], limit: int = 8) -> list[str]:
    if not counts:
        return []
    shown = ", ".join(f"{k} {v['requests'] if isinstance(v, dict) else v}" for k, v in list(counts.items())[:limit])
    more = f" (+{len(counts) - limit} more)" if len(counts) > limit else ""
    return [f"  {title}: {shown}{more}"]


def _changes(report: dict[str, Any]) -> str:
    s = report["settings"]
    base, cand = s["baseline"], s["candidate"]
    parts = []
    modes = {k: v for k, v in cand["policy"]["modes"].items() if base["policy"]["modes"].get(k) != v}
    if modes:
        parts.append("modes " + ", ".join(f"{k}={v}" for k, v in sorted(modes.items())))
    if cand["policy"]["default_mode"] != base["policy"]["default_mode"]:
        parts.append(f"default mode {cand['policy']['default_mode']}")
    for key in ("rules_dir", "model_path", "model_mode"):
        if cand[key] != base[key]:
            parts.append(f"{key} {cand[key]}")
    if cand["rule_overrides"] != base["rule_overrides"]:
        parts.append("rule overrides " + json.dumps(cand["rule_overrides"], sort_keys=True))
    if cand.get("allowlist") != base.get("allowlist"):
        parts.append(_allowlist(cand.get("allowlist")))
    return "; ".join(parts) or "the same settings as the baseline"


def _allowlist(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "no allow-list"
    return f"allow-list {summary['source']} ({summary['endpoints']} endpoints, {summary['destinations']} destinations)"


def render(report: dict[str, Any]) -> str:
    """The report as a table for a terminal."""
    b, c, d = report["baseline"], report["candidate"], report["difference"]
    s = report["settings"]
    span = (report["last_time"] or 0) - (report["first_time"] or 0)
    lines = [f"what-if on {report['rows']} recorded requests of {report['actors']} actors, {_when(report['first_time'])} + {span:.0f} s; "
             f"verdicts reach the shim {s['latency_s']:g} s after their evidence",
             f"candidate: {_changes(report)}",
             *([f"baseline: {_allowlist(s['baseline']['allowlist'])}"] if s["baseline"].get("allowlist") else []),
             f"already refused when recorded (not counted below): {report['already_refused']['requests']} requests of "
             f"{report['already_refused']['actors']} actors", "",
             _row("", "baseline", "candidate", "difference")]
    rows = [("verdicts issued", b["verdicts"]["total"], c["verdicts"]["total"], ""),
            ("requests refused", b["refused"]["requests"], c["refused"]["requests"], _signed(d["requests_newly_refused"] - d["requests_no_longer_refused"])),
            ("actors refused", b["refused"]["actors"], c["refused"]["actors"], _signed(d["actors_newly_refused"] - d["actors_no_longer_refused"]))]
    for action in sorted(set(b["refused"]["by_action"]) | set(c["refused"]["by_action"])):
        rows.append((f"  by {action}", b["refused"]["by_action"].get(action, 0), c["refused"]["by_action"].get(action, 0), ""))
    rows += [("collateral requests (not the flagged pattern)", b["collateral"]["requests"], c["collateral"]["requests"], ""),
             ("  to other services", b["collateral"]["other_services"], c["collateral"]["other_services"], ""),
             ("collateral actors", b["collateral"]["actors"], c["collateral"]["actors"], ""),
             ("would refuse in observe mode (requests)", b["observed"]["requests"], c["observed"]["requests"], "")]
    if "labels" in c:
        bl, cl = b["labels"], c["labels"]
        rows += [("attackers caught (labels)", _of(bl, "attackers_caught", "attackers"), _of(cl, "attackers_caught", "attackers"), _signed(d["attackers_newly_caught"])),
                 ("malicious requests refused", _of(bl, "malicious_requests_refused", "malicious_requests"), _of(cl, "malicious_requests_refused", "malicious_requests"), ""),
                 ("benign actors refused", _of(bl, "benign_actors_refused", "benign_actors"), _of(cl, "benign_actors_refused", "benign_actors"), _signed(d["benign_actors_newly_refused"])),
                 ("benign requests refused (benign collateral)", _of(bl, "benign_requests_refused", "benign_requests"), _of(cl, "benign_requests_refused", "benign_requests"), _signed(d["benign_requests_newly_refused"])),
                 ("  of benign actors", bl["benign_requests_refused_of_benign_actors"], cl["benign_requests_refused_of_benign_actors"], ""),
                 ("  of attackers (their cover traffic)", bl["benign_requests_refused_of_attackers"], cl["benign_requests_refused_of_attackers"], "")]
    rows += _list_rows(b.get("allowlist"), c.get("allowlist"))
    lines += [_row(*r) for r in rows]
    lines += ["", "candidate refusals:"]
    lines += _pairs("by namespace", c["refused"]["by_namespace"]) + _pairs("by service", c["refused"]["by_service"])
    lines += _pairs("by class", c["refused"]["by_class"]) + _pairs("by rule", c["refused"]["by_rule"])
    if c.get("allowlist"):
        lines += _pairs("allow-list alone, by reason", c["allowlist"]["by_reason"]) + _pairs("allow-list alone, by service", c["allowlist"]["by_service"])
    lines += _actors("top actors refused by the candidate", c["top_actors"])
    lines += _actors("newly refused (not by the baseline)", d["top_newly_refused"])
    return "\n".join(lines)


def _list_rows(base: dict[str, Any] | None, cand: dict[str, Any] | None) -> list[tuple[str, Any, Any, str]]:
    """The allow-list on its own (whatever else refused the same requests), for the runs that have one."""
    if base is None and cand is None:
        return []

    def get(run: dict[str, Any] | None, *keys: str) -> str:
        return "-" if run is None or keys[0] not in run else "/".join(str(run[k]) for k in keys)

    rows = [("allow-list alone refuses (requests, enforced)", get(base, "requests"), get(cand, "requests"), ""),
            ("  answered first (the refusals by allowlist)", get(base, "answered_first"), get(cand, "answered_first"), ""),
            ("  actors", get(base, "actors"), get(cand, "actors"), ""),
            ("  would refuse where the policy observes", get(base, "observed_requests"), get(cand, "observed_requests"), "")]
    if "attackers" in (cand or base or {}):
        rows += [("  malicious/benign requests (labels)", get(base, "malicious_requests", "benign_requests"),
                  get(cand, "malicious_requests", "benign_requests"), ""),
                 ("  attackers/benign actors (labels)", get(base, "attackers", "benign_actors"), get(cand, "attackers", "benign_actors"), "")]
    return rows


def _actors(title: str, actors: list[dict[str, Any]]) -> list[str]:
    if not actors:
        return []
    out = ["", f"{title}:", f"  {'actor':<52} {'requests':>8} {'refused':>8} {'collat.':>8}  {'first refused':<20} {'label':<10} classes"]
    for a in actors:
        classes = ", ".join(f"{k} {v}" for k, v in a["classes"].items())
        out.append(f"  {a['actor'][:52]:<52} {a['requests']:>8} {a['refused']:>8} {a['collateral']:>8}  {_when(a['first_refused']):<20} "
                   f"{a.get('label', '-'):<10} {classes}")
    return out
