"""DEV evaluation of sensitive-data detection (``ingest.sensitive``) on the shared dev datasets.

Two datasets under ``<datasets>/`` (see each README):

* ``pii-presidio-synth``: sentences with character spans of 17 entity types.
  Gold types map to ours (``GOLD_TO_TYPE``). **Matching rule (overlap):** a
  predicted span of type T is a true positive when it overlaps a gold span whose
  mapped type is T; a gold span is found when some predicted span of its mapped
  type overlaps it. Precision = true-positive predictions / predictions of T;
  recall = found gold spans / gold spans of T. Predictions of a type with no gold
  counterpart in the dataset (``secret``, ``jwt``, ``national_id``) are listed as
  unlabelled predictions. The same texts are also embedded in JSON bodies
  (``{"message": text}``) and run through ``ingest.bodies.body_features``:
  count-level precision/recall (per row, ``min(predicted, gold)`` true positives)
  checks the API path gives the same answer.
* ``secrets-noseyparker``: one snippet per row, 1 = secret, 0 = near miss,
  labelled per Nosey Parker rule. We score **credential rules** only: every rule
  except those tagged ``identifier`` without ``secret`` (bucket names, ARNs,
  client ids, account ids, AWS access key *ids*, usernames, public keys) and the
  public Mapbox ``pk.`` token; so the JWT, MWS and TeamCity rules are in. Rows are
  deduplicated by text; a text is a secret when any in-scope row with that text
  is labelled 1 (the README's conflict check: a negative for one rule can be a
  positive for another). A row is detected when ``scan_text`` reports
  ``secret`` or ``jwt``. ``jwt`` alone is scored on the JWT rule's rows with that rule's labels.

Pattern-shaped types (in ``min_precision``/``min_recall``): email, phone, card,
iban, ssn, ip, secret, jwt. Not pattern-shaped, reported but excluded:
PERSON, STREET_ADDRESS, GPE, ORGANIZATION, TITLE, NRP (need NER), DATE_TIME,
AGE, ZIP_CODE, DOMAIN_NAME (no sensitive type of ours), US_DRIVER_LICENSE
(per-state formats; mapped to ``national_id``, which we find by field name).

These are **DEV** figures: the datasets are the dev set and the detectors were
built looking at them (the phone context words in particular). Rows are split by
index parity; ``even`` and ``odd`` are reported next to ``all`` so a figure that
only holds on one half shows. Nosey Parker's rules were tuned on its own examples,
so its recall is a coverage check, not an independent estimate.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from ingest.bodies import body_features
from ingest.sensitive import JWT, SECRET, scan_spans, scan_text

__all__ = ["DEFAULT_DATASETS", "GOLD_TO_TYPE", "PATTERN_TYPES", "add_cli", "bench_body_features", "evaluate_sensitive", "sample_body"]

DEFAULT_DATASETS = Path("/work/shared/datasets")
PII_FILE = Path("pii-presidio-synth/presidio_synth_v2.jsonl")
SECRETS_FILE = Path("secrets-noseyparker/noseyparker_rule_examples.jsonl")

#: Presidio entity type -> our type (None: not a type we detect)
GOLD_TO_TYPE: dict[str, str | None] = {
    "EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "card", "IBAN_CODE": "iban",
    "US_SSN": "ssn", "IP_ADDRESS": "ip", "US_DRIVER_LICENSE": "national_id",
    "PERSON": None, "STREET_ADDRESS": None, "GPE": None, "ORGANIZATION": None, "DATE_TIME": None,
    "TITLE": None, "AGE": None, "NRP": None, "ZIP_CODE": None, "DOMAIN_NAME": None,
}
PATTERN_TYPES = ("email", "phone", "card", "iban", "ssn", "ip", "secret", "jwt")
SPLITS = ("all", "even", "odd")
JWT_RULE = "np.jwt.1"
PUBLIC_TOKEN_RULES = frozenset({"np.mapbox.1"})  # Mapbox "pk." tokens are public by design


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _in_split(index: int, split: str) -> bool:
    return split == "all" or (index % 2 == 0) == (split == "even")


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _pii_tally(rows: list[dict[str, Any]], split: str) -> dict[str, dict[str, int]]:
    tally: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "found": 0, "gold": 0})
    for i, row in enumerate(rows):
        if not _in_split(i, split):
            continue
        gold = [((s["start"], s["end"]), GOLD_TO_TYPE[s["type"]], s["type"]) for s in row["spans"]]
        pred = scan_spans(row["text"])
        for span in pred:
            hit = any(t == span.type and _overlaps((span.start, span.end), g) for g, t, _ in gold)
            tally[span.type]["tp" if hit else "fp"] += 1
        for g, t, name in gold:
            tally[name]["gold"] += 1
            if t is not None and any(p.type == t and _overlaps((p.start, p.end), g) for p in pred):
                tally[name]["found"] += 1
    return tally


def _pii_json_counts(rows: list[dict[str, Any]], split: str) -> dict[str, dict[str, int]]:
    tally: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "pred": 0, "gold": 0})
    for i, row in enumerate(rows):
        if not _in_split(i, split):
            continue
        body = json.dumps({"id": i, "message": row["text"]}).encode()
        got = body_features(body, "application/json").sensitive
        want: dict[str, int] = defaultdict(int)
        for s in row["spans"]:
            if GOLD_TO_TYPE[s["type"]]:
                want[str(GOLD_TO_TYPE[s["type"]])] += 1
        for t in set(got) | set(want):
            tally[t]["tp"] += min(got.get(t, 0), want.get(t, 0))
            tally[t]["pred"] += got.get(t, 0)
            tally[t]["gold"] += want.get(t, 0)
    return tally


def _credential_rule(row: dict[str, Any]) -> bool:
    """In scope: every rule except identifiers (tagged ``identifier`` without ``secret``) and public tokens."""
    cats = set(row["categories"])
    return ("secret" in cats or "identifier" not in cats) and row["rule_id"] not in PUBLIC_TOKEN_RULES


def _secret_rows(rows: list[dict[str, Any]]) -> list[tuple[int, str, int, int | None]]:
    """``(first index, text, secret label, JWT-rule label or None)`` per distinct in-scope text."""
    seen: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        if not _credential_rule(row):
            continue
        entry = seen.setdefault(row["text"], [i, row["text"], 0, None])
        entry[2] = max(entry[2], int(row["label"]))
        if row["rule_id"] == JWT_RULE:
            entry[3] = max(entry[3] or 0, int(row["label"]))
    return [(e[0], e[1], e[2], e[3]) for e in seen.values()]


def _secret_tally(rows: list[tuple[int, str, int, int | None]], split: str) -> dict[str, dict[str, int]]:
    tally: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "found": 0, "gold": 0})
    for index, text, secret_label, jwt_label in rows:
        if not _in_split(index, split):
            continue
        counts = scan_text(text)
        kinds = [(SECRET, secret_label, counts.get(SECRET, 0) + counts.get(JWT, 0) > 0)]
        if jwt_label is not None:
            kinds.append((JWT, jwt_label, counts.get(JWT, 0) > 0))
        for kind, label, detected in kinds:
            tally[kind]["gold"] += label
            tally[kind]["found"] += label and detected
            tally[kind]["tp" if label else "fp"] += detected
    return tally


def _metrics(t: dict[str, int], source: str, pattern: bool) -> dict[str, Any]:
    return {
        "precision": _ratio(t["tp"], t["tp"] + t["fp"]), "recall": _ratio(t["found"], t["gold"]),
        "support": t["gold"], "predicted": t["tp"] + t["fp"], "false_positives": t["fp"],
        "source": source, "pattern_shaped": pattern,
    }


def _split_report(pii: list[dict[str, Any]], secrets: list[tuple[int, str, int, int | None]], split: str) -> dict[str, Any]:
    spans, found = _pii_tally(pii, split), _secret_tally(secrets, split)
    types: dict[str, Any] = {}
    for gold_name, ours in GOLD_TO_TYPE.items():
        gold = spans.get(gold_name, {"gold": 0, "found": 0})
        pred = spans.get(ours, {"tp": 0, "fp": 0}) if ours else {"tp": 0, "fp": 0}
        counts = {"tp": pred["tp"], "fp": pred["fp"], "gold": gold["gold"], "found": gold["found"]}
        if ours is None:
            types[gold_name] = _metrics(counts, "presidio", False) | {"maps_to": None}
            continue
        types[ours] = _metrics(counts, "presidio", ours in PATTERN_TYPES)
        types[ours]["gold_type"] = gold_name
    for kind in (SECRET, JWT):
        types[kind] = _metrics(found[kind], "noseyparker", True)
    unlabelled = {k: v["tp"] + v["fp"] for k, v in spans.items() if k in (SECRET, JWT, "dob")}
    shaped = [types[t] for t in PATTERN_TYPES]
    return {
        "types": types,
        "min_precision": min((m["precision"] for m in shaped if m["precision"] is not None), default=None),
        "min_recall": min((m["recall"] for m in shaped if m["recall"] is not None), default=None),
        "presidio_unlabelled_predictions": unlabelled,
        "json_counts": {k: {"precision": _ratio(v["tp"], v["pred"]), "recall": _ratio(v["tp"], v["gold"]), "support": v["gold"]}
                        for k, v in sorted(_pii_json_counts(pii, split).items())},
    }


def evaluate_sensitive(datasets_dir: Path) -> dict[str, Any]:
    """Per-type DEV precision, recall and support on both datasets, per split (``all``, ``even``, ``odd``).

    ``min_precision``/``min_recall`` are taken over ``PATTERN_TYPES`` in the ``all`` split.
    """
    pii = _read_jsonl(datasets_dir / PII_FILE)
    secrets = _secret_rows(_read_jsonl(datasets_dir / SECRETS_FILE))
    splits = {split: _split_report(pii, secrets, split) for split in SPLITS}
    overall = splits["all"]
    return {
        "dev": True, "pattern_types": list(PATTERN_TYPES), "types": overall["types"],
        "min_precision": overall["min_precision"], "min_recall": overall["min_recall"], "splits": splits,
    }


def _fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table (DEV figures, per split)."""
    lines = ["DEV set figures (tuned on these datasets; see deploy/lab/sensitive_eval.py)", ""]
    head = f"{'type':<18}{'source':<12}{'shaped':<7}" + "".join(f"{s + ' P':>8}{s + ' R':>8}{'n':>5}" for s in SPLITS)
    lines.append(head)
    for name, m in report["types"].items():
        row = f"{name:<18}{m['source']:<12}{'yes' if m['pattern_shaped'] else 'no':<7}"
        for split in SPLITS:
            sm = report["splits"][split]["types"][name]
            row += f"  {_fmt(sm['precision'])}  {_fmt(sm['recall'])}{sm['support']:>5}"
        lines.append(row)
    for split in SPLITS:
        s = report["splits"][split]
        lines.append(f"{split}: min precision {_fmt(s['min_precision'])}, min recall {_fmt(s['min_recall'])} over "
                     f"{', '.join(PATTERN_TYPES)}; unlabelled presidio predictions {s['presidio_unlabelled_predictions']}")
    lines.append("JSON-embedded presidio, count level (all): " + ", ".join(
        f"{k} P {_fmt(v['precision']).strip()} R {_fmt(v['recall']).strip()}" for k, v in report["splits"]["all"]["json_counts"].items()))
    return "\n".join(lines)


def sample_body(records: int = 6) -> bytes:
    """A typical JSON list response (about 2 KB for 6 records): ids, uuids, timestamps, names, an email each."""
    rows = [
        {"id": 1000 + i, "uuid": f"3f1c2a4e-8b7d-4c2e-9a1f-{i:012d}", "name": f"User {i}", "email": f"user{i}@example.com",
         "created_at": f"2024-03-{i + 1:02d}T10:11:12Z", "status": "active", "plan": "pro", "score": 0.5 + i,
         "address": {"street": f"{10 + i} Main St", "city": "Springfield", "zip": f"1234{i}"}, "tags": ["a", "b"],
         "orders": 3 + i}
        for i in range(records)
    ]
    return orjson.dumps({"data": rows, "page": 1, "next": "/users?page=2", "total": 120})


def bench_body_features(repeat: int = 2000) -> dict[str, float]:
    """CPU microseconds per ``body_features`` call on ``sample_body()``, with ``orjson.loads`` of it as a yardstick."""
    body = sample_body()

    def per_call(fn: Any) -> float:
        start = time.process_time()
        for _ in range(repeat):
            fn()
        return round((time.process_time() - start) / repeat * 1e6, 1)

    return {"body_bytes": float(len(body)), "body_features_us": per_call(lambda: body_features(body, "application/json")),
            "orjson_loads_us": per_call(lambda: orjson.loads(body))}


def _cmd(args: Any) -> int:
    report = evaluate_sensitive(Path(args.datasets))
    if args.bench:
        report["bench"] = bench_body_features()
    print(format_table(report))
    if args.bench:
        print("speed: " + ", ".join(f"{k} {v:g}" for k, v in report["bench"].items()))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward eval-sensitive``."""
    p = sub.add_parser("eval-sensitive", help="DEV precision/recall of sensitive-data detection", description=__doc__)
    p.add_argument("--datasets", default=str(DEFAULT_DATASETS), help=f"dev datasets folder (default {DEFAULT_DATASETS})")
    p.add_argument("--out", help="also write the report as JSON here")
    p.add_argument("--bench", action="store_true", help="also time body_features on a typical 2 KB JSON body (CPU us per call)")
    p.set_defaults(func=_cmd)


if __name__ == "__main__":  # ``python -m deploy.lab.sensitive_eval [--bench]`` until the CLI registers the module
    import argparse
    import sys

    _parser = argparse.ArgumentParser(prog="kubeward")
    add_cli(_parser.add_subparsers())
    _args = _parser.parse_args(["eval-sensitive", *sys.argv[1:]])
    sys.exit(_args.func(_args))
