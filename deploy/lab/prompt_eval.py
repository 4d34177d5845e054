"""The ``prompt_injection`` section of ``kubeward eval-agents``: DEV figures of ``enforcement.promptscan``.

Reads ``../shared/datasets/prompt-injection/`` (``--prompt-data``) and builds
one list of documents, each with the text a detector may see and, apart, its
label, source and split:

- ``direct``: CyberSecEval direct injections (``pi_dev.jsonl``, label 1);
- ``indirect``: CyberSecEval indirect injections (label 1, sub-source
  ``indirect_cse``) and BIPIA payloads embedded in llmail emails (label 1,
  ``indirect_bipia``; see ``embed`` for the construction rule);
- ``hard_negative``: NotInject prompts full of trigger words (label 0);
- ``benign_email``: the llmail emails as they are (label 0).

Splits: a document is in ``tune`` when the SHA-256 of its id is even, else
``held`` (``split_of``); an embedded payload takes its split from the payload
id and its carrier from the emails of the same split, so no email text crosses
splits. ``--fit-prompt-model`` fits ``enforcement.promptmodel`` on the tune
documents only, picks its threshold there from out-of-fold scores and writes
``enforcement/artifacts/prompt-injection.skops``; fitting is deterministic.
Every figure is DEV: the rules were written after reading all of these rows;
``per_split.held`` is the honest figure for the model. ``cost`` is the inline
scan (rules and model) per KB over every document (a document under 1 KB
counts as 1 KB, the shim's smallest unit of work), and over ``LONG_N``
texts at the inline limit (llmail emails joined up to 8 KB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from deploy.lab.agents_eval import _git_commit, _percentiles, _Tally
from enforcement.promptmodel import DEFAULT_PROMPT_MODEL, PromptTextModel, fit_prompt_model, load_prompt_model, save_prompt_model
from enforcement.promptscan import INLINE_CHARS, THRESHOLD, scan_stream, scan_text, text_windows
from enforcement.promptrules import DEFAULT_PROMPT_RULES, load_prompt_rules
from enforcement.toolrules import ToolRuleSet

__all__ = ["DATA", "GROUPS", "LONG_N", "add_arguments", "documents", "embed", "evaluate_prompt", "fit_prompt", "format_prompt", "run",
           "split_of"]

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "prompt-injection"
#: report group of each source
GROUPS = {"direct": "direct", "indirect_cse": "indirect", "indirect_bipia": "indirect", "hard_negative": "hard_negative",
          "benign_email": "benign_email"}  # fmt: skip
POSITIONS = ("start", "middle", "end")
LONG_N = 40
_STOP = (". ", "! ", "? ")


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16)


def split_of(doc_id: str) -> str:
    """``tune`` when the SHA-256 of ``doc_id`` is even, else ``held``."""
    return "tune" if _hash(doc_id) % 2 == 0 else "held"


def _middle(email: str) -> int:
    """The sentence boundary nearest the middle of ``email`` (after the stop and its space), or its middle."""
    cuts = [i + 2 for stop in _STOP for i in range(len(email)) if email.startswith(stop, i)]
    return min(cuts, key=lambda c: abs(c - len(email) // 2)) if cuts else len(email) // 2


def embed(payload: str, email: str, position: str) -> str:
    """``payload`` placed in ``email`` as BIPIA does: at its ``start``, ``middle`` (a sentence boundary) or ``end``."""
    if position == "start":
        return f"{payload} {email}"
    if position == "end":
        return f"{email} {payload}"
    cut = _middle(email)
    return f"{email[:cut].rstrip()} {payload} {email[cut:].lstrip()}"


def _bipia(payloads: Sequence[dict[str, Any]], emails: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each payload in one email of its own split: the email and position follow from the payload id's hash."""
    pools = {s: sorted((e for e in emails if split_of(e["id"]) == s), key=lambda e: e["id"]) for s in ("tune", "held")}
    for row in payloads:
        split, h = split_of(row["id"]), _hash(row["id"])
        carrier = pools[split][h % len(pools[split])]
        position = POSITIONS[(h // len(pools[split])) % 3]
        yield {"id": f"{row['id']}@{carrier['id']}:{position}", "text": embed(row["payload"], carrier["text"], position), "label": 1,
               "source": "indirect_bipia", "split": split, "position": position}  # fmt: skip


def documents(data: Path = DATA) -> list[dict[str, Any]]:
    """Every document of the dev set (see the module docstring); ``text`` is all a detector reads."""
    docs: list[dict[str, Any]] = []
    for row in _read(data / "pi_dev.jsonl"):
        source = ("direct" if row.get("injection_type") == "direct" else "indirect_cse") if row["label"] else "hard_negative"
        docs.append({"id": row["id"], "text": row["text"], "label": int(row["label"]), "source": source, "split": split_of(row["id"])})
    emails = _read(data / "llmail_benign_emails.jsonl")
    docs += [{"id": e["id"], "text": e["text"], "label": 0, "source": "benign_email", "split": split_of(e["id"])} for e in emails]
    return docs + list(_bipia(_read(data / "bipia_attack_payloads.jsonl"), emails))


def _keys(doc: dict[str, Any]) -> list[str]:
    group, split = GROUPS[doc["source"]], doc["split"]
    keys = ["all", f"source:{group}", f"split:{split}", f"{split}:{group}"]
    return keys + [f"sub:{doc['source']}"] if group != doc["source"] else keys


def _rates(tally: _Tally, key: str) -> dict[str, Any]:
    r = tally.rates(key)
    return {"tpr": r["recall"], "fpr": r["fpr"], "tp": r["tp"], "fn": r["fn"], "fp": r["fp"], "tn": r["tn"]}


def _summary(tally: _Tally) -> dict[str, Any]:
    groups = sorted({k.split(":", 1)[1] for k in tally.c if k.startswith("source:")})
    per_split = {s: {"all": _rates(tally, f"split:{s}"), **{g: _rates(tally, f"{s}:{g}") for g in groups if tally.c.get(f"{s}:{g}")}}
                 for s in ("tune", "held") if tally.c.get(f"split:{s}")}  # fmt: skip
    return {**_rates(tally, "all"), "per_source": {g: _rates(tally, f"source:{g}") for g in groups},
            "per_subsource": {k[4:]: _rates(tally, k) for k in sorted(tally.c) if k.startswith("sub:")}, "per_split": per_split}  # fmt: skip


def _long_texts(docs: Sequence[dict[str, Any]]) -> list[str]:
    """``LONG_N`` texts of about ``INLINE_CHARS`` characters: benign emails joined in a fixed order."""
    emails = sorted((d["text"] for d in docs if d["source"] == "benign_email"), key=_hash)
    out: list[str] = []
    for i in range(LONG_N if emails else 0):
        parts, size, j = [], 0, i
        while size < INLINE_CHARS:
            parts.append(emails[j % len(emails)])
            size, j = size + len(parts[-1]) + 2, j + 7
        out.append("\n\n".join(parts)[:INLINE_CHARS])
    return out


def _timed(text: str, rules: ToolRuleSet, model: PromptTextModel | None) -> tuple[Any, float]:
    start = time.perf_counter()
    scan = scan_text(text, model=model, rules=rules)
    return scan, (time.perf_counter() - start) * 1e6


def _cost(docs: Sequence[dict[str, Any]], us: Sequence[float], rules: ToolRuleSet, model: PromptTextModel | None) -> dict[str, Any]:
    per_kb = [t / max(1.0, len(d["text"][:INLINE_CHARS].encode("utf-8")) / 1024) for d, t in zip(docs, us, strict=True)]
    long = [(_timed(t, rules, model)[1], len(t.encode("utf-8")) / 1024) for t in _long_texts(docs)]
    start = time.perf_counter()
    stream_text = "\n\n".join(d["text"] for d in docs if d["source"] == "benign_email")
    scan_stream(stream_text, model=model, rules=rules)
    stream_us = (time.perf_counter() - start) * 1e6
    return {"us_per_kb": _percentiles(per_kb), "us_per_doc": _percentiles(us), "long_us_per_kb": _percentiles([t / kb for t, kb in long]),
            "stream_us_per_kb": round(stream_us / max(1.0, len(stream_text.encode("utf-8")) / 1024), 1),
            "stream_kb": round(len(stream_text.encode("utf-8")) / 1024, 1), "inline_chars": INLINE_CHARS, "with_model": model is not None}  # fmt: skip


def evaluate_prompt(docs: Sequence[dict[str, Any]], rules: ToolRuleSet, model: PromptTextModel | None) -> dict[str, Any]:
    """The ``prompt_injection`` section for ``docs`` (see the module docstring)."""
    ruled, combined, us = _Tally(), _Tally(), []
    misses: list[str] = []
    false: list[str] = []
    for doc in docs:
        scan, took = _timed(doc["text"], rules, model)
        us.append(took)
        ruled.add(_keys(doc), doc["label"], scan.points >= THRESHOLD)
        combined.add(_keys(doc), doc["label"], scan.injected)
        if scan.injected != bool(doc["label"]):
            (misses if doc["label"] else false).append(doc["id"])
    out: dict[str, Any] = {"dev": True, "rules_threshold": THRESHOLD, "rules": _summary(ruled), "docs": len(docs)}
    out.update(_summary(combined) if model is not None else out["rules"])
    if model is not None:
        out["model"] = {"threshold": model.threshold, "beta": model.beta, "bonus": model.bonus, "fit": dict(model.meta)}
    out.update({"missed_ids": misses[:400], "false_positive_ids": false[:400], "cost": _cost(docs, us, rules, model)})
    return out


def fit_prompt(docs: Sequence[dict[str, Any]], rules: ToolRuleSet, data: Path, out: Path) -> PromptTextModel:
    """Fit the prompt model on the tune documents of ``docs`` and write it to ``out``."""
    tune = [d for d in docs if d["split"] == "tune"]
    scans = [scan_text(d["text"], rules=rules) for d in tune]
    texts = [text_windows(d["text"]) for d in tune]
    model, _ = fit_prompt_model(texts, [d["label"] for d in tune], [s.points for s in scans])
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data.glob("*.jsonl"))}
    extra = {"dataset": data.name, "dataset_sha256": digests, "split": "tune: sha256(id) even (prompt_eval.split_of)", "git_commit": _git_commit()}
    return save_prompt_model(model, out, extra)


def _pct(v: Any) -> str:
    return "   -  " if v is None else f"{100 * v:5.1f}%"


def _rate(r: dict[str, Any]) -> str:
    return f"tpr {_pct(r['tpr'])} ({r['tp']}/{r['tp'] + r['fn']})  fpr {_pct(r['fpr'])} ({r['fp']}/{r['fp'] + r['tn']})"


def format_prompt(section: dict[str, Any]) -> str:
    """The lines ``kubeward eval-agents`` prints for the prompt-injection section."""
    lines = []
    for name, got in (("rules", section["rules"]), ("combined", section if "model" in section else None)):
        if got is None:
            continue
        lines.append(f"DEV prompt injection, {name:8} all            {_rate(got)}")
        lines += [f"                               {k:14} {_rate(v)}" for k, v in {**got["per_source"], **got["per_subsource"]}.items()]
        for split, per in got["per_split"].items():
            lines += [f"                    {split:5} {k:16} {_rate(v)}" for k, v in per.items()]
    cost = section["cost"]
    lines.append(f"cost: {cost['us_per_kb']['median']} us/KB median, p99 {cost['us_per_kb']['p99']} (n={cost['us_per_kb']['n']}); "
                 f"8 KB inputs {cost['long_us_per_kb']['median']} / {cost['long_us_per_kb']['p99']} us/KB (n={cost['long_us_per_kb']['n']}); "
                 f"stream {cost['stream_us_per_kb']} us/KB over {cost['stream_kb']} KB")  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The ``prompt_injection`` section for ``kubeward eval-agents`` (empty when the data is absent and not asked for)."""
    data, rules = Path(args.prompt_data), load_prompt_rules(Path(args.prompt_rules))
    if not (data / "pi_dev.jsonl").exists():
        if args.only == "prompt" or args.fit_prompt_model:
            raise SystemExit(f"[eval-agents] no prompt-injection dev set at {data}")
        print(f"[eval-agents] no prompt-injection dev set at {data}; section prompt_injection skipped", file=sys.stderr)
        return {}
    docs = documents(data)
    model: PromptTextModel | None = None
    if args.fit_prompt_model:
        print(f"[eval-agents] fitting the prompt model on the tune split of {data} -> {args.prompt_model}", file=sys.stderr, flush=True)
        model = fit_prompt(docs, rules, data, Path(args.prompt_model))
    elif not args.no_model:
        model = load_prompt_model(Path(args.prompt_model))
    print(f"[eval-agents] {len(docs)} prompt-injection documents of {data} (DEV data)", file=sys.stderr, flush=True)
    section = evaluate_prompt(docs, rules, model)
    print(format_prompt(section))
    return {"prompt_injection": section}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The prompt-injection options of ``kubeward eval-agents`` (``--no-model`` applies to both models)."""
    p.add_argument("--prompt-data", default=str(DATA), help=f"prompt-injection dev set directory (default {DATA})")
    p.add_argument("--prompt-rules", default=str(DEFAULT_PROMPT_RULES), help="prompt rule file or directory (default: the shipped pack)")
    p.add_argument("--prompt-model", default=str(DEFAULT_PROMPT_MODEL), help="prompt model artifact (skops) to load, or to write with --fit-prompt-model")
    p.add_argument("--fit-prompt-model", action="store_true", help="refit the prompt model on the tune split and write it to --prompt-model first")
