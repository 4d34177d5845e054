"""DEV evaluation of inline redaction (``enforcement.redaction``): what the redacted body still holds, and its cost.

``pii-presidio-synth`` (sentences with gold character spans, 17 entity types):
every text goes through ``redact_body`` twice, as ``text/plain`` and embedded in a
JSON body (``{"id": n, "message": text}``), with every pattern-shaped type masked
(``ip`` too, which the default policy allows). The masked spans are recovered
exactly from the output (the evaluation's policy writes a marker carrying the
type and the original length), so precision and recall are **span level on the
redacted output**: a masked span of type T is correct when it overlaps a gold
span mapped to T (``GOLD_TO_TYPE``, shared with ``deploy.lab.sensitive_eval``); a
gold span counts as redacted when a masked span of its type overlaps it, and as
**leaked** when any of its characters survive unmasked. Out of scope (no pattern:
need NER or are not our types): PERSON, STREET_ADDRESS, GPE, ORGANIZATION, TITLE,
NRP, DATE_TIME, AGE, ZIP_CODE, DOMAIN_NAME, and US_DRIVER_LICENSE (per-state
formats; redacted only by field name as ``national_id``). Pattern-shaped types
(min precision/recall): email, phone, card, iban, ssn, ip.

``secrets-noseyparker``: credential rules only (identifiers such as bucket names
and key ids, and public Mapbox tokens, are not secrets), one row per distinct
text, positive when any in-scope row with that text is. A row is redacted when
the default policy replaced a ``secret`` or ``jwt`` in it. Recall on positives,
false-positive rate on the near misses (label 0).

Speed: CPU microseconds per KB of ``redact_body`` on a list of 20 user records
with an email and a phone each (about 7 KB, everything found and masked), and on
a typical 6-record body (``sensitive_eval.sample_body``). These are DEV figures.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from deploy.lab.sensitive_eval import DEFAULT_DATASETS, GOLD_TO_TYPE, PII_FILE, SECRETS_FILE, sample_body
from enforcement.redaction import RedactionPolicy, redact_body, redact_text

__all__ = ["PATTERN_TYPES", "bench_redaction", "evaluate_redaction", "main", "redaction_figures", "users_body"]

PATTERN_TYPES = ("email", "phone", "card", "iban", "ssn", "ip")
_MARK = re.compile("\x00([a-z_]+):(\\d+)\x00")


class _MarkingPolicy(RedactionPolicy):
    """Masks every type with a marker that records the type and the original length (evaluation only)."""

    def replacement(self, kind: str, value: str) -> str | None:
        return f"\x00{kind}:{len(value)}\x00"


_ALL_ON = _MarkingPolicy({"ip": "mask"})


def _masked_spans(out: str) -> list[tuple[int, int, str]]:
    """Original-text spans of the markers in a redacted text."""
    spans, shift = [], 0
    for m in _MARK.finditer(out):
        start = m.start() - shift
        length = int(m.group(2))
        spans.append((start, start + length, m.group(1)))
        shift += len(m.group()) - length
    return spans


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _spans_of(text: str, index: int, as_json: bool) -> list[tuple[int, int, str]]:
    if not as_json:
        return _masked_spans(redact_body(text.encode(), "text/plain; charset=utf-8", _ALL_ON).body.decode())
    body = orjson.dumps({"id": index, "message": text})
    return _masked_spans(orjson.loads(redact_body(body, "application/json", _ALL_ON).body)["message"])


def _pii(rows: list[dict[str, Any]], as_json: bool) -> dict[str, dict[str, int]]:
    tally: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "found": 0, "gold": 0, "leaked": 0})
    for i, row in enumerate(rows):
        masked = _spans_of(row["text"], i, as_json)
        gold = [(s["start"], s["end"], GOLD_TO_TYPE[s["type"]]) for s in row["spans"]]
        for start, end, kind in masked:
            hit = any(t == kind and start < ge and gs < end for gs, ge, t in gold)
            tally[kind]["tp" if hit else "fp"] += 1
        for gs, ge, want in gold:
            if want is None or want not in PATTERN_TYPES:
                continue
            tally[want]["gold"] += 1
            tally[want]["found"] += any(t == want and s < ge and gs < e for s, e, t in masked)
            covered = {c for s, e, _ in masked for c in range(max(s, gs), min(e, ge))}
            tally[want]["leaked"] += len(covered) < ge - gs
    return tally


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _secret_rows(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Distinct in-scope text -> 1 when any in-scope row with it is a secret."""
    found: dict[str, int] = {}
    for row in rows:
        cats = set(row["categories"])
        if ("secret" in cats or "identifier" not in cats) and row["rule_id"] != "np.mapbox.1":
            found[row["text"]] = max(found.get(row["text"], 0), int(row["label"]))
    return found


def _secrets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    policy = RedactionPolicy()
    t = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    for text, label in _secret_rows(rows).items():
        counts: dict[str, int] = {}
        redact_text(text, policy, counts)
        hit = bool(counts.get("secret") or counts.get("jwt"))
        t[("tp" if hit else "fn") if label else ("fp" if hit else "tn")] += 1
    return {"recall": _ratio(t["tp"], t["tp"] + t["fn"]), "fp_rate_near_miss": _ratio(t["fp"], t["fp"] + t["tn"]),
            "precision": _ratio(t["tp"], t["tp"] + t["fp"]), "positives": t["tp"] + t["fn"], "near_misses": t["fp"] + t["tn"]}


def evaluate_redaction(datasets_dir: Path = DEFAULT_DATASETS) -> dict[str, Any]:
    """Per-type precision, recall and leaks (text and JSON bodies), secrets recall and near-miss FP rate."""
    pii = _read(datasets_dir / PII_FILE)
    report: dict[str, Any] = {"dev": True, "pattern_types": list(PATTERN_TYPES)}
    for name, as_json in (("text", False), ("json", True)):
        tally = _pii(pii, as_json)
        report[name] = {k: {"precision": _ratio(v["tp"], v["tp"] + v["fp"]), "recall": _ratio(v["found"], v["gold"]),
                            "leaked": v["leaked"], "support": v["gold"], "masked": v["tp"] + v["fp"]} for k, v in sorted(tally.items())}
    shaped = [report[f][t] for f in ("text", "json") for t in PATTERN_TYPES if t in report[f]]
    report["min_precision"] = min(m["precision"] for m in shaped if m["precision"] is not None)
    report["min_recall"] = min(m["recall"] for m in shaped if m["recall"] is not None)
    report["out_of_scope"] = sorted(k for k, v in GOLD_TO_TYPE.items() if v not in PATTERN_TYPES)
    report["secrets"] = _secrets(_read(datasets_dir / SECRETS_FILE))
    return report


def users_body(records: int = 20) -> bytes:
    """A user-list response (about 7 KB for 20 records): ids, uuids, timestamps, names, an email and a phone each."""
    rows = [{"id": 1000 + i, "uuid": f"3f1c2a4e-8b7d-4c2e-9a1f-{i:012d}", "name": f"User Number {i}", "email": f"user{i}@example.com",
             "phone": f"+1 415 555 {1000 + i:04d}", "created_at": f"2024-03-{i % 28 + 1:02d}T10:11:12Z", "status": "active",
             "plan": "pro", "bio": "Likes hiking and photography, based in Springfield.",
             "address": {"street": f"{10 + i} Main St", "city": "Springfield", "zip": f"1234{i % 10}"}, "tags": ["a", "b"], "orders": 3 + i}
            for i in range(records)]
    return orjson.dumps({"data": rows, "page": 1, "total": 120})


def bench_redaction(repeat: int = 200) -> dict[str, float]:
    """CPU microseconds per KB of ``redact_body`` (default policy) on the user list and on the typical body."""
    policy = RedactionPolicy()
    out: dict[str, float] = {}
    for name, body in (("users", users_body()), ("typical", sample_body())):
        redact_body(body, "application/json", policy)
        start = time.process_time()
        for _ in range(repeat):
            redact_body(body, "application/json", policy)
        per_call = (time.process_time() - start) / repeat * 1e6
        out[f"{name}_bytes"] = float(len(body))
        out[f"{name}_us_per_kb"] = round(per_call / (len(body) / 1024), 1)
    return out


def redaction_figures(datasets_dir: Path = DEFAULT_DATASETS) -> dict[str, Any]:
    """The figures ``make bench`` adds to the summary: ``us_per_kb`` (user list), ``min_precision``, ``min_recall``, secrets."""
    report = evaluate_redaction(datasets_dir)
    speed = bench_redaction()
    return {"us_per_kb": speed["users_us_per_kb"], "us_per_kb_typical": speed["typical_us_per_kb"],
            "min_precision": report["min_precision"], "min_recall": report["min_recall"],
            "secrets_recall": report["secrets"]["recall"], "secrets_fp_rate": report["secrets"]["fp_rate_near_miss"], "dev": True}


def main() -> int:
    """``python -m deploy.lab.redaction_eval``: print the report and the speed as JSON."""
    print(json.dumps({"report": evaluate_redaction(), "speed": bench_redaction()}, indent=2))
    return 0


def _cmd(args: Any) -> int:
    print(f"[eval-redaction] DEV data in {args.datasets}", file=sys.stderr, flush=True)
    result = {"report": evaluate_redaction(Path(args.datasets)), "speed": bench_redaction()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward eval-redaction``."""
    p = sub.add_parser("eval-redaction", help="DEV precision/recall and cost of inline redaction per type", description=__doc__)
    p.add_argument("--datasets", default=str(DEFAULT_DATASETS), help=f"dev datasets folder (default {DEFAULT_DATASETS})")
    p.add_argument("--out", help="also write the report as JSON here")
    p.set_defaults(func=_cmd)


if __name__ == "__main__":
    raise SystemExit(main())
