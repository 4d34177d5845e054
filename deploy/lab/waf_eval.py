"""Offline dev evaluation of inline inspection: ``WafInspector.inspect`` on labeled rows, no proxies.

``evaluate(datasets_dir, paranoia)`` returns, for the shipped rule pack at that
paranoia level (default settings otherwise):

- ``morzeux``: ``http-params-morzeux``, each payload once as the query value
  ``?q=`` (percent-encoded as a client would send it) and once as a JSON body
  field; per position ``tpr``, ``fpr`` and recall per attack type.
- ``crs``: ``crs-regression`` request rows of ``APPLICATION-ATTACK-*`` and
  ``PROTOCOL-ATTACK`` with a label (``expected_match``), replayed as a
  ``RequestView`` (method, uri, headers, body); recall and false-positive
  rate per category, recall per CRS paranoia level. Labels are per CRS rule:
  a negative is a hard benign input for that category.
- ``natural``: the sentences of ``pii-presidio-synth`` and the benign emails of
  ``prompt-injection`` (LLMail) as a JSON body value and as a query value;
  false-positive rate per position.

These are DEV data (the CRS positives are the rows CRS was tuned on): tune the
engine for the grammar of attack classes, never for rows. ``main()`` prints
the table at paranoia 1 and 2.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from enforcement.decision import RequestView
from enforcement.inspection import WafInspector
from enforcement.settings import InspectionSettings
from enforcement.signatures import DEFAULT_RULES, load_signatures

__all__ = ["evaluate", "main"]

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def _rows(path: Path, limit: int | None) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                return
            yield json.loads(line)


def _query(value: str) -> RequestView:
    return RequestView("GET", "/search?q=" + quote(value, safe=""))


def _json(value: str) -> RequestView:
    return RequestView("POST", "/api/items", headers={"content-type": "application/json"}, body=json.dumps({"q": value}).encode())


class _Tally:
    """Positives caught and negatives flagged, per key."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # tp, pos, fp, neg

    def add(self, key: str, attack: bool, flagged: bool) -> None:
        c = self.counts[key]
        if attack:
            c[0] += flagged
            c[1] += 1
        else:
            c[2] += flagged
            c[3] += 1

    def rates(self, key: str) -> dict[str, float | int | None]:
        tp, pos, fp, neg = self.counts[key]
        return {"tpr": round(tp / pos, 4) if pos else None, "fpr": round(fp / neg, 4) if neg else None, "positives": pos, "negatives": neg}


def _morzeux(inspector: WafInspector, root: Path, limit: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = list(_rows(root / "http-params-morzeux" / "httpparams_train.jsonl", limit))
    for position, build in (("query", _query), ("json", _json)):
        tally = _Tally()
        for row in rows:
            flagged = inspector.inspect(build(row["payload"])) is not None
            tally.add("all", row["is_attack"], flagged)
            tally.add(row["attack_type"], row["is_attack"], flagged)
        out[position] = {**tally.rates("all"), "per_category": {k: tally.rates(k) for k in sorted(tally.counts) if k != "all"}}
    return out


def _crs_view(row: dict[str, Any]) -> RequestView:
    headers = {str(k).lower(): str(v) for k, v in (row.get("headers") or {}).items()}
    body = row.get("body")
    data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else None
    if data and row.get("autocomplete_headers", True) and "content-type" not in headers:
        headers["content-type"] = "application/x-www-form-urlencoded"  # what go-ftw adds
    return RequestView(row.get("method") or "GET", row.get("uri") or "/", headers=headers, body=data or None)


def _crs_rows(root: Path, limit: int | None) -> Iterator[dict[str, Any]]:
    for row in _rows(root / "crs-regression" / "crs_regression.jsonl", limit):
        category = row.get("category") or ""
        wanted = category.startswith("APPLICATION-ATTACK-") or category == "PROTOCOL-ATTACK"
        if wanted and row.get("direction") == "request" and row.get("expected_match") is not None and not row.get("raw_request"):
            yield row


def _crs(inspector: WafInspector, root: Path, limit: int | None) -> dict[str, Any]:
    tally, levels = _Tally(), _Tally()
    for row in _crs_rows(root, limit):
        flagged = inspector.inspect(_crs_view(row)) is not None
        tally.add("all", row["expected_match"], flagged)
        tally.add(row["category"], row["expected_match"], flagged)
        levels.add(f"pl{row.get('paranoia_level') or '?'}", row["expected_match"], flagged)
    return {**tally.rates("all"), "per_category": {k: tally.rates(k) for k in sorted(tally.counts) if k != "all"},
            "per_crs_paranoia": {k: levels.rates(k) for k in sorted(levels.counts)}}  # fmt: skip


def _natural(inspector: WafInspector, root: Path, limit: int | None) -> dict[str, Any]:
    texts = [r["text"] for r in _rows(root / "pii-presidio-synth" / "presidio_synth_v2.jsonl", limit)]
    texts += [r["text"] for r in _rows(root / "prompt-injection" / "llmail_benign_emails.jsonl", limit)]
    out: dict[str, Any] = {"texts": len(texts)}
    for position, build in (("query", _query), ("json", _json)):
        flagged = [t for t in texts if inspector.inspect(build(t)) is not None]
        out[position] = {"fpr": round(len(flagged) / len(texts), 4) if texts else None, "examples": flagged[:3]}
    return out


def evaluate(datasets_dir: Path = DATASETS, paranoia: int = 1, rules: Path = DEFAULT_RULES, limit: int | None = None) -> dict[str, Any]:
    """Recall and false positives of the rule pack at ``paranoia`` on the dev datasets (``limit`` rows of each file, for tests)."""
    inspector = WafInspector(load_signatures(rules), InspectionSettings(paranoia=paranoia))
    return {"paranoia": paranoia, "morzeux": _morzeux(inspector, datasets_dir, limit), "crs": _crs(inspector, datasets_dir, limit),
            "natural": _natural(inspector, datasets_dir, limit)}  # fmt: skip


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:6.2f}%"


def _print(result: dict[str, Any]) -> None:
    p = result["paranoia"]
    for position, got in result["morzeux"].items():
        print(f"PL{p} morzeux/{position:5} tpr {_pct(got['tpr'])} fpr {_pct(got['fpr'])}  "
              + "  ".join(f"{k} {_pct(v['tpr'] if k != 'norm' else v['fpr'])}" for k, v in got["per_category"].items()))
    crs = result["crs"]
    print(f"PL{p} crs            tpr {_pct(crs['tpr'])} fpr {_pct(crs['fpr'])}")
    for k, v in crs["per_category"].items():
        print(f"      {k:36} tpr {_pct(v['tpr'])} ({v['positives']:4})  fpr {_pct(v['fpr'])} ({v['negatives']:3})")
    print("      by CRS paranoia: " + "  ".join(f"{k} {_pct(v['tpr'])}" for k, v in crs["per_crs_paranoia"].items()))
    nat = result["natural"]
    print(f"PL{p} natural text ({nat['texts']}): fpr query {_pct(nat['query']['fpr'])}  json {_pct(nat['json']['fpr'])}")


def main(argv: list[str] | None = None) -> int:
    """Print the evaluation at paranoia 1 and 2 (argument: the datasets directory)."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else DATASETS
    for paranoia in (1, 2):
        _print(evaluate(root, paranoia))
    return 0


def _cmd(args: Any) -> int:
    results = []
    for paranoia in args.paranoia:
        print(f"[eval-waf] paranoia {paranoia} on {args.datasets} (DEV data)", file=sys.stderr, flush=True)
        result = evaluate(Path(args.datasets), paranoia, Path(args.rules), args.limit)
        _print(result)
        results.append(result)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward eval-waf``."""
    p = sub.add_parser("eval-waf", help="DEV recall/false positives of inline inspection, offline (no proxies)", description=__doc__)
    p.add_argument("--datasets", default=str(DATASETS), help=f"dev datasets folder (default {DATASETS})")
    p.add_argument("--rules", default=str(DEFAULT_RULES), help="rule file or directory (default: the shipped pack)")
    p.add_argument("--paranoia", type=int, nargs="+", default=[1, 2], choices=[1, 2, 3, 4], help="paranoia levels to evaluate (default 1 2)")
    p.add_argument("--limit", type=int, help="read at most this many rows of each dataset")
    p.add_argument("--out", help="also write the results as JSON here")
    p.set_defaults(func=_cmd)


if __name__ == "__main__":
    raise SystemExit(main())
