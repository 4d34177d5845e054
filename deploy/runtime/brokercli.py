"""``kubeward kafka up|down|status|credentials``: the command line of the local broker (``deploy.runtime.broker``).

``python -m deploy.runtime.brokercli kafka up`` runs it standalone; ``kafka up --secure`` starts it
with SCRAM and ACLs per role, and ``kafka credentials worker`` prints that principal's
``KafkaSecurity`` as JSON (password included: it is a local broker).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from deploy.runtime.broker import (DEFAULT_DATA_DIR, BrokerError, Secured, ensure_topics, fetch_jars, security_state, start,
                                   status, stop)
from deploy.runtime.brokersecurity import ADMIN, SecurityError, declared_roles

__all__ = ["add_cli", "main"]



def _wipe(data_dir: Path) -> None:
    """Delete a broker data dir, refusing dirs that do not look like one."""
    if not data_dir.exists():
        return
    markers = ("server.properties", "broker.log", "logs")
    if any(data_dir.iterdir()) and not any((data_dir / m).exists() for m in markers):
        raise BrokerError(f"refusing to wipe {data_dir}: it does not look like a broker data dir")
    shutil.rmtree(data_dir)


def _secured(args: argparse.Namespace) -> Secured | None:
    if not args.secure:
        if args.tls_port or args.sasl_ssl_port:
            raise BrokerError("--tls-port and --sasl-ssl-port need --secure")
        return None
    return Secured(tls_port=args.tls_port, sasl_ssl_port=args.sasl_ssl_port)


def _cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    try:
        security = _secured(args)
        libs = fetch_jars()
        if args.fresh:
            stop(data_dir)
            _wipe(data_dir)
        current = status(data_dir)
        if current["running"] and not current["bootstrap"]:
            raise BrokerError(f"broker pid {current['pid']} runs but is not reachable; "
                              f"see {data_dir / 'broker.log'} or run `kafka down`")
        if current["running"] and (current["protocol"] != "PLAINTEXT") != args.secure:
            raise BrokerError(f"the broker on {data_dir} runs with {current['protocol']}; "
                              f"`kafka down` first, or `kafka up --fresh{' --secure' if args.secure else ''}`")
        bootstrap = current["bootstrap"] or start(
            data_dir, args.port, args.controller_port, args.heap, libs=libs, security=security).bootstrap
        state = security_state(data_dir) if args.secure else None
        created = ensure_topics(bootstrap, security=state.admin if state else None)
    except (BrokerError, SecurityError) as exc:
        print(f"kafka up: {exc}", file=sys.stderr)
        return 1
    if created:
        print(f"created topics: {', '.join(created)}", file=sys.stderr)
    print(f"bootstrap={bootstrap}")
    if state is not None:
        roles = "; ".join(f"{role}: {', '.join(names)}" for role, names in declared_roles(state.principals).items())
        print(f"protocol=SASL_PLAINTEXT mechanism={state.mechanism} principals ({roles}) "
              f"credentials: kafka credentials NAME --data-dir {data_dir}", file=sys.stderr)
    return 0


def _cmd_credentials(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    state = security_state(data_dir)
    if state is None:
        print(f"kafka credentials: the broker on {data_dir} runs without security (PLAINTEXT)", file=sys.stderr)
        return 1
    try:
        security = state.client(args.name, args.protocol)
        bootstrap = state.bootstrap(args.protocol)
    except SecurityError as exc:
        print(f"kafka credentials: {exc}", file=sys.stderr)
        return 1
    fields = security.model_dump(mode="json", exclude_none=True, exclude=set() if security.uses_sasl else {"mechanism"})
    if security.password is not None:
        fields["password"] = security.password.get_secret_value()
    print(json.dumps({"bootstrap": bootstrap, **fields}))
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from deploy.policy import read_kafka_credentials
    from ingest.errors import SettingsError

    try:
        security = read_kafka_credentials(args.kafka_credentials)
        created = ensure_topics(args.bootstrap, security=security, replication_factor=args.replication_factor)
    except (BrokerError, SettingsError) as exc:
        print(f"kafka topics: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the cluster refused or is away: say so, no traceback
        print(f"kafka topics: {args.bootstrap}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"created topics: {', '.join(created)}" if created else "every topic exists already (left as it is)")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    print("stopped" if stop(data_dir) else f"no broker running on {data_dir}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    info = status(Path(args.data_dir).resolve())
    print(" ".join(f"{key}={'' if value is None else value}" for key, value in info.items()))
    return 0 if info["bootstrap"] else 1


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``kafka up|down|status`` on an ``ArgumentParser.add_subparsers()`` object."""
    kafka: argparse.ArgumentParser = subparsers.add_parser(
        "kafka", help="run the local single-node Kafka broker (KRaft, no Docker)",
        description="Manage the project's local Apache Kafka 4.x broker: jars from Maven Central, "
                    "a java process on 127.0.0.1, state in a data dir.")

    def show_help(_args: argparse.Namespace) -> int:
        kafka.print_help()
        return 2

    kafka.set_defaults(func=show_help)
    sub = kafka.add_subparsers(title="commands", metavar="{up,topics,down,status,credentials}")

    def data_dir_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                            help="broker state: config, KRaft metadata, logs, pid (default: %(default)s)")

    up = sub.add_parser(
        "up", help="fetch jars, start the broker if needed, create the topics",
        description="Idempotent: fetches the jars once, starts the broker unless it already runs, "
                    "creates missing topics, then prints bootstrap=HOST:PORT.")
    data_dir_option(up)
    up.add_argument("--port", type=int, default=9092, help="client (PLAINTEXT) port (default: %(default)s)")
    up.add_argument("--controller-port", type=int, default=9093,
                    help="KRaft controller port (default: %(default)s)")
    up.add_argument("--heap", default="512m", help="JVM heap, -Xms and -Xmx (default: %(default)s)")
    up.add_argument("--fresh", action="store_true",
                    help="stop the broker and wipe the data dir first (all topics and messages are lost)")
    up.add_argument("--secure", action="store_true",
                    help="SASL_PLAINTEXT with SCRAM-SHA-256 on --port, ACLs per role (collector, shim, worker, operator), "
                         "nothing allowed without an ACL; a data dir keeps the mode it was formatted in")
    up.add_argument("--tls-port", type=int, default=None, help="with --secure: also a mutual-TLS (SSL) listener")
    up.add_argument("--sasl-ssl-port", type=int, default=None, help="with --secure: also a SASL_SSL listener")
    up.set_defaults(func=_cmd_up)

    topics = sub.add_parser(
        "topics", help="create the project's topics on any Kafka cluster (replicated)",
        description="Create the topics Kubeward uses (summaries, dead letters, verdicts, policy, findings, inventory; "
                    "compacted where they hold state) on the cluster at --bootstrap, with --replication-factor replicas "
                    "and min.insync.replicas one less (at 3 or more). Existing topics are left as they are.")
    topics.add_argument("--bootstrap", required=True, help="HOST:PORT[,HOST:PORT...] of the cluster")
    topics.add_argument("--replication-factor", type=int, default=3, help="replicas per partition (default: %(default)s)")
    topics.add_argument("--kafka-credentials", type=Path, metavar="FILE",
                        help="JSON client settings of an admin principal (protocol, mechanism, username, password, TLS files)")
    topics.set_defaults(func=_cmd_topics)

    down = sub.add_parser("down", help="stop the broker (SIGTERM, SIGKILL after 30 s)",
                          description="Stop the broker recorded in the data dir's pid file.")
    data_dir_option(down)
    down.set_defaults(func=_cmd_down)

    stat = sub.add_parser("status", help="show whether the broker runs and is reachable",
                          description="Print running/pid/bootstrap; exit 0 only if the broker answers.")
    data_dir_option(stat)
    stat.set_defaults(func=_cmd_status)

    creds = sub.add_parser("credentials", help="print a principal's client settings (secured broker)",
                           description="Print {bootstrap, protocol, mechanism, username, password, ...} of a principal of "
                                       "a broker started with --secure, as JSON (a KafkaSecurity plus its bootstrap).")
    data_dir_option(creds)
    creds.add_argument("name", help=f"principal: {ADMIN}, collector, shim, worker or operator")
    creds.add_argument("--protocol", choices=("SASL_PLAINTEXT", "SSL", "SASL_SSL"), default="SASL_PLAINTEXT",
                       help="listener (default: %(default)s)")
    creds.set_defaults(func=_cmd_credentials)
    return kafka


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m deploy.runtime.brokercli kafka up``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.runtime.brokercli", description=__doc__.splitlines()[0])
    add_cli(parser.add_subparsers(title="commands", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
