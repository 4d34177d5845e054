"""The ``kubeward`` command line: one entry point for every component.

    kubeward kafka up|down|status   local single-node Kafka (KRaft) from Maven Central jars
    kubeward worker                 the Faust stream worker (detections, verdicts, findings)
    kubeward shim                   the inline enforcement shim (Envoy ext_authz HTTP)
    kubeward collect                the per-node collector (access-log files, OTLP, Envoy ALS, ext_proc, HAR/JSONL replay)
    kubeward eval-templates DIR     exact template recovery of the learned templater on real OpenAPI specs
    kubeward eval-sensitive         DEV precision/recall of sensitive-data detection (--bench: us per 2 KB body)
    kubeward eval-waf               DEV recall/false positives of inline inspection per category, offline
    kubeward eval-redaction         DEV precision/recall and cost of inline redaction per type
    kubeward eval-agents            DEV recall/false positives of MCP tool poisoning, rug pulls and prompt injection
    kubeward rules lint [FILE...]   check inline signature, detection, MCP tool and prompt rule files (every error as file:line)
    kubeward policy set|show|apply|approve-tool|lift|suggest   observe or enforce per namespace/service; signed lifts; least-privilege policy from traffic
    kubeward findings tail          the OCSF findings, filtered (severity, class/OWASP, namespace, actor), as a table or JSON
    kubeward faults [FAULT...]      zero loss across faults (broker restart and pause, worker kill -9, rebalance, spool) on a real broker
    kubeward simulate               simulated cluster traffic to Kafka, Parquet or JSONL
    kubeward demo                   everything together, with live progress and a report
    kubeward bench                  the benchmarks, written to build/bench.json
    kubeward bench waf              DEV: Kubeward through Envoy beside ModSecurity + CRS PL1/PL2 (build/waf-compare.json)
    kubeward bench soak             the whole loop for 30 min at 10,000 events/s, memory sampled (build/soak.json, soak.png)
    kubeward evaluate               detection results per scenario variant through the replay path (held-out seeds)
    kubeward train ARCHIVE... --out F   fit a per-cohort anomaly model from Parquet archives (skops artifact)
    kubeward whatif                 what a candidate rule, model or policy (e.g. --enforce NS) would have refused in recorded traffic
    kubeward blueprint              the API and agent inventory as an HTML page, a PNG and OpenAPI 3.1 documents

Settings also come from the environment (``KUBEWARD_WORKER_*``, ``KUBEWARD_SHIM_*``);
flags win over the environment.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ingest.errors import SettingsError

__all__ = ["main"]


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _refuse_dev_key(component: str, variable: str, key: Any, dev: bool, accepted: Any = None) -> None:
    """Stop a worker or shim that would sign or accept verdicts with the development key (as its key or among the
    keys it accepts), unless ``--dev`` says so."""
    from ingest.signing import verdict_keys

    if not verdict_keys(key, "k", accepted).uses_dev_key:
        return
    if not dev:
        raise SettingsError(f"verdict_key (or an accepted key) is the development key: anyone who read the source can sign verdicts for this {component}. "
                            f"Set {variable} (the same secret on workers and shims), or pass --dev on a test machine")
    logging.getLogger("kubeward").warning("running with the development verdict key (--dev): verdicts anyone can sign")


def _cmd_worker(args: argparse.Namespace) -> int:
    from faust import Worker

    from deploy.logs import setup_logging
    from ingest.config import build_settings
    from streams.app import create_app
    from streams.settings import WorkerSettings

    settings = build_settings(WorkerSettings, **_overrides(args, ("bootstrap", "web_port", "window_s", "app_id", "learn_windows")))
    _refuse_dev_key("worker", "KUBEWARD_WORKER_VERDICT_KEY", settings.verdict_key, args.dev)
    app = create_app(settings)
    worker = Worker(app, loglevel=args.loglevel, quiet=True)
    setup_logging(args.loglevel)
    worker.execute_from_commandline()
    return 0


def _cmd_shim(args: argparse.Namespace) -> int:
    from deploy.logs import setup_logging
    from enforcement.settings import ShimSettings
    from enforcement.server import run
    from ingest.config import build_settings

    setup_logging(args.loglevel)
    over = _overrides(args, ("bootstrap", "port", "admin_port", "report", "failure_mode", "adapter", "grpc_port"))
    if args.trusted_hops is not None:
        over["identity"] = {"trusted_hops": args.trusted_hops}
    if args.no_kafka:
        over["bootstrap"] = None
    settings = build_settings(ShimSettings, **over)
    if settings.bootstrap is not None:  # without Kafka no verdict is read: no key to refuse
        _refuse_dev_key("shim", "KUBEWARD_SHIM_VERDICT_KEY", settings.verdict_key, args.dev, settings.verdict_keys_accepted)
    run(settings)
    return 0


def _add_worker(sub: Any) -> None:
    p = sub.add_parser("worker", help="run the Faust stream worker", description="Consume l7.summaries.v1, keep per-actor baselines, publish verdicts and OCSF findings. /metrics on --web-port.")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    p.add_argument("--web-port", type=int, help="port of /metrics (default 6066)")
    p.add_argument("--window-s", type=int, help="tumbling window per actor in seconds (default 60)")
    p.add_argument("--learn-windows", type=int, help="windows before destinations count as learned (default 3)")
    p.add_argument("--app-id", help="consumer group / changelog prefix (default kubeward-worker)")
    p.add_argument("--dev", action="store_true", help="allow the development verdict key (refused otherwise): test machines only")
    p.add_argument("--loglevel", default="info", help="log level (default info)")
    p.set_defaults(func=_cmd_worker)


def _add_shim(sub: Any) -> None:
    p = sub.add_parser("shim", help="run the enforcement shim", description="Answer Envoy ext_authz HTTP checks from the local verdict cache: 200 allow, 403 deny, 429 throttle.")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    p.add_argument("--no-kafka", action="store_true", help="run without control topic and reports (inline checks only)")
    p.add_argument("--port", type=int, help="decision port (default 9191)")
    p.add_argument("--admin-port", type=int, help="/metrics, /healthz, /readyz, /stats port on 127.0.0.1 (default 9192; KUBEWARD_SHIM_ADMIN_HOST and _ADMIN_TOKEN expose it)")
    p.add_argument("--report", choices=["all", "denied", "none"], help="which decisions to publish as summaries (default all)")
    p.add_argument("--adapter", choices=["envoy", "nginx", "traefik"], help="which data plane asks (default envoy); configs under deploy/dataplanes/")
    p.add_argument("--grpc-port", type=int, help="also serve Envoy ext_authz gRPC checks on this port (Istio envoyExtAuthzGrpc, Envoy Gateway)")
    p.add_argument("--trusted-hops", type=int, help="x-forwarded-for entries appended by trusted proxies (default 1: the data plane's own)")
    p.add_argument("--failure-mode", choices=["allow", "deny"], help="answer before the verdict cache synced (default allow)")
    p.add_argument("--dev", action="store_true", help="allow the development verdict key (refused otherwise): test machines only")
    p.add_argument("--loglevel", default="info", help="log level (default info)")
    p.set_defaults(func=_cmd_shim)


def _cmd_rules_lint(args: argparse.Namespace) -> int:
    from pathlib import Path

    from enforcement.promptrules import DEFAULT_PROMPT_RULES as PROMPT
    from enforcement.promptrules import lint as lint_prompt
    from enforcement.signatures import DEFAULT_RULES as INLINE
    from enforcement.signatures import lint as lint_inline
    from enforcement.toolrules import DEFAULT_TOOL_RULES as TOOLS
    from enforcement.toolrules import lint as lint_tools
    from models.rules import DEFAULT_RULES as DETECTION
    from models.rules import lint as lint_detection

    if args.paths:
        chosen_lint = lint_detection if args.detection else lint_tools if args.tools else lint_prompt if args.prompt else lint_inline
        jobs = [(Path(p), chosen_lint) for p in args.paths]
    else:
        packs = [(INLINE, lint_inline, args.inline), (DETECTION, lint_detection, args.detection), (TOOLS, lint_tools, args.tools),
                 (PROMPT, lint_prompt, args.prompt)]
        chosen = [(path, lint) for path, lint, only in packs if only]
        jobs = chosen or [(path, lint) for path, lint, _ in packs]
    problems = [problem for path, lint in jobs for problem in lint(path)]
    for problem in problems:
        print(problem)
    print(f"{len(jobs)} rule file(s) or directories, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


def _add_rules(sub: Any) -> None:
    p = sub.add_parser("rules", help="inline signatures, detection rules, MCP tool and prompt rules: lint",
                       description="Check rule files: inline signatures (enforcement/rules/inline/), detection rules (models/rules/) and MCP tool-poisoning rules (enforcement/rules/tools/) and prompt-injection rules (enforcement/rules/prompt/); every error as file:line.")
    rules = p.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    lint = rules.add_parser("lint", help="report every problem in the rule files or directories (default: all four shipped packs)")
    lint.add_argument("paths", nargs="*", help="rule files (YAML) or directories of them (inline signatures unless --detection, --tools or --prompt)")
    kind = lint.add_mutually_exclusive_group()
    kind.add_argument("--inline", action="store_true", help="only inline signature rules")
    kind.add_argument("--detection", action="store_true", help="only detection rules (threshold detectors over the feature table)")
    kind.add_argument("--tools", action="store_true", help="only MCP tool-poisoning rules (enforcement/rules/tools/)")
    kind.add_argument("--prompt", action="store_true", help="only prompt-injection rules (enforcement/rules/prompt/)")
    lint.set_defaults(func=_cmd_rules_lint)


#: the subcommand each module's ``add_cli`` registers; a module is imported only to run its command or to list every
#: command (``kubeward --help``), so ``kubeward collect`` or ``kubeward shim`` never loads detection code (scikit-learn,
#: the worker's pipeline: ~127 MiB of a collector's resident memory)
_COMMANDS = {
    "policy": "deploy.policy", "findings": "deploy.findings", "simulate": "deploy.lab.simulate", "demo": "deploy.lab.demo",
    "bench": "deploy.lab.bench", "evaluate": "deploy.lab.evaluate", "eval-sensitive": "deploy.lab.sensitive_eval",
    "eval-templates": "deploy.lab.templating_eval", "eval-waf": "deploy.lab.waf_eval", "eval-redaction": "deploy.lab.redaction_eval",
    "eval-agents": "deploy.lab.agents_eval", "faults": "deploy.lab.faults", "collect": "deploy.collect", "train": "deploy.train",
    "blueprint": "deploy.blueprint", "whatif": "deploy.whatif",
}

_BUILT_IN = frozenset({"kafka", "worker", "shim", "rules"})


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every subcommand (each has --help), or with ``command`` only the built-in ones and that one."""
    from deploy.runtime import brokercli

    parser = argparse.ArgumentParser(prog="kubeward", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    brokercli.add_cli(sub)
    _add_worker(sub)
    _add_shim(sub)
    _add_rules(sub)
    if command in _BUILT_IN:
        modules = []
    else:  # no command, --help or a misspelt one: every command, so that the usage lists them all
        modules = [_COMMANDS[command]] if command in _COMMANDS else list(dict.fromkeys(_COMMANDS.values()))
    for module in modules:
        try:
            __import__(module, fromlist=["add_cli"]).add_cli(sub)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kubeward`` command."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"kubeward: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
