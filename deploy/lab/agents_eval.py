"""``kubeward eval-agents``: DEV figures of MCP tool-poisoning and rug-pull detection (issue 8, item 2)
and of prompt-injection scanning (item 3, section ``prompt_injection``: ``deploy.lab.prompt_eval``).

Reads the labeled tool definitions of ``../shared/datasets/mcp-tools/tools_dev.jsonl``
(``--dataset``) and runs ``enforcement.toolscan`` on what a detector may see
(name, description, input schema, annotations and, for ``kind: update``, the
previous definition; the provenance fields reveal labels and are never passed
on). Writes the ``poisoning``, ``rugpull`` and ``cost`` sections of
``build/agents-eval.json`` (other sections already in the file are kept):

- ``poisoning``: every row's current definition scanned; recall, false-positive
  rate and counts overall, recall per attack type, recall/FPR per origin and per
  split, for the rules alone (``rules``) and for rules plus the text model
  (``combined``; absent with ``--no-model``). ``dev: true``: these rows are the
  ones the rules were written against and the model was fitted on (its tune half).
- ``rugpull``: each ``kind: update`` row through ``compare(previous, current)``:
  ``detected/total`` over poisoned updates (the pin changed, so the first changed
  ``tools/list`` raises a finding), ``changed_flagged`` over all updates
  (legitimate revisions need approval too), ``poisoned_change_detected`` (the
  change adds poisoning) over poisoned updates and ``benign_update_flagged_poisoned``
  over benign ones.
- ``cost``: microseconds per tool (median and p99, with ``n``), rules alone and with the model.

Splits: a definition is in ``tune`` when its split hash (``split_of``) is even, else
``held``; identical definitions (a rug-pull row and its static copy) share a
split. ``--fit-model`` fits the text model on the tune half only, picks its
threshold from out-of-fold predictions there, writes the artifact
(``enforcement/artifacts/tool-poisoning.skops``) and then evaluates; fitting
is deterministic, so rerunning it rebuilds the same model. Figures on the tune
half are in-sample for the model; the held half is the honest DEV figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from enforcement.toolmodel import DEFAULT_TOOL_MODEL, ToolTextModel, fit_tool_model, load_tool_model, save_tool_model
from enforcement.toolrules import DEFAULT_TOOL_RULES, ToolRuleSet, load_tool_rules
from enforcement.toolscan import THRESHOLD, compare, definition_hash, model_text, scan_segments
from enforcement.tooltext import segments

__all__ = ["DATASET", "OUT", "add_cli", "evaluate", "fit_model", "format_table", "read_rows", "split_of"]

REPO = Path(__file__).resolve().parents[2]
DATASET = REPO.parent / "shared" / "datasets" / "mcp-tools" / "tools_dev.jsonl"
OUT = REPO / "build" / "agents-eval.json"
#: the fields a detector may read (dataset README); everything else is provenance
VISIBLE = ("name", "description", "input_schema", "annotations")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The dataset rows (one JSON object per line)."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _visible(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in VISIBLE}


def split_of(row: dict[str, Any]) -> str:
    """``tune`` when the split hash of the definition is even, else ``held`` (identical definitions share a split).

    The split hash is its own function (sha256 of the canonical JSON with keys ``description``, ``input_schema``,
    ``name``), fixed when the shipped model was fitted: it must not move when the pin's hash does."""
    doc = {"name": row.get("name"), "description": row.get("description"), "input_schema": row.get("input_schema")}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "tune" if int(hashlib.sha256(canonical.encode("utf-8")).hexdigest(), 16) % 2 == 0 else "held"


class _Tally:
    """tp, fn, fp, tn per key."""

    def __init__(self) -> None:
        self.c: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])

    def add(self, keys: Iterable[str], label: int, flagged: bool) -> None:
        for key in keys:
            self.c[key][(0 if flagged else 1) if label else (2 if flagged else 3)] += 1

    def rates(self, key: str) -> dict[str, Any]:
        tp, fn, fp, tn = self.c[key]
        return {"recall": round(tp / (tp + fn), 4) if tp + fn else None, "fpr": round(fp / (fp + tn), 4) if fp + tn else None,
                "tp": tp, "fn": fn, "fp": fp, "tn": tn}  # fmt: skip

    def section(self, prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: self.rates(k) for k in sorted(self.c) if k.startswith(prefix)}


def _percentiles(samples: Sequence[float]) -> dict[str, Any]:
    if not samples:
        return {"median": None, "p99": None, "n": 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"median": round(statistics.median(ordered), 1), "p99": round(p99, 1), "n": len(ordered)}


def _timed_scan(row: dict[str, Any], rules: ToolRuleSet, model: ToolTextModel | None) -> tuple[Any, float, float]:
    """(scan, us for the rules, us including the model) of one row's current definition."""
    start = time.perf_counter()
    segs = segments(**_visible(row))
    ruled = scan_segments(segs, rules)
    middle = time.perf_counter()
    scan = scan_segments(segs, rules, model) if model is not None else ruled
    end = time.perf_counter()
    with_model = (middle - start) * 1e6 + ((end - middle) * 1e6 if model is not None else 0.0)
    return scan, (middle - start) * 1e6, with_model


def _keys(row: dict[str, Any], split: str) -> list[str]:
    keys = ["all", f"origin:{row.get('origin')}", f"split:{split}", f"{split}_origin:{row.get('origin')}"]
    return keys + [f"attack:{row.get('attack')}"] if row.get("label") else keys


def _poisoning(rows: Sequence[dict[str, Any]], rules: ToolRuleSet, model: ToolTextModel | None) -> tuple[dict[str, Any], dict[str, Any]]:
    ruled, combined, cost_rules, cost_model = _Tally(), _Tally(), [], []
    misses: list[str] = []
    for row in rows:
        scan, us_rules, us_model = _timed_scan(row, rules, model)
        keys, label = _keys(row, split_of(row)), int(row.get("label") or 0)
        ruled.add(keys, label, scan.points >= THRESHOLD)
        combined.add(keys, label, scan.poisoned)
        cost_rules.append(us_rules)
        cost_model.append(us_model)
        if label and not scan.poisoned and len(misses) < 400:
            misses.append(str(row.get("id")))
    out: dict[str, Any] = {"dev": True, "threshold": THRESHOLD, "rules": _summary(ruled)}
    if model is not None:
        out["combined"] = _summary(combined)
        out["model"] = {"threshold": model.threshold, "beta": model.beta, "fit": dict(model.meta)}
    best = out.get("combined", out["rules"])
    out.update({k: best[k] for k in ("recall", "fpr", "tp", "fn", "fp", "tn")})
    out["missed_ids"] = misses
    cost = {"us_per_tool": _percentiles(cost_model if model is not None else cost_rules), "rules_only_us_per_tool": _percentiles(cost_rules),
            "with_model": model is not None}  # fmt: skip
    return out, cost


def _summary(tally: _Tally) -> dict[str, Any]:
    return {**tally.rates("all"), "per_attack": {k: tally.rates("attack:" + k)["recall"] for k in sorted(tally.section("attack:"))},
            "per_origin": tally.section("origin:"), "per_split": tally.section("split:"),
            "per_origin_held": tally.section("held_origin:"), "per_origin_tune": tally.section("tune_origin:")}  # fmt: skip


def _rugpull(rows: Sequence[dict[str, Any]], rules: ToolRuleSet, model: ToolTextModel | None) -> dict[str, Any]:
    updates = [r for r in rows if r.get("kind") == "update" and isinstance(r.get("previous"), dict)]
    counts = {"detected": 0, "total": 0, "changed_flagged": 0, "updates": len(updates), "poisoned_change_detected": 0,
              "poisoned_change_total": 0, "benign_update_flagged_poisoned": 0, "benign_update_total": 0}  # fmt: skip
    for row in updates:
        previous = {k: row["previous"].get(k) for k in ("name", "description", "input_schema")}
        change = compare(previous, _visible(row), rules=rules, model=model)
        counts["changed_flagged"] += change.changed
        if row.get("label"):
            counts["total"] += 1
            counts["poisoned_change_total"] += 1
            counts["detected"] += change.changed
            counts["poisoned_change_detected"] += change.adds_poisoning
        else:
            counts["benign_update_total"] += 1
            counts["benign_update_flagged_poisoned"] += change.adds_poisoning
    return {**counts, "dev": True}


def evaluate(rows: Sequence[dict[str, Any]], rules: ToolRuleSet, model: ToolTextModel | None) -> dict[str, Any]:
    """The ``poisoning``, ``rugpull`` and ``cost`` sections for ``rows`` (see the module docstring)."""
    poisoning, cost = _poisoning(rows, rules, model)
    return {"poisoning": poisoning, "rugpull": _rugpull(rows, rules, model), "cost": cost}


def _git_commit() -> str:
    try:
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def fit_model(rows: Sequence[dict[str, Any]], rules: ToolRuleSet, dataset: Path, out: Path) -> ToolTextModel:
    """Fit the text model on the tune half of ``rows`` and write it to ``out``."""
    tune = [r for r in rows if split_of(r) == "tune"]
    segs = [segments(**_visible(r)) for r in tune]
    texts, points = [model_text(s) for s in segs], [scan_segments(s, rules).points for s in segs]
    model, _ = fit_tool_model(texts, [int(r.get("label") or 0) for r in tune], points)
    digest = hashlib.sha256(dataset.read_bytes()).hexdigest()
    extra = {"dataset": dataset.name, "dataset_sha256": digest, "split": "tune: split hash even (agents_eval.split_of)", "git_commit": _git_commit()}
    meta = save_tool_model(model, out, extra)
    return ToolTextModel(model.pipeline, model.threshold, model.beta, meta)


def _rate(section: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "   -  " if v is None else f"{100 * v:5.1f}%"

    return f"recall {pct(section['recall'])} ({section['tp']}/{section['tp'] + section['fn']})  fpr {pct(section['fpr'])} ({section['fp']}/{section['fp'] + section['tn']})"


def _lines(result: dict[str, Any]) -> Iterator[str]:
    poisoning = result["poisoning"]
    for name in ("rules", "combined"):
        if name not in poisoning:
            continue
        got = poisoning[name]
        yield f"DEV tool poisoning, {name:8}  all          {_rate(got)}"
        for key, value in got["per_split"].items():
            yield f"                            split {key:6} {_rate(value)}"
        for key, value in got["per_origin"].items():
            held = got["per_origin_held"].get(key)
            yield f"                            {key:24} {_rate(value)}" + (f"   held: {_rate(held)}" if held else "")
        yield "                            per attack: " + "  ".join(f"{k} {v:.2f}" for k, v in got["per_attack"].items() if v is not None)
    rug = result["rugpull"]
    yield (f"DEV rug pull: detected {rug['detected']}/{rug['total']}  changed flagged {rug['changed_flagged']}/{rug['updates']}  "
           f"adds poisoning {rug['poisoned_change_detected']}/{rug['total']}  benign updates flagged poisoned "
           f"{rug['benign_update_flagged_poisoned']}/{rug['benign_update_total']}")  # fmt: skip
    cost = result["cost"]
    yield (f"cost: {cost['us_per_tool']['median']} us/tool median, p99 {cost['us_per_tool']['p99']} (n={cost['us_per_tool']['n']}); "
           f"rules only {cost['rules_only_us_per_tool']['median']} / {cost['rules_only_us_per_tool']['p99']} us")  # fmt: skip


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table ``kubeward eval-agents`` prints."""
    return "\n".join(_lines(result))


def _write(result: dict[str, Any], out: Path) -> None:
    """Merge our sections into ``out`` (a dict of sections; other tools' sections are kept)."""
    try:
        existing = json.loads(out.read_text()) if out.exists() else {}
    except json.JSONDecodeError:
        existing = {}
    merged = {**(existing if isinstance(existing, dict) else {}), **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def _tools(args: argparse.Namespace) -> dict[str, Any]:
    dataset, rules = Path(args.dataset), load_tool_rules(Path(args.rules))
    rows = read_rows(dataset)
    model: ToolTextModel | None = None
    if args.fit_model:
        print(f"[eval-agents] fitting the text model on the tune half of {dataset} -> {args.model}", file=sys.stderr, flush=True)
        model = fit_model(rows, rules, dataset, Path(args.model))
    elif not args.no_model:
        model = load_tool_model(Path(args.model))
    print(f"[eval-agents] {len(rows)} rows of {dataset} (DEV data)", file=sys.stderr, flush=True)
    result = evaluate(rows, rules, model)
    print(format_table(result))
    return result


def _cmd(args: argparse.Namespace) -> int:
    from deploy.lab import prompt_eval

    result = _tools(args) if args.only in (None, "tools") else {}
    if args.only in (None, "prompt"):
        result.update(prompt_eval.run(args))
    _write(result, Path(args.out))
    print(f"[eval-agents] wrote {args.out}", file=sys.stderr)
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward eval-agents``."""
    p = sub.add_parser("eval-agents", help="DEV recall/false positives of MCP tool poisoning, rug pulls and prompt injection",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--dataset", default=str(DATASET), help=f"labeled tool definitions, JSONL (default {DATASET})")
    p.add_argument("--rules", default=str(DEFAULT_TOOL_RULES), help="tool rule file or directory (default: the shipped pack)")
    p.add_argument("--model", default=str(DEFAULT_TOOL_MODEL), help="text model artifact (skops) to load, or to write with --fit-model")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--no-model", action="store_true", help="rules only: do not load the text model")
    kind.add_argument("--fit-model", action="store_true", help="refit the text model on the tune half and write it to --model first")
    p.add_argument("--out", default=str(OUT), help=f"JSON file to merge the sections into (default {OUT})")
    p.add_argument("--only", choices=["tools", "prompt"], help="only the tool sections (poisoning, rugpull, cost) or only prompt_injection")
    from deploy.lab.prompt_eval import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd)
