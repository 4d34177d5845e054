"""The labeled rows of the WAF comparison and the figures made from their outcomes (pure).

Contract: ``load_morzeux`` and ``load_crs`` turn dataset files into
``BenchRow`` s, each one whole HTTP request with a label (attack or benign), a
category and, for CRS rows, the paranoia level of the rule the row tests.
``sample_rows`` draws a stratified sample that keeps every (category, label)
stratum. ``summarize`` turns the ``Outcome`` s of one system into
``{"tpr", "fpr", "p50_ms", "p99_ms", "n", ...}`` (blocked = HTTP 403; a status
that is neither 2xx nor 403 is counted under ``other_status`` and left out of
the rates), and ``render_table`` prints systems side by side. No sockets, no
clock, no environment: ``deploy.lab.waf_bench`` does the I/O.

Positions: ``query`` (``GET /anything?q=<percent-encoded value>``), ``json``
(``POST /anything`` with ``{"q": value}``) and ``request`` (a CRS test's own
method, target, headers and body, replayed as is).
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus

__all__ = [
    "CRS_CATEGORIES",
    "MORZEUX_CATEGORIES",
    "POSITIONS",
    "BenchRow",
    "Outcome",
    "completed",
    "crs_row",
    "load_crs",
    "load_morzeux",
    "morzeux_row",
    "percentile",
    "render_table",
    "request_bytes",
    "sample_rows",
    "summarize",
]

Position = Literal["query", "json", "request"]
POSITIONS: tuple[Position, ...] = ("query", "json", "request")
# Morzeux attack_type -> the project's canonical inline category names; "norm" is the benign label.
MORZEUX_CATEGORIES = {"sqli": "sqli", "xss": "xss", "path-traversal": "traversal", "cmdi": "cmdi", "norm": "benign"}
# Request-direction CRS rule files that test attacks (PROTOCOL-ENFORCEMENT tests protocol anomalies, not attacks).
CRS_CATEGORIES = frozenset({
    "APPLICATION-ATTACK-GENERIC", "APPLICATION-ATTACK-JAVA", "APPLICATION-ATTACK-LFI", "APPLICATION-ATTACK-PHP",
    "APPLICATION-ATTACK-RCE", "APPLICATION-ATTACK-RFI", "APPLICATION-ATTACK-SESSION-FIXATION", "APPLICATION-ATTACK-SQLI",
    "APPLICATION-ATTACK-XSS", "APPLICATION-ATTACK-NODEJS", "PROTOCOL-ATTACK",
})  # fmt: skip
_HOST = "localhost"


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One labeled request: where it came from, its label, and what goes on the wire.

    ``raw`` (when set) is sent byte for byte instead of method/target/headers/body;
    ``as_given`` rows get no header added (no Content-Length, Host or
    Connection); ``one_shot`` rows go on a connection of their own that is
    closed afterwards (HTTP/1.0, raw requests, headers sent as given).
    """

    id: str
    dataset: str
    position: Position
    category: str
    is_attack: bool
    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    version: str = "HTTP/1.1"
    paranoia: int | None = None
    raw: bytes | None = None
    as_given: bool = False
    one_shot: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one system answered to one row: the status (0 = no answer) and the client-side latency."""

    row_id: str
    status: int
    ms: float
    error: str | None = None


def _jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc


def morzeux_row(record: dict[str, Any], position: Position) -> BenchRow:
    """One Morzeux parameter value as a whole request in ``position`` (``query`` or ``json``)."""
    kind = str(record["attack_type"])
    if kind not in MORZEUX_CATEGORIES:
        raise ValueError(f"{record.get('id')}: attack_type {kind!r} is not one of {sorted(MORZEUX_CATEGORIES)}")
    value, common = str(record["payload"]), (("Host", _HOST), ("User-Agent", "kubeward-waf-bench"), ("Accept", "*/*"))
    row_id, category, attack = f"{record['id']}:{position}", MORZEUX_CATEGORIES[kind], bool(record["is_attack"])
    if position == "query":
        return BenchRow(row_id, "http-params-morzeux", position, category, attack, "GET", "/anything?q=" + quote(value, safe=""), common)
    if position == "json":
        body, headers = json.dumps({"q": value}).encode(), (*common, ("Content-Type", "application/json"))
        return BenchRow(row_id, "http-params-morzeux", position, category, attack, "POST", "/anything", headers, body)
    raise ValueError(f"position {position!r} is not one of ('query', 'json') for http-params-morzeux")


def load_morzeux(path: Path, positions: Sequence[Position] = ("query", "json")) -> dict[Position, list[BenchRow]]:
    """``httpparams_train.jsonl`` as rows, one list per position."""
    records = list(_jsonl(path))
    return {position: [morzeux_row(r, position) for r in records] for position in positions}


def _frames_itself(headers: tuple[tuple[str, str], ...]) -> bool:
    return any(name.lower() in ("content-length", "transfer-encoding") for name, _ in headers)


def crs_row(record: dict[str, Any]) -> BenchRow | str:
    """One CRS regression test stage as a row, or the reason it cannot be replayed faithfully."""
    headers = tuple((str(k), str(v)) for k, v in (record.get("headers") or {}).items())
    for name, value in headers:
        if not name or any(c in name for c in ":\r\n \t") or "\r" in value or "\n" in value:
            return "header that would break the request framing"
    body = record.get("body")
    raw = record.get("raw_request")
    version = str(record.get("version") or "HTTP/1.1")
    as_given = record.get("autocomplete_headers") is False
    paranoia = record.get("paranoia_level")
    return BenchRow(
        id=str(record["id"]), dataset="crs-regression", position="request", category=str(record["category"]),
        is_attack=bool(record["expected_match"]), method=str(record.get("method") or "GET"), target=str(record.get("uri") or "/"),
        headers=headers, body=None if body is None else str(body).encode("utf-8"), version=version,
        paranoia=int(paranoia) if paranoia is not None else None, raw=None if raw is None else str(raw).encode("utf-8"),
        # A row that sets its own framing (Content-Length, Transfer-Encoding) can leave bytes a proxy reads as a second
        # request: on a shared connection every later row would get the previous row's answer.
        as_given=as_given, one_shot=bool(raw) or as_given or version != "HTTP/1.1" or _frames_itself(headers),
    )  # fmt: skip


def load_crs(path: Path) -> tuple[list[BenchRow], dict[str, int]]:
    """Request-direction attack-category CRS tests with a rule-level label; and skipped rows counted by reason."""
    rows: list[BenchRow] = []
    skipped: dict[str, int] = defaultdict(int)
    for record in _jsonl(path):
        if record.get("direction") != "request" or record.get("category") not in CRS_CATEGORIES:
            continue
        if record.get("expected_match") is None:
            skipped["no rule-level label (status/log-only test)"] += 1
            continue
        row = crs_row(record)
        if isinstance(row, str):
            skipped[row] += 1
        else:
            rows.append(row)
    return rows, dict(skipped)


def _form_encoded(body: bytes) -> bytes:
    """A form body whose key=value pairs are percent-encoded, unless it already carries an escape (``%`` or ``+``)."""
    if b"%" in body or b"+" in body:
        return body
    pairs = (pair.partition(b"=") for pair in body.split(b"&"))
    return b"&".join(quote_plus(k, safe="").encode() + (b"=" + quote_plus(v, safe="").encode() if eq else b"") for k, eq, v in pairs)


def completed(row: BenchRow) -> tuple[list[tuple[str, str]], bytes | None]:
    """Headers and body as CRS's test runner (go-ftw) completes them, unless the row is ``as_given``.

    A body without Content-Type is declared a form, and an unescaped form body
    is percent-encoded pair by pair; multipart bodies get CRLF line ends;
    Content-Length is added (also 0 for POST, PUT, PATCH, DELETE); Host is
    added to HTTP/1.1 requests without one. Unlike go-ftw, connections stay
    open (``Connection: keep-alive``) unless the row is ``one_shot``.
    """
    headers, body = list(row.headers), row.body
    if row.as_given:
        return headers, body
    names = {name.lower(): value for name, value in headers}
    if body and "content-type" not in names:
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        names["content-type"] = "application/x-www-form-urlencoded"
    if body and names["content-type"] == "application/x-www-form-urlencoded":
        body = _form_encoded(body)
    if body and names.get("content-type", "").startswith("multipart/form-data;"):
        body = body.replace(b"\n", b"\r\n")
    if "connection" not in names:
        headers.append(("Connection", "close" if row.one_shot else "keep-alive"))
    if (body or row.method in ("POST", "PUT", "PATCH", "DELETE")) and "content-length" not in names and "transfer-encoding" not in names:
        headers.append(("Content-Length", str(len(body or b""))))
    if "host" not in names and row.version == "HTTP/1.1":
        headers.append(("Host", _HOST))
    return headers, body


def request_bytes(row: BenchRow) -> bytes:
    """The bytes sent for ``row``: ``raw`` as is, else the request line, the ``completed`` headers and the body."""
    if row.raw is not None:
        return row.raw
    headers, body = completed(row)
    lines = [f"{row.method} {row.target} {row.version}", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + (body or b"")


def sample_rows(rows: Sequence[BenchRow], n: int, seed: int = 7, floor: int = 10) -> list[BenchRow]:
    """A stratified sample of about ``n`` rows: each (category, label) stratum in proportion, but at least ``floor`` rows (or all it has).

    The floor keeps small categories measurable; overall rates are then over
    the sample's mix, which leans towards the small categories.
    """
    if n >= len(rows):
        return list(rows)
    strata: dict[tuple[str, bool], list[BenchRow]] = defaultdict(list)
    for row in rows:
        strata[(row.category, row.is_attack)].append(row)
    rng = random.Random(seed)
    picked: list[BenchRow] = []
    for key in sorted(strata):
        group = strata[key]
        share = max(floor, round(n * len(group) / len(rows)))
        picked += rng.sample(group, min(share, len(group)))
    order = {row.id: i for i, row in enumerate(rows)}
    return sorted(picked, key=lambda r: order[r.id])


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _rate(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def _group(rows: Sequence[tuple[BenchRow, bool]]) -> dict[str, Any]:
    attacks = [blocked for row, blocked in rows if row.is_attack]
    benign = [blocked for row, blocked in rows if not row.is_attack]
    out: dict[str, Any] = {"tpr": _rate(sum(attacks), len(attacks)), "n": len(attacks)}
    if benign:
        out |= {"fpr": _rate(sum(benign), len(benign)), "n_benign": len(benign)}
    return out


def summarize(rows: Sequence[BenchRow], outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Figures for one system on one dataset and position (see the module docstring)."""
    by_id = {o.row_id: o for o in outcomes}
    judged: list[tuple[BenchRow, bool]] = []
    other: dict[str, int] = defaultdict(int)
    for row in rows:
        got = by_id.get(row.id)
        if got is None:
            other["not sent"] += 1
        elif got.status == 403 or 200 <= got.status < 300:
            judged.append((row, got.status == 403))
        else:
            other[str(got.status) if got.status else f"no answer: {got.error}"] += 1
    latencies = [o.ms for o in outcomes if o.status]
    attacks = [b for r, b in judged if r.is_attack]
    benign = [b for r, b in judged if not r.is_attack]
    per_category: dict[str, list[tuple[BenchRow, bool]]] = defaultdict(list)
    per_level: dict[str, list[tuple[BenchRow, bool]]] = defaultdict(list)
    for row, blocked in judged:
        per_category[row.category].append((row, blocked))
        if row.paranoia is not None:
            per_level[f"pl{row.paranoia}"].append((row, blocked))
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    out: dict[str, Any] = {
        "tpr": _rate(sum(attacks), len(attacks)), "fpr": _rate(sum(benign), len(benign)),
        "p50_ms": None if p50 is None else round(p50, 3), "p99_ms": None if p99 is None else round(p99, 3),
        "n": len(judged), "n_attack": len(attacks), "n_benign": len(benign), "n_latency": len(latencies),
        "per_category": {c: _group(g) for c, g in sorted(per_category.items()) if c != "benign"},
        "other_status": dict(sorted(other.items())),
    }  # fmt: skip
    if per_level:
        out["per_paranoia"] = {level: _group(g) for level, g in sorted(per_level.items())}
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _cell(figures: dict[str, Any], key: str) -> str:
    found = figures.get(key)
    if not isinstance(found, dict) or found.get("n", 0) == 0:
        return "-"
    text = f"{_pct(found.get('tpr'))} ({found['n']})"
    return text + (f" fp {_pct(found['fpr'])} ({found['n_benign']})" if found.get("n_benign") else "")


def render_table(results: dict[str, dict[str, dict[str, Any]]], title: str) -> str:
    """A plain-text table per dataset/position: one column per system, rows for recall per category and paranoia, FP rate, latency."""
    out = [title, "=" * len(title)]
    for block, systems in results.items():
        names = list(systems)
        keys = sorted({k for s in systems.values() for k in s.get("per_category", {})})
        levels = sorted({k for s in systems.values() for k in s.get("per_paranoia", {})})
        table: list[list[str]] = [["", *names]]
        table.append(["recall (attacks)", *(f"{_pct(s['tpr'])} ({s['n_attack']})" for s in systems.values())])
        table += [[f"  {k}", *(_cell(s.get("per_category", {}), k) for s in systems.values())] for k in keys]
        table += [[f"  rule {k.upper()}", *(_cell(s.get("per_paranoia", {}), k) for s in systems.values())] for k in levels]
        table.append(["false positives", *(f"{_pct(s['fpr'])} ({s['n_benign']})" for s in systems.values())])
        table.append(["latency p50 / p99 ms", *(f"{s['p50_ms']} / {s['p99_ms']} ({s['n_latency']})" for s in systems.values())])
        table.append(["other status", *(", ".join(f"{k}: {v}" for k, v in s["other_status"].items()) or "-" for s in systems.values())])
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        out += ["", block] + ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(out)
