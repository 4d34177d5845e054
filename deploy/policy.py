"""``kubeward policy set|show|apply``: one switch for observe or enforce, obeyed by every shim and worker.

The policy (``ingest.schema.Policy``: a default mode, modes per namespace or
``namespace/service``, TTLs, allow-lists) travels as whole, versioned snapshots
on the compacted topic ``enforcement.policy.v1``, keyed by its name. Shims
follow it for their inline signature checks, workers for the mode of the
verdicts they issue; both start from their settings' policy and replace it
with the newest valid snapshot of the name they follow, without a restart.

* ``set`` reads the snapshot in force (or starts from the built-in default),
  changes one mode, bumps ``version``, publishes and prints the new snapshot;
* ``apply -f FILE`` publishes a whole snapshot from a YAML or JSON file,
  validated strictly first (``ingest.policyfile``);
* ``show`` prints the snapshot in force.

"The snapshot in force" is what a follower would apply after reading the topic
(``PolicyTracker``), so the CLI, the shims and the workers cannot disagree.
Kafka I/O is kafka-python; everything else is ``ingest.policyfile``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from pydantic import SecretStr

from ingest import POLICY, Policy, Reason, Subject, Verdict
from ingest.errors import SettingsError
from ingest.kafkaauth import KafkaSecurity
from ingest.signing import DEV_VERDICT_KEY, VerdictKeys, verdict_keys
from ingest.policyfile import DEFAULT_POLICY_NAME, PolicyTracker, encode_snapshot, load_policy_file, next_snapshot, with_mode, with_tool_approved
from ingest.schema import Mode

__all__ = ["DEFAULT_BOOTSTRAP", "add_cli", "apply_file", "approve_tool", "lift_verdict", "main", "publish_policy", "read_policy", "set_mode", "signing_keys"]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
_CLIENT_ID = "kubeward-policy-cli"

_DESCRIPTION = """\
Switch Kubeward between observe and enforce, per namespace or service, for the
shims (inline signature checks) and the workers (verdict mode) at once.

The policy lives on the compacted Kafka topic enforcement.policy.v1 as whole,
versioned snapshots keyed by policy name ("default" unless a shim or worker is
configured with another policy.name). Every shim and worker follows the topic
and applies the newest valid snapshot without a restart; one that fails
validation is rejected there and the previous policy stays. Each process shows
the version in force as kubeward_shim_policy_version / kubeward_worker_policy_version.

Most specific wins: a namespace/service entry, then a namespace entry, then the
default mode.

examples:
  kubeward policy set --mode enforce --namespace shop       enforce in namespace shop
  kubeward policy set --mode observe --service shop/orders  but only observe service orders in it
  kubeward policy set --inherit --service shop/orders       drop that entry again
  kubeward policy set --mode enforce                        enforce everywhere (the default mode)
  kubeward policy show > policy.json                        the snapshot in force
  kubeward policy apply -f policy.yaml                      publish a whole snapshot from a file
"""

_FILE_HELP = """\
The file holds the fields of a policy (YAML, or JSON by its .json suffix):

  name: default            # which policy; shims and workers follow policy.name of their settings
  default_mode: observe    # observe | enforce
  modes:                   # namespace or namespace/service -> observe | enforce
    shop: enforce
    shop/orders: observe
  verdict_ttl_s: 900
  retired_endpoints: []
  user_expected_principals: []

Unknown or duplicate keys and bad values are rejected with the file, line, key
and value; nothing is published then. The published version is one above the
topic's. A 'version' in the file is the version it was edited from (as printed
by 'show'): if the topic has moved on since, apply refuses instead of
overwriting someone else's change. Leave it out to publish unconditionally.
"""


#: how this command's Kafka clients authenticate (``--kafka-credentials FILE``; PLAINTEXT by default)
_security = KafkaSecurity()


def read_kafka_credentials(path: Path | None) -> KafkaSecurity:
    """The client settings in the JSON at ``path`` (``kubeward kafka credentials NAME`` prints one); PLAINTEXT for None."""
    if path is None:
        return KafkaSecurity()
    try:
        fields = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"--kafka-credentials={str(path)!r}: cannot read it as JSON: {exc}") from None
    return KafkaSecurity.model_validate({k: v for k, v in fields.items() if k in KafkaSecurity.model_fields})


def use_kafka_credentials(path: Path | None) -> None:
    """Authenticate this process's clients with the JSON in ``path`` (``kubeward kafka credentials operator`` prints one)."""
    global _security
    _security = read_kafka_credentials(path)


def _producer(bootstrap: str, timeout_s: float) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", client_id=_CLIENT_ID, bootstrap_timeout_ms=int(timeout_s * 1000), **_security.kafka_python())


def _consumer(bootstrap: str, timeout_s: float) -> KafkaConsumer:
    ms = int(timeout_s * 1000)
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, client_id=_CLIENT_ID, bootstrap_timeout_ms=ms,
                         **_security.kafka_python())


def read_policy(bootstrap: str, name: str = DEFAULT_POLICY_NAME, timeout_s: float = 10.0) -> Policy | None:
    """The snapshot in force for ``name`` on the policy topic (what a follower applies), or ``None`` if there is none."""
    consumer = _consumer(bootstrap, timeout_s)
    try:
        partitions = consumer.partitions_for_topic(POLICY.name)
        if not partitions:
            raise SettingsError(f"topic {POLICY.name!r} does not exist on {bootstrap}; create the topics first (kubeward kafka up)")
        parts = [TopicPartition(POLICY.name, p) for p in sorted(partitions)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        tracker, deadline = PolicyTracker(Policy(name=name)), time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise KafkaError(f"reading {POLICY.name} did not reach its end within {timeout_s} s")
            for records in consumer.poll(timeout_ms=200).values():
                for rec in records:
                    tracker.offer(rec.key, rec.value)
        return tracker.policy if tracker.from_topic else None
    finally:
        consumer.close()


def publish_policy(bootstrap: str, policy: Policy, timeout_s: float = 10.0) -> None:
    """Publish one snapshot (checked first) and wait for the broker's acknowledgement."""
    key, value = encode_snapshot(policy)
    producer = _producer(bootstrap, timeout_s)
    try:
        producer.send(POLICY.name, key=key, value=value).get(timeout=timeout_s)
    finally:
        producer.close()


def _publish_checked(bootstrap: str, policy: Policy, timeout_s: float) -> None:
    """Publish, then read back: a concurrent writer of the same version is reported, not silently lost."""
    publish_policy(bootstrap, policy, timeout_s)
    in_force = read_policy(bootstrap, policy.name, timeout_s)
    if in_force != policy:
        version = in_force.version if in_force else "none"
        raise SettingsError(f"policy {policy.name!r}: another writer published at the same time (in force: version {version}); check with 'kubeward policy show' and retry")


def set_mode(bootstrap: str, mode: Mode | None, target: str | None = None, name: str = DEFAULT_POLICY_NAME, *, dry_run: bool = False, timeout_s: float = 10.0) -> Policy:
    """Change one mode (``target`` None: the default mode; ``mode`` None: drop the entry) and publish the next snapshot."""
    current = read_policy(bootstrap, name, timeout_s)
    snapshot = with_mode(current or Policy(name=name), mode, target)
    if not dry_run:
        _publish_checked(bootstrap, snapshot, timeout_s)
    return snapshot


def apply_file(bootstrap: str, path: Path, *, dry_run: bool = False, timeout_s: float = 10.0) -> Policy:
    """Validate a policy file and publish it as the next snapshot of its name."""
    loaded = load_policy_file(path)  # before any Kafka I/O: a bad file fails fast and offline
    snapshot = next_snapshot(read_policy(bootstrap, loaded.policy.name, timeout_s), loaded)
    if not dry_run:
        _publish_checked(bootstrap, snapshot, timeout_s)
    return snapshot


#: how long a lift keeps older verdicts of its key out (replayed records); longer than any verdict's TTL
LIFT_STANDS_S = 7 * 86_400.0


def signing_keys(allow_dev: bool = False) -> VerdictKeys:
    """The keys the workers sign with, from their settings' variables (``KUBEWARD_WORKER_VERDICT_KEY``, ``..._KEY_ID``):
    an operator's lift must verify at the shims like a worker's verdict. The development key only with ``allow_dev``."""
    key = SecretStr(os.environ.get("KUBEWARD_WORKER_VERDICT_KEY", DEV_VERDICT_KEY))
    keys = verdict_keys(key, os.environ.get("KUBEWARD_WORKER_VERDICT_KEY_ID", "k1"))
    if keys.uses_dev_key and not allow_dev:
        raise SettingsError("KUBEWARD_WORKER_VERDICT_KEY is unset (the development key): set it to the workers' key to sign the lift, "
                            "or pass --dev on a test machine")
    return keys


def lift_verdict(bootstrap: str, subject: Subject, keys: VerdictKeys, *, reason: str = "lifted by an operator", timeout_s: float = 10.0) -> Verdict:
    """Publish a signed ``lift`` for a subject's verdicts (and its edge verdicts) on the verdict topic; returns it."""
    from ingest import VERDICTS

    now = time.time()
    lift = keys.sign(Verdict(id=str(uuid.uuid4()), subject=subject, action="lift", mode="enforce", expires_at=now + LIFT_STANDS_S,
                             reasons=[Reason(detector="operator-lift", score=0.0, evidence=reason)], issued_at=now, evidence_time=now))
    producer = _producer(bootstrap, timeout_s)
    try:
        producer.send(VERDICTS.name, key=lift.entry_key.encode(), value=lift.model_dump_json().encode()).get(timeout=timeout_s)
    finally:
        producer.close()
    return lift


def approve_tool(bootstrap: str, tool: str, digest: str, name: str = DEFAULT_POLICY_NAME, *, dry_run: bool = False,
                 timeout_s: float = 10.0, keys: VerdictKeys | None = None, allow_dev: bool = False) -> Policy:
    """Approve one MCP tool definition: publish the next snapshot with it in ``approved_tools`` (workers pin it and
    stop flagging it), then a signed lift of the tool's verdict on the verdict topic so shims allow its calls again
    (``keys``: the workers' signing keys, by default from their variables, see ``signing_keys``)."""
    snapshot = with_tool_approved(read_policy(bootstrap, name, timeout_s) or Policy(name=name), tool, digest)
    if not dry_run:
        keys = keys or signing_keys(allow_dev)  # before publishing anything: a missing key fails the whole approval
        _publish_checked(bootstrap, snapshot, timeout_s)
        lift_verdict(bootstrap, Subject(kind="tool", value=tool), keys, reason=f"tool definition {digest[:12]} approved", timeout_s=timeout_s)
    return snapshot


def _target(args: argparse.Namespace) -> str | None:
    if args.service is not None and "/" not in args.service:
        raise SettingsError(f"--service={args.service!r}: expected namespace/service, e.g. shop/orders")
    if args.namespace is not None and "/" in args.namespace:
        raise SettingsError(f"--namespace={args.namespace!r}: a namespace has no '/'; use --service for namespace/service")
    target: str | None = args.service or args.namespace
    return target


def _print(policy: Policy, note: str) -> None:
    print(policy.model_dump_json(indent=2))
    print(note, file=sys.stderr)


def _kafka_errors(run: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            use_kafka_credentials(getattr(args, "kafka_credentials", None))
            return int(run(args))
        except KafkaError as exc:
            print(f"kubeward policy: Kafka at {args.bootstrap}: {exc}", file=sys.stderr)
            return 1

    return wrapped


@_kafka_errors
def _cmd_set(args: argparse.Namespace) -> int:
    target = _target(args)
    snapshot = set_mode(args.bootstrap, None if args.inherit else args.mode, target, args.name, dry_run=args.dry_run, timeout_s=args.timeout)
    what = f"{target or 'default mode'}: {'inherit' if args.inherit else args.mode}"
    _print(snapshot, f"{'would publish' if args.dry_run else 'published'} policy {snapshot.name!r} version {snapshot.version} ({what}) on {POLICY.name}")
    return 0


@_kafka_errors
def _cmd_apply(args: argparse.Namespace) -> int:
    snapshot = apply_file(args.bootstrap, args.file, dry_run=args.dry_run, timeout_s=args.timeout)
    _print(snapshot, f"{'would publish' if args.dry_run else 'published'} policy {snapshot.name!r} version {snapshot.version} from {args.file} on {POLICY.name}")
    return 0


@_kafka_errors
def _cmd_approve_tool(args: argparse.Namespace) -> int:
    snapshot = approve_tool(args.bootstrap, args.tool, args.hash, args.name, dry_run=args.dry_run, timeout_s=args.timeout, allow_dev=args.dev)
    _print(snapshot, f"{'would publish' if args.dry_run else 'published'} policy {snapshot.name!r} version {snapshot.version} "
                     f"(tool {args.tool} approved at {args.hash[:12]}) on {POLICY.name}{'' if args.dry_run else ' and lifted its verdict'}")
    return 0


@_kafka_errors
def _cmd_show(args: argparse.Namespace) -> int:
    current = read_policy(args.bootstrap, args.name, args.timeout)
    if current is None:
        _print(Policy(name=args.name), f"no snapshot of policy {args.name!r} on {POLICY.name}: shims and workers use their settings' policy (built-in default shown)")
    else:
        _print(current, f"policy {current.name!r} version {current.version} in force on {POLICY.name}")
    return 0


def _common(parser: argparse.ArgumentParser, named: bool = True) -> None:
    parser.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap servers (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for Kafka (default: %(default)s)")
    parser.add_argument("--kafka-credentials", type=Path, metavar="FILE",
                        help="JSON with protocol, username, password (and ca_file...) for a secured broker, as 'kubeward kafka credentials operator' prints")
    if named:
        parser.add_argument("--name", default=DEFAULT_POLICY_NAME, help="policy name, the key on the topic (default: %(default)s)")


def _add_set(sub: Any) -> None:
    p = sub.add_parser("set", help="change one mode and publish the next snapshot", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Read the snapshot in force (or the built-in default), change one mode, bump the version,\n"
                                   "publish it and print it. Without --namespace or --service the default mode changes.")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--mode", choices=["observe", "enforce"], help="the mode to set")
    how.add_argument("--inherit", action="store_true", help="remove the namespace's or service's entry (it inherits again)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--namespace", metavar="NS", help="set the mode of one namespace")
    where.add_argument("--service", metavar="NS/SVC", help="set the mode of one service (namespace/service)")
    p.add_argument("--dry-run", action="store_true", help="print the snapshot that would be published; publish nothing")
    _common(p)
    p.set_defaults(func=_cmd_set)


def _add_apply(sub: Any) -> None:
    p = sub.add_parser("apply", help="publish a whole snapshot from a YAML or JSON file", description=_FILE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--file", type=Path, required=True, help="the policy file (YAML, or JSON by the .json suffix)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the snapshot that would be published; publish nothing")
    _common(p, named=False)
    p.set_defaults(func=_cmd_apply)


def _add_show(sub: Any) -> None:
    p = sub.add_parser("show", help="print the snapshot in force", description=f"Print the snapshot in force on {POLICY.name} as JSON (valid input for 'apply -f').")
    _common(p)
    p.set_defaults(func=_cmd_show)


def _add_approve_tool(sub: Any) -> None:
    p = sub.add_parser("approve-tool", help="accept an MCP tool's definition (after a rug-pull, new-tool or poisoning verdict)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Add <server>/<tool> -> definition hash to the policy's approved_tools and publish the next\n"
                                   "snapshot: workers pin that definition and stop flagging it; then lift the tool's verdict on\n"
                                   "the verdict topic so shims allow its calls again. The hash is the 64-hex definition hash of the\n"
                                   "api.inventory.v1 record of the tool (its first 12 digits are in the finding).")
    p.add_argument("tool", metavar="SERVER/TOOL", help="the tool, as its verdict names it: <namespace>/<service>/<tool>, e.g. shop/mcp/send_invoice (<service>/<tool> where no namespace is known)")
    p.add_argument("hash", metavar="HASH", help="the definition hash to approve (sha256, 64 hex digits)")
    p.add_argument("--dry-run", action="store_true", help="print the snapshot that would be published; publish nothing")
    p.add_argument("--dev", action="store_true", help="sign the lift with the development key (test machines only)")
    _common(p)
    p.set_defaults(func=_cmd_approve_tool)


_SUBJECT_KINDS = ("actor", "workload", "principal", "ip", "endpoint", "tool")


@_kafka_errors
def _cmd_lift(args: argparse.Namespace) -> int:
    kind, _, value = args.subject.partition(":")
    if kind not in _SUBJECT_KINDS or not value:
        raise SettingsError(f"SUBJECT={args.subject!r}: expected <kind>:<value> with kind one of {', '.join(_SUBJECT_KINDS)}, e.g. ip:10.0.0.9")
    lift = lift_verdict(args.bootstrap, Subject(kind=kind, value=value), signing_keys(args.dev), reason=args.reason, timeout_s=args.timeout)
    print(lift.model_dump_json(indent=2))
    print(f"published a signed lift of {lift.entry_key} (and its edge verdicts) on the verdict topic, key id {lift.key_id}", file=sys.stderr)
    return 0


def _add_lift(sub: Any) -> None:
    p = sub.add_parser("lift", help="lift the verdicts on a subject (a signed record: shims ignore bare tombstones)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Publish a signed 'lift' for SUBJECT on the verdict topic: shims drop its verdicts (and edge\n"
                                   "verdicts) issued until now, and keep replayed older ones out for 7 days. Signed with the\n"
                                   "workers' key from KUBEWARD_WORKER_VERDICT_KEY (and _KEY_ID). A detector may block the\n"
                                   "subject again on new evidence. On a secured broker only workers write the verdict\n"
                                   "topic: give --kafka-credentials of a worker principal.")
    p.add_argument("subject", metavar="SUBJECT", help="<kind>:<value> as the verdict names it, e.g. ip:10.0.0.9, actor:shop/web|alice, tool:shop/mcp/send_invoice")
    p.add_argument("--reason", default="lifted by an operator", help="why, kept in the record (default: %(default)s)")
    p.add_argument("--dev", action="store_true", help="sign with the development key (test machines only)")
    _common(p, named=False)
    p.set_defaults(func=_cmd_lift)


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``policy set|show|apply|approve-tool|lift|suggest`` on an ``ArgumentParser.add_subparsers()`` object."""
    policy: argparse.ArgumentParser = subparsers.add_parser(
        "policy", help="observe or enforce, per namespace or service, for shims and workers at once",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)

    def show_help(_args: argparse.Namespace) -> int:
        policy.print_help()
        return 2

    policy.set_defaults(func=show_help)
    sub = policy.add_subparsers(title="commands", metavar="{set,show,apply,approve-tool,lift,suggest}")
    _add_set(sub)
    _add_show(sub)
    _add_apply(sub)
    _add_approve_tool(sub)
    _add_lift(sub)
    from deploy.policysuggestcli import add_suggest  # here: the suggestion imports pyarrow and the worker's decoding

    add_suggest(sub)
    return policy


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m deploy.policy policy set --mode enforce --namespace shop``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.policy", description=__doc__.splitlines()[0] if __doc__ else None)
    add_cli(parser.add_subparsers(title="commands", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"kubeward policy: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
