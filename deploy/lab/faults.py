"""Faults on the real broker, every summary and every verdict counted end to end (issue 9, item 5).

One scenario runs a fresh local Kafka broker (``deploy.runtime.broker``), worker
processes (``kubeward worker``), a shim (``kubeward shim``) and a traffic driver
that hands summaries to a ``SummaryPublisher`` with its disk spool on, like a
collector. While traffic flows the scenario injects its fault at fixed times
(a broker restart, a worker ``kill -9``, workers joining and leaving, a shim
restart, the broker stopped with ``SIGSTOP`` for 30 s, the broker away while the
publisher itself restarts). Then traffic stops, the publisher flushes its spool,
and the counts are read back from Kafka:

* **sent**: summaries handed to the publisher, plus the undecodable probes the
  driver writes to the topic once a second (each one message, one summary).
* **processed**: distinct summary ids in messages below the worker group's
  committed offsets (Faust commits an offset only after the agent has handled
  the message and the producer has flushed what it published), probes excluded.
* **dead_lettered**: distinct probes found in ``l7.summaries.dlq.v1``.
* **lost** = sent - processed - dead_lettered, computed on ids, not on totals.

Duplicates are reported apart from loss: ``duplicates_on_topic`` (rows the
publisher sent twice: a send the broker wrote but never acknowledged is
replayed), ``reprocessed`` (rows the workers' ``kubeward_worker_summaries_total``
counters saw beyond the committed rows; the counter of a killed or stopped
worker is its last scrape, so then it is a lower bound, ``reprocessed_exact``
false) and ``dead_letters_repeated`` (probes dead-lettered twice: exact).

Verdicts: every record of ``enforcement.verdicts.v1`` is followed live (before
compaction can fold repeats); **sent** is the distinct entry keys, **processed**
the entries of the shim's cache (``/stats``), **dead_lettered** the records the
shim refused (bad signature, invalid, unsigned tombstone), **lost** the rest.
Each attacker (one row with an inline injection finding, one a second) must be
denied by the shim at the end.

Idempotent effects, as defined here: a verdict's effect is the shim's cache entry
of its entry key (subject, plus the edge for a scoped verdict). A verdict issued
again for the same key after a replay (``repeated``) must carry the same subject,
scope, action and mode (``same_effect``), and so replaces the entry with an equal
one; a record delivered twice (``redelivered``: every record is sent once more at
the end) is taken again, applied or counted stale when a newer one of its key
stands, and leaves the cache as it was (same entries, every attacker still denied).
Rows processed twice fold twice into the per-actor windows (a row's id repeated
by the same reporter is not filtered, ``streams.repeats``): counted, not hidden.

``run_fault(name)`` returns the counts and ``record`` merges them into
``build/faults.json``. Command line: ``python -m deploy.lab.faults [names...]``.
The running parts and the traffic are ``deploy.lab.faultlab``; reading the
counts back is ``deploy.lab.faultcount``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.lab.faultcount import VerdictWatcher, account, redeliver, settle
from deploy.lab.faultlab import RATE_EPS, Driver, Lab, Scenario, Scraper, scrape

__all__ = ["FAULTS", "add_cli", "main", "record", "run", "run_fault"]

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "build" / "faults.json"
#: seconds of traffic after the last step at least, whatever ``stream_s`` says
TAIL_S = 5.0


FAULTS: dict[str, Scenario] = {s.name: s for s in (
    # away 9 s, past the driver's 8 s delivery timeout, so sends fail and go to the spool whatever the machine's speed
    # (a quick restart alone let every buffered send wait out the outage in the producer: nothing to spool)
    Scenario("broker-restart", "broker stopped (SIGTERM) mid-stream and started again on its data dir 9 s later", 24.0,
             ((4.0, "broker_stop"), (13.0, "broker_start"))),
    Scenario("worker-kill", "the only worker killed with SIGKILL mid-stream, then started again", 20.0,
             ((4.0, "worker_kill:w1"), (4.0, "worker_start:w1"))),
    Scenario("workers-2", "a second worker joins mid-stream, then the first leaves (two rebalances)", 22.0,
             ((3.0, "worker_start:w2"), (12.0, "worker_stop:w1")), partitions=3),
    Scenario("workers-3", "a second and a third worker join, then the first leaves (three rebalances)", 28.0,
             ((3.0, "worker_start:w2"), (7.0, "worker_start:w3"), (16.0, "worker_stop:w1")), partitions=3),
    Scenario("shim-restart", "the shim stopped and started again mid-stream (cache rebuilt from the topic)", 16.0,
             ((4.0, "shim_stop"), (7.0, "shim_start"))),
    Scenario("broker-pause", "the broker paused with SIGSTOP for 30 s, then SIGCONT", 40.0,
             ((3.0, "broker_pause"), (33.0, "broker_resume"))),
    Scenario("publisher-spool", "broker stopped; the publisher spools to disk, is itself restarted while the broker "
             "is away, and replays when it is back", 26.0,
             ((3.0, "broker_stop"), (8.0, "publisher_close"), (10.0, "broker_start"), (11.0, "publisher_open"))),
)}


# ------------------------------------------------------------------------ running


def run_fault(name: str, workdir: Path | None = None, settle_s: float = 120.0) -> dict[str, Any]:
    """Run one scenario of ``FAULTS`` on fresh parts and return its counts (see the module docstring).

    Without ``workdir`` a temporary one is used and removed, unless something was lost (then ``workdir`` in
    the counts names it: logs of the broker, workers and shim, and the spool).
    """
    scenario = FAULTS[name]
    own = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"kubeward-fault-{name}-"))
    lab = Lab(scenario, workdir)
    began = time.monotonic()
    scraper: Scraper | None = None
    watcher: VerdictWatcher | None = None
    keep = True
    try:
        lab.start()
        watcher, scraper = VerdictWatcher(lab.bootstrap), Scraper(lab)
        watcher.start()
        scraper.start()
        driver = lab.driver = Driver(lab)
        t0 = time.monotonic()
        driver.start()
        for at, step in scenario.steps:
            time.sleep(max(at - (time.monotonic() - t0), 0.0))
            _step(lab, step, t0)
        # a step that took long (a worker start on a busy machine) pushes the end: traffic goes on after the last one
        time.sleep(max(scenario.stream_s - (time.monotonic() - t0), TAIL_S))
        driver.finish(timeout=settle_s)
        settled = settle(lab, watcher, driver, settle_s)
        scraper.stop_event.set()
        scraper.join()
        for run in lab.runs:
            if not run.ended:
                scrape(run)
        counts = account(lab, driver, watcher)
        counts["verdicts"]["redelivered"] = redeliver(lab, list(watcher.raw), driver.attackers)
        counts.update(fault=name, description=scenario.description, partitions=scenario.partitions, stream_s=scenario.stream_s,
                      rate_eps=RATE_EPS, timeline=lab.timeline, settle_seconds=round(settled, 1),
                      seconds=round(time.monotonic() - began, 1),
                      workers=[{"name": r.name, "processed": int(r.processed), "ended": r.ended or "running"} for r in lab.runs])
        keep = bool(counts["lost"] or counts["verdicts"]["lost"])
        if keep:
            counts["workdir"] = str(workdir)
        return counts
    finally:
        if scraper is not None:
            scraper.stop_event.set()
        if watcher is not None:
            watcher.close()
        lab.stop()
        if own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _step(lab: Lab, step: str, t0: float) -> None:
    verb, _, arg = step.partition(":")
    started = time.monotonic()
    action: Callable[..., None] = getattr(lab, verb)
    action(*([arg] if arg else []))
    lab.timeline.append({"step": step, "at_s": round(started - t0, 1), "took_s": round(time.monotonic() - started, 1)})


def record(counts: dict[str, Any], path: Path = REPORT, command: str | None = None) -> None:
    """Merge one fault's counts into ``build/faults.json`` (one entry per fault, the newest run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault("faults", {})[counts["fault"]] = counts | {"command": command or " ".join(sys.argv), "finished_at": time.time()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run(names: list[str], out: Path = REPORT, command: str | None = None) -> int:
    """Run faults one at a time (all when ``names`` is empty), record each; 1 if any lost a summary or a verdict."""
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown faults {unknown}; valid names: {', '.join(FAULTS)}")
    failed = 0
    for name in names or list(FAULTS):
        counts = run_fault(name)
        record(counts, out, command)
        print(json.dumps({k: counts[k] for k in ("fault", "sent", "processed", "dead_lettered", "lost", "duplicates_on_topic",
                                                 "reprocessed", "verdicts", "attackers", "seconds")}), flush=True)
        failed += bool(counts["lost"] or counts["verdicts"]["lost"])
    return 1 if failed else 0


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("faults", nargs="*", metavar="FAULT", help=f"faults to run, one at a time (default: all): {', '.join(FAULTS)}")
    p.add_argument("--out", type=Path, default=REPORT, help="the report to merge the counts into (default build/faults.json)")


def add_cli(sub: Any) -> None:
    """Register ``kubeward faults``."""
    p = sub.add_parser("faults", help="faults on the real broker, every summary and verdict counted (build/faults.json)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(p)
    p.set_defaults(func=lambda args: run(args.faults, args.out, "kubeward faults " + " ".join(args.faults)))


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.lab.faults [FAULT...] [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.lab.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(parser)
    args = parser.parse_args(argv)
    return run(args.faults, args.out, "python -m deploy.lab.faults " + " ".join(args.faults))


if __name__ == "__main__":
    sys.exit(main())
