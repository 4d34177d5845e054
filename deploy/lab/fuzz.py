"""Fuzzing of every decoder and of the shim's HTTP handling: a registry of named targets and the runner.

A **target** (``deploy.lab.fuzz_ingest``: the worker's and the control topics' decoders;
``deploy.lab.fuzz_collectors``: each collector's input, MCP, LLM and HTTP bodies; ``deploy.lab.fuzz_shim``: the shim;
``deploy.lab.fuzz_parsers``: what the shim reads) is a function taking one input as ``bytes``, the seed corpus it
starts from, and the exceptions its decoder documents for bad input (``expected``: ``EnvelopeError``,
``ValueError``...). Anything else it raises is a **crash**, and so is a broken property the target checks
(``Invariant``: a bad summaries-topic record without a dead-letter reason, rows neither processed nor dead-lettered, a
shim answer that is not HTTP, a collector's rows the worker cannot decode). Crashes are grouped by exception type and
the innermost frame of our own code; the first input of each is kept as a reproducer.

Inputs come from ``deploy.lab.fuzz_inputs.Mutator`` (seeded; byte and JSON-tree mutations, no coverage feedback):
input ``i`` of a target depends only on the seed, the target and ``i``, so any crash replays with
``--replay target:i``, and ``--minimize`` shortens a reproducer. Checks with a large fixed cost (encoding an Arrow
envelope: ~1.5 ms whatever its size) run on batches of inputs (``Batch``) and blame the input that broke them.
The same targets run under hypothesis in ``tests/fuzz/test_fuzz.py``.

Run (one CPU-heavy job; each target in a child process of its own, so a segfault in a C extension is a counted
crash, not the end of the campaign)::

    python -m deploy.lab.fuzz --total 1000000 --seed 1          # -> build/fuzz.json, reproducers in build/fuzz-crashes/
    python -m deploy.lab.fuzz --targets worker_batch --total 20000
    python -m deploy.lab.fuzz --replay shim_http_envoy:1234 --seed 1
    python -m deploy.lab.fuzz --replay envelope_decode:build/fuzz-crashes/envelope_decode-6.bin --minimize /tmp/short.bin
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from deploy.lab.fuzz_inputs import inputs

__all__ = ["Batch", "Crash", "Culprit", "Hang", "Invariant", "Target", "TargetResult", "campaign", "flush_batches", "main", "minimize",
           "outcome", "registry", "run_one", "run_target"]

#: an input taking longer than this is a hang (a crash); a regular expression gone quadratic shows here
HANG_S = 10.0
#: inputs not counted for ``slowest_ms``: the first ones pay for lazy set-up (models, the shim's inspectors)
_WARM_UP = 10
_ROOT = Path(__file__).resolve().parents[2]


class Invariant(AssertionError):
    """A property the target checks did not hold (counted as a crash)."""


class Hang(BaseException):
    """One input ran past ``HANG_S`` (a BaseException, so no ``except Exception`` in the code under test swallows it)."""


@dataclass(frozen=True)
class Target:
    """One thing fuzzed: ``run(data)`` feeds it one input; ``expected`` are its documented bad-input errors.

    ``seeds()`` builds the corpus (valid and near-valid inputs); ``tokens`` are dictionary entries the mutator
    inserts; ``weight`` is the target's share of a campaign (slow targets get fewer inputs); ``what`` names the
    code under test for the report.
    """

    name: str
    run: Callable[[bytes], object]
    seeds: Callable[[], list[bytes]]
    expected: tuple[type[BaseException], ...] = ()
    tokens: tuple[bytes, ...] = ()
    weight: float = 1.0
    what: str = ""


@dataclass
class Crash:
    """A distinct crash: exception type and where it was raised, first input index, how often, the reproducer file."""

    kind: str
    where: str
    message: str
    index: int
    count: int = 1
    reproducer: str | None = None
    input_b64: str = ""
    trace: str = ""


@dataclass
class TargetResult:
    """What running one target did."""

    target: str
    inputs: int = 0
    rejected: int = 0  # inputs the decoder refused with one of its documented errors
    crashes: int = 0
    seconds: float = 0.0
    slowest_ms: float = 0.0  # after the first ``_WARM_UP`` inputs
    slowest_index: int = -1
    distinct: list[Crash] = field(default_factory=list)
    what: str = ""
    exit: str = "ok"


# ---------------------------------------------------------------------- checks batched across inputs


#: the input being run (``run_target`` sets it): a ``Batch`` remembers where each item came from
CURRENT: tuple[int, bytes] = (-1, b"")


class Culprit(Exception):
    """A batched check failed for items of an earlier input: that input is the crash's, not the current one."""

    def __init__(self, index: int, data: bytes, error: BaseException):
        super().__init__(f"input {index}: {type(error).__name__}: {error}")
        self.index, self.data, self.error = index, data, error


class Batch:
    """Items several inputs produced, checked together every ``every`` inputs' worth of items.

    For checks with a large fixed cost (one Arrow envelope costs ~1.5 ms whatever its rows). When the check
    fails, each item is checked alone and the first failing one raises ``Culprit`` with the input it came from.
    ``run_target`` flushes every batch at its end.
    """

    def __init__(self, check: Callable[[list[Any]], object], every: int = 64):
        self.check, self.every = check, every
        self.items: list[tuple[Any, int, bytes]] = []
        _BATCHES.append(self)

    def add(self, items: Sequence[Any]) -> None:
        """Queue the current input's items; check the queue once it is long enough."""
        index, data = CURRENT
        self.items.extend((item, index, data) for item in items)
        if len(self.items) >= self.every:
            self.flush()

    def flush(self) -> None:
        """Check what is queued."""
        queued, self.items = self.items, []
        if not queued:
            return
        try:
            self.check([item for item, _, _ in queued])
        except Exception as exc:  # noqa: BLE001 - found again item by item below
            for item, index, data in queued:
                try:
                    self.check([item])
                except Exception as alone:  # noqa: BLE001 - reported with its input
                    raise Culprit(index, data, alone) from alone
            raise Culprit(queued[-1][1], queued[-1][2], exc) from exc


_BATCHES: list[Batch] = []


def flush_batches() -> None:
    """Check every queued item now."""
    for batch in _BATCHES:
        batch.flush()


# ---------------------------------------------------------------------- running


def _where(tb: TracebackType | None) -> str:
    """The innermost frame in our own code (not the standard library or a dependency): ``file:line function``."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if f.filename.startswith(str(_ROOT)) and "/.venv/" not in f.filename] or frames
    last = ours[-1] if ours else None
    if last is None:
        return "?"
    return f"{os.path.relpath(last.filename, _ROOT)}:{last.lineno} {last.name}"


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang("the input ran past the time limit")


def run_target(target: Target, count: int, seed: int = 1, *, start: int = 0, crash_dir: Path | None = None,
               progress: Callable[[TargetResult], None] | None = None, progress_s: float = 5.0,
               mark: Path | None = None, hang_s: float = HANG_S) -> TargetResult:
    """Run ``count`` inputs (from index ``start``) through ``target``; crashes are grouped by type and place.

    ``crash_dir`` receives one reproducer file per distinct crash; ``mark`` is rewritten with the index being run
    every thousand inputs (a parent process reads it when this one dies of a signal); an input running past
    ``hang_s`` is a ``Hang``.
    """
    global CURRENT
    result = TargetResult(target.name, what=target.what)
    seen: dict[tuple[str, str], Crash] = {}
    expected = target.expected
    clock = time.perf_counter
    began = last_report = clock()
    use_alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()  # signals: main thread only
    previous = signal.signal(signal.SIGALRM, _on_alarm) if use_alarm else None
    try:
        for index, data in inputs(target, seed, start):
            if result.inputs >= count:
                break
            if mark is not None and index % 1000 == 0:
                mark.write_text(str(index))
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, hang_s)
            started = clock()
            CURRENT = (index, data)
            try:
                target.run(data)
            except expected:
                result.rejected += 1
            except Culprit as exc:
                _record(result, seen, exc.error, exc.index, exc.data, crash_dir)
            except (Exception, Hang) as exc:  # noqa: BLE001 - every other exception is a finding
                _record(result, seen, exc, index, data, crash_dir)
            finally:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            took = clock() - started
            if took * 1e3 > result.slowest_ms and result.inputs >= _WARM_UP:
                result.slowest_ms, result.slowest_index = took * 1e3, index
            result.inputs += 1
            now = clock()
            if progress is not None and now - last_report >= progress_s:
                result.seconds = now - began
                progress(result)
                last_report = now
        try:
            flush_batches()
        except Culprit as exc:
            _record(result, seen, exc.error, exc.index, exc.data, crash_dir)
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    result.seconds = clock() - began
    result.distinct = list(seen.values())
    return result


def _record(result: TargetResult, seen: dict[tuple[str, str], Crash], exc: BaseException, index: int, data: bytes,
            crash_dir: Path | None) -> None:
    result.crashes += 1
    kind = type(exc).__name__
    where = _where(exc.__traceback__)
    found = seen.get((kind, where))
    if found is not None:
        found.count += 1
        return
    crash = Crash(kind, where, str(exc)[:300], index, input_b64=base64.b64encode(data[:512]).decode(),
                  trace="".join(traceback.format_exception(exc, limit=-8))[-3000:])
    if crash_dir is not None:
        crash_dir.mkdir(parents=True, exist_ok=True)
        path = crash_dir / f"{result.target}-{index}.bin"
        path.write_bytes(data)
        crash.reproducer = os.path.relpath(path, _ROOT) if path.is_relative_to(_ROOT) else str(path)
    seen[(kind, where)] = crash


# ---------------------------------------------------------------------- campaign


def registry() -> dict[str, Target]:
    """Every target by name: the worker's and control topics' decoders, the collectors', then the shim's."""
    from deploy.lab import fuzz_collectors, fuzz_ingest, fuzz_parsers, fuzz_shim

    return {**fuzz_ingest.TARGETS, **fuzz_collectors.TARGETS, **fuzz_shim.TARGETS, **fuzz_parsers.TARGETS}


def allocate(targets: Sequence[Target], total: int) -> dict[str, int]:
    """Inputs per target: ``total`` shared by weight (every target at least one)."""
    weights = sum(t.weight for t in targets)
    counts = {t.name: max(1, int(total * t.weight / weights)) for t in targets}
    short = total - sum(counts.values())
    for t in sorted(targets, key=lambda t: -t.weight)[: max(0, short)]:
        counts[t.name] += 1
    return counts


def _print_progress(result: TargetResult, count: int | None = None) -> None:
    rate = result.inputs / result.seconds if result.seconds else 0.0
    total = f"/{count}" if count else ""
    print(f"  {result.target}: {result.inputs}{total} inputs, {result.rejected} rejected, {result.crashes} crashes, "
          f"{result.seconds:.1f} s ({rate:,.0f}/s)", file=sys.stderr, flush=True)


def _child(name: str, count: int, seed: int, crash_dir: Path, mark: Path) -> TargetResult:
    """Run one target here; the result goes to stdout as one JSON line (the parent reads it)."""
    logging.disable(logging.CRITICAL)  # decoders log every refused input; a million log lines are not the point
    target = registry()[name]

    def progress(result: TargetResult) -> None:
        _print_progress(result, count)

    result = run_target(target, count, seed, crash_dir=crash_dir, mark=mark, progress=progress)
    print(json.dumps(asdict(result)), flush=True)
    return result


def _isolated(name: str, count: int, seed: int, crash_dir: Path, mark_dir: Path, timeout: float | None) -> TargetResult:
    mark_dir.mkdir(parents=True, exist_ok=True)
    mark = mark_dir / f"{name}.index"
    mark.unlink(missing_ok=True)
    command = [sys.executable, "-X", "faulthandler", "-m", "deploy.lab.fuzz", "--child", name, "--count", str(count),
               "--seed", str(seed), "--crash-dir", str(crash_dir), "--mark", str(mark)]
    try:
        done = subprocess.run(command, cwd=_ROOT, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return TargetResult(name, exit=f"timeout after {timeout} s (last index {_read_mark(mark)})")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        data = json.loads(lines[-1])
        data["distinct"] = [Crash(**c) for c in data["distinct"]]
        return TargetResult(**data)
    died = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
    index = _read_mark(mark)
    crash = Crash(f"process died ({died})", "child process", f"inputs {index} to {index + 999} (replay with --replay {name}:<i>)", index)
    return TargetResult(name, crashes=1, distinct=[crash], exit=died)


def _read_mark(mark: Path) -> int:
    try:
        return int(mark.read_text())
    except (OSError, ValueError):
        return -1


def campaign(names: Sequence[str], total: int, seed: int, out: Path, crash_dir: Path, isolate: bool,
             per_target: int | None = None) -> dict[str, Any]:
    """Run targets one after another (each in a child process with ``isolate``); write and return the report."""
    known = registry()
    targets = [known[n] for n in names]
    counts = {t.name: per_target for t in targets} if per_target else allocate(targets, total)
    began = time.perf_counter()
    results: list[TargetResult] = []
    for target in targets:
        count = counts[target.name]
        print(f"{target.name}: {count} inputs ({target.what})", file=sys.stderr, flush=True)
        if isolate:
            result = _isolated(target.name, count, seed, crash_dir, out.parent / "fuzz-progress", None)
        else:
            logging.disable(logging.CRITICAL)
            result = run_target(target, count, seed, crash_dir=crash_dir, progress=functools.partial(_print_progress, count=count))
        _print_progress(result, count)
        for crash in result.distinct:
            print(f"    CRASH {crash.kind} at {crash.where} (x{crash.count}, first input {crash.index}): {crash.message[:160]}",
                  file=sys.stderr, flush=True)
        results.append(result)
    report = {
        "command": " ".join(["python -m deploy.lab.fuzz", *sys.argv[1:]]),
        "seed": seed,
        "inputs": sum(r.inputs for r in results),
        "crashes": sum(r.crashes for r in results),
        "distinct_crashes": sum(len(r.distinct) for r in results),
        "seconds": round(time.perf_counter() - began, 1),
        "targets": {r.target: {"what": r.what, "inputs": r.inputs, "rejected": r.rejected, "crashes": r.crashes,
                               "seconds": round(r.seconds, 2), "slowest_ms": round(r.slowest_ms, 2),
                               "slowest_index": r.slowest_index, "exit": r.exit,
                               "distinct": [asdict(c) for c in r.distinct]} for r in results},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def replay(name: str, index: int, seed: int) -> int:
    """Run input ``index`` of a target once, in this process, with the full traceback; 1 if it crashes."""
    target = registry()[name]
    data = next(d for i, d in inputs(target, seed, index) if i == index)
    print(f"{name}:{index} ({len(data)} bytes): {data[:300]!r}", file=sys.stderr)
    return replay_bytes(target, data)


def run_one(target: Target, data: bytes) -> None:
    """Run one input and its batched checks (what a test or a replay wants: the input's own outcome)."""
    global CURRENT
    CURRENT = (0, data)
    target.run(data)
    try:
        flush_batches()
    except Culprit as exc:
        raise exc.error from exc


def replay_bytes(target: Target, data: bytes) -> int:
    """Run one input (a reproducer file's bytes) through a target; 1 if it crashes."""
    try:
        run_one(target, data)
    except target.expected as exc:
        print(f"rejected as documented: {type(exc).__name__}: {exc}", file=sys.stderr)
    except Exception:  # noqa: BLE001 - shown, not handled
        traceback.print_exc()
        return 1
    else:
        print("accepted", file=sys.stderr)
    return 0


def outcome(target: Target, data: bytes) -> tuple[str, str] | None:
    """``(exception type, place)`` of the crash an input causes, or None (accepted, or refused as documented)."""
    try:
        run_one(target, data)
    except target.expected:
        return None
    except Exception as exc:  # noqa: BLE001 - the crash is the answer
        return type(exc).__name__, _where(exc.__traceback__)
    return None


def minimize(target: Target, data: bytes, budget: int = 3000) -> bytes:
    """A shorter input crashing the same way (type and place): ranges cut out, halving their size, while it still does."""
    wanted = outcome(target, data)
    if wanted is None:
        return data
    size, tries = max(1, len(data) // 2), 0
    while tries < budget:
        start, cut = 0, False
        while start < len(data) and tries < budget:
            candidate = data[:start] + data[start + size:]
            tries += 1
            if outcome(target, candidate) == wanted:
                data, cut = candidate, True
            else:
                start += size
        if not cut:
            if size == 1:
                break
            size //= 2
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m deploy.lab.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--total", type=int, default=1_000_000, help="inputs shared by every selected target (by weight)")
    parser.add_argument("--per-target", type=int, default=None, help="inputs per target instead of --total")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default="", help="comma-separated target names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--out", type=Path, default=_ROOT / "build" / "fuzz.json")
    parser.add_argument("--crash-dir", type=Path, default=_ROOT / "build" / "fuzz-crashes")
    parser.add_argument("--no-isolate", action="store_true", help="run every target in this process")
    parser.add_argument("--replay", default=None, help="target:index, or target:path of a reproducer file")
    parser.add_argument("--minimize", type=Path, default=None, help="with --replay: write a shorter input crashing the same way here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mark", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    known = registry()
    if args.list:
        for t in known.values():
            print(f"{t.name:24} weight {t.weight:<5} {t.what}")
        return 0
    if args.child:
        _child(args.child, args.count, args.seed, args.crash_dir, args.mark)
        return 0
    if args.replay:
        logging.disable(logging.CRITICAL)
        name, _, where = args.replay.partition(":")
        if args.minimize is not None:
            target = known[name]
            data = next(d for i, d in inputs(target, args.seed, int(where)) if i == int(where)) if where.isdigit() else Path(where).read_bytes()
            shorter = minimize(target, data)
            args.minimize.write_bytes(shorter)
            print(f"{len(data)} -> {len(shorter)} bytes: {shorter[:300]!r}", file=sys.stderr)
            return replay_bytes(target, shorter)
        if where.isdigit():
            return replay(name, int(where), args.seed)
        return replay_bytes(known[name], Path(where).read_bytes())
    names = [n for n in args.targets.split(",") if n] or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown targets {unknown}; valid: {', '.join(known)}")
    report = campaign(names, args.total, args.seed, args.out, args.crash_dir, not args.no_isolate, args.per_target)
    print(f"{report['inputs']} inputs, {report['crashes']} crashes ({report['distinct_crashes']} distinct), "
          f"{report['seconds']} s -> {args.out}", file=sys.stderr)
    return 1 if report["crashes"] else 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: the targets import deploy.lab.fuzz, and its state
    # (CURRENT, the batches, Culprit) must be the one the runner uses.
    from deploy.lab import fuzz

    sys.exit(fuzz.main())
