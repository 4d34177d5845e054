"""``kubeward kafka up|down|status``: the command line of the local broker (``deploy.runtime.broker``).

``python -m deploy.runtime.brokercli kafka up`` runs it standalone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from deploy.runtime.broker import DEFAULT_DATA_DIR, BrokerError, ensure_topics, fetch_jars, start, status, stop

__all__ = ["add_cli", "main"]



def _wipe(data_dir: Path) -> None:
    """Delete a broker data dir, refusing dirs that do not look like one."""
    if not data_dir.exists():
        return
    markers = ("server.properties", "broker.log", "logs")
    if any(data_dir.iterdir()) and not any((data_dir / m).exists() for m in markers):
        raise BrokerError(f"refusing to wipe {data_dir}: it does not look like a broker data dir")
    shutil.rmtree(data_dir)


def _cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    try:
        libs = fetch_jars()
        if args.fresh:
            stop(data_dir)
            _wipe(data_dir)
        current = status(data_dir)
        if current["running"] and not current["bootstrap"]:
            raise BrokerError(f"broker pid {current['pid']} runs but is not reachable; "
                              f"see {data_dir / 'broker.log'} or run `kafka down`")
        bootstrap = current["bootstrap"] or start(
            data_dir, args.port, args.controller_port, args.heap, libs=libs).bootstrap
        created = ensure_topics(bootstrap)
    except BrokerError as exc:
        print(f"kafka up: {exc}", file=sys.stderr)
        return 1
    if created:
        print(f"created topics: {', '.join(created)}", file=sys.stderr)
    print(f"bootstrap={bootstrap}")
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
    sub = kafka.add_subparsers(title="commands", metavar="{up,down,status}")

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
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser("down", help="stop the broker (SIGTERM, SIGKILL after 30 s)",
                          description="Stop the broker recorded in the data dir's pid file.")
    data_dir_option(down)
    down.set_defaults(func=_cmd_down)

    stat = sub.add_parser("status", help="show whether the broker runs and is reachable",
                          description="Print running/pid/bootstrap; exit 0 only if the broker answers.")
    data_dir_option(stat)
    stat.set_defaults(func=_cmd_status)
    return kafka


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m deploy.runtime.brokercli kafka up``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.runtime.brokercli", description=__doc__.splitlines()[0])
    add_cli(parser.add_subparsers(title="commands", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
