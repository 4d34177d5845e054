"""``kubeward policy suggest``: least-privilege policy from recorded traffic, validated, and diffed against what is deployed.

The I/O edge of ``deploy.policysuggest`` (pure core), ``deploy.policyedges``
(edges from summaries) and ``deploy.policydiff`` (the diff): it reads the
summaries (Parquet archives, or ``l7.summaries.v1`` with a fresh consumer that
joins no group, through ``deploy.whatif``), the mapping file, the deployed
policies (a directory of YAML files and/or a cluster through the
``kubernetes`` client), fetches the CRDs to validate against
(``deploy.runtime.helmtools.ensure_crds``), writes one YAML file per object and
prints the diff. ``deploy.policy`` registers it as the ``suggest`` action.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import yaml

from deploy.policydiff import FORMAT_KINDS, ObjectDiff, diff_objects, policy_objects
from deploy.policyedges import EdgeFold
from deploy.policymapping import PolicyMapping, mapping_from_dict
from deploy.policysuggest import FORMATS, Suggestion, Thresholds, judge, namespaces_seen, render, review_document, shim_allowlist, validate
from ingest.errors import SettingsError

__all__ = ["add_suggest", "cluster_objects", "directory_objects", "read_mapping", "run", "write_out"]

_DESCRIPTION = """\
Turn the call edges Kubeward learned from traffic (caller -> service, method,
path template) into reviewable least-privilege policy, one object per
destination workload:

  istio          AuthorizationPolicy (ALLOW, L7: principals, methods, path templates as /orders/{*})
  cilium         CiliumNetworkPolicy (fromEndpoints/fromCIDR, toPorts with HTTP method + path regex)
  networkpolicy  NetworkPolicy (L4: pod and namespace selectors of the callers, the ports)
  shim           the shim's allow-list (allowlist.yaml), which the shim enforces
                 with KUBEWARD_SHIM_ALLOW_LIST__FILE=allowlist.yaml

An edge is allowed when it had at least --min-calls successful calls and, for a
cohort (end users behind a workload, addresses behind an external CIDR), at
least --min-callers distinct actors; the rest is written to review.yaml with
the reasons (too few calls or actors, never successful, egress to an external
host, an address without a workload). Learn from a window you trust: whatever
an attacker did often enough in it is allowed too. A workload that no call
reached in the window gets no object and stays open: --default-deny adds a
deny-all object per namespace seen, so only what is suggested passes.

Every object is validated strictly (Kubernetes 1.35-1.37 schemas, and the
Istio and Cilium CRD schemas fetched from their Go modules) before anything is
written. With --deployed DIR and/or --kubeconfig FILE the suggestion is
compared with what is deployed, one unified diff per object.

Pods are selected by app.kubernetes.io/name = workload name, Istio principals
are cluster.local/ns/<ns>/sa/<workload name>, ports are those seen in traffic
(else the named port http); --mapping FILE overrides them:

  trust_domain: cluster.local
  label: app.kubernetes.io/name
  default_port: http
  workloads:
    shop/frontend: {labels: {app: web}, service_account: web-sa, ports: [8080]}

example:
  kubeward simulate --seed 7 --seconds 300 --rate 100 --no-attacks --out build/learn.parquet
  kubeward policy suggest --parquet build/learn.parquet --format all --out build/policy
  kubeward policy suggest --parquet build/learn.parquet --format istio --deployed k8s/policies/
  kubeward policy suggest --kafka --bootstrap 127.0.0.1:9092 --since 2026-05-01T00:00:00Z --kubeconfig ~/.kube/config
"""

# group, version, plural of the custom kinds read from a cluster
_CUSTOM = (("security.istio.io", "v1", "authorizationpolicies"), ("cilium.io", "v2", "ciliumnetworkpolicies"))


def _time(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise SettingsError(f"{flag}={text!r}: expected Unix seconds or an ISO 8601 time (e.g. 2026-05-01T12:00:00Z)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def _tables(args: argparse.Namespace, since: float | None) -> Iterator[pa.Table]:
    from deploy.whatif import kafka_table, parquet_tables

    if bool(args.parquet) == bool(args.kafka):
        raise SettingsError("give the recorded traffic: --parquet FILE... or --kafka (with --bootstrap HOST:PORT)")
    if args.parquet:
        yield from parquet_tables(args.parquet, since)
        return
    from deploy.policy import read_kafka_credentials

    table, bad = kafka_table(args.bootstrap, read_kafka_credentials(args.kafka_credentials), since)
    if bad:
        print(f"kubeward policy suggest: {bad} undecodable messages skipped", file=sys.stderr)
    yield table


def read_mapping(path: Path | None) -> PolicyMapping:
    """The mapping file (YAML), strictly; the defaults without one."""
    if path is None:
        return PolicyMapping()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"--mapping={str(path)!r}: cannot read it as YAML: {exc}") from None
    try:
        return mapping_from_dict(data)
    except SettingsError as exc:
        raise SettingsError(f"--mapping={str(path)!r}: {exc}") from None


def directory_objects(directory: Path) -> list[dict[str, Any]]:
    """The policy objects in every ``*.yaml``/``*.yml`` file under ``directory`` (multi-document files and Lists too)."""
    if not directory.is_dir():
        raise SettingsError(f"--deployed={str(directory)!r}: not a directory")
    objects: list[Any] = []
    for path in sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")]):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"--deployed: {path}: not YAML: {exc}") from None
        for doc in docs:
            objects += (doc.get("items") or []) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
    return policy_objects(objects)


def cluster_objects(kubeconfig: Path, context: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(the policy objects in every namespace of the cluster, notes on kinds the cluster does not serve)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=configuration,  # type: ignore[no-untyped-call]
                                persist_config=False)
    except (config.ConfigException, OSError) as exc:
        raise SettingsError(f"--kubeconfig={str(kubeconfig)!r} cannot be loaded: {exc}") from None
    api = client.ApiClient(configuration)
    notes: list[str] = []
    try:
        found = api.sanitize_for_serialization(client.NetworkingV1Api(api).list_network_policy_for_all_namespaces().items)  # type: ignore[no-untyped-call]
        objects = [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **item} for item in found]
        for group, version, plural in _CUSTOM:
            try:
                listed = cast(dict[str, Any], client.CustomObjectsApi(api).list_cluster_custom_object(group, version, plural))
            except ApiException as exc:
                if exc.status != 404:
                    raise
                notes.append(f"the cluster serves no {plural}.{group}/{version} (CRD not installed): nothing deployed of that kind")
                continue
            objects += listed.get("items") or []
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return policy_objects(objects), notes


def _file_name(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{obj['kind'].lower()}-{meta['namespace']}-{meta['name']}.yaml"


def write_out(directory: Path, objects: list[dict[str, Any]], extra: dict[str, dict[str, Any]]) -> list[Path]:
    """One YAML file per object (``<kind>-<namespace>-<name>.yaml``) plus the data documents in ``extra``; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in [(_file_name(o), o) for o in objects] + sorted(extra.items()):
        path = directory / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        written.append(path)
    return written


def _validate(objects: list[dict[str, Any]]) -> None:
    from deploy.runtime.helmtools import HelmError, ensure_crds, load_crds

    try:
        crds = load_crds(ensure_crds())[0]
    except HelmError as exc:
        raise SettingsError(f"cannot fetch the CRDs to validate against ({exc}); --no-validate skips validation") from None
    errors = validate(objects, crds)
    if errors:
        listing = "\n".join(f"  {e.version} {e.object} {e.path}: {e.message}" for e in errors[:20])
        raise SettingsError(f"{len(errors)} validation errors in the suggested objects (a bug: please report it):\n{listing}")


def _formats(choice: str) -> list[str]:
    return list(FORMATS) if choice == "all" else [choice]


def _suggest(args: argparse.Namespace) -> tuple[Suggestion, EdgeFold]:
    since, until = _time(args.since, "--since"), _time(args.until, "--until")
    fold = EdgeFold(prefix_v4=args.cidr_prefix, prefix_v6=args.cidr_prefix_v6)
    for table in _tables(args, since):
        if until is not None:
            import pyarrow.compute as pc

            table = table.filter(pc.less(table["time"], until))
        fold.update(table)
    thresholds = Thresholds(args.min_calls, args.min_callers, allow_external=args.external == "cidr")
    return judge(fold.edges(), thresholds), fold


def _print_diffs(diffs: Iterable[ObjectDiff]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in diffs:
        counts[d.status] = counts.get(d.status, 0) + 1
        if d.status == "unmanaged":
            print(f"# {d.name}: deployed, not managed by kubeward, not suggested: left alone")
        elif d.status != "unchanged":
            print(f"# {d.name}: {d.status} (+{d.added_lines} -{d.removed_lines})")
            print(d.text, end="")
    return counts


def run(args: argparse.Namespace) -> int:
    """The ``suggest`` action (arguments as ``add_suggest`` defines them)."""
    mapping = read_mapping(args.mapping)
    suggestion, fold = _suggest(args)
    formats = _formats(args.format)
    objects = render(suggestion, mapping, formats, namespaces_seen(suggestion) if args.default_deny else ())
    if not args.no_validate:
        _validate(objects)
    extra = {"review.yaml": review_document(suggestion)}
    if "shim" in formats:
        extra["allowlist.yaml"] = shim_allowlist(suggestion)
    comparing = args.deployed is not None or args.kubeconfig is not None
    if args.out is not None:
        written = write_out(args.out, objects, extra)
        print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    elif not comparing:
        print(yaml.safe_dump_all([*objects, *(extra[k] for k in sorted(extra))], sort_keys=False), end="")
    rules = sum(len(o["spec"].get("rules") or o["spec"].get("ingress") or []) for o in objects)
    print(f"{fold.rows} calls, {len(suggestion.judged)} edges: {len(suggestion.allowed)} allowed, {len(suggestion.review)} for review; "
          f"{len(objects)} objects, {rules} rules ({', '.join(formats)})", file=sys.stderr)
    if comparing:
        deployed: list[dict[str, Any]] = directory_objects(args.deployed) if args.deployed is not None else []
        if args.kubeconfig is not None:
            found, notes = cluster_objects(args.kubeconfig, args.context)
            deployed += found
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
        counts = _print_diffs(diff_objects(objects, deployed, [FORMAT_KINDS[f] for f in formats if f in FORMAT_KINDS]))
        print("diff: " + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing on either side"), file=sys.stderr)
    return 0


def add_suggest(sub: Any) -> argparse.ArgumentParser:
    """Register ``suggest`` on the ``policy`` subcommand group."""
    p: argparse.ArgumentParser = sub.add_parser("suggest", help="least-privilege Istio/Cilium/NetworkPolicy/shim policy from learned call edges",
                                                description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("traffic")
    src.add_argument("--parquet", type=Path, nargs="+", metavar="FILE", help="Parquet archives of summaries (kubeward simulate --out, the archiver)")
    src.add_argument("--kafka", action="store_true", help="read l7.summaries.v1 from its beginning (or --since) to its end now; no consumer group")
    src.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers with --kafka (default %(default)s)")
    src.add_argument("--kafka-credentials", type=Path, metavar="FILE", help="JSON client credentials for a secured broker (kubeward kafka credentials NAME)")
    src.add_argument("--since", metavar="TIME", help="learn from calls at or after TIME (Unix seconds or ISO 8601)")
    src.add_argument("--until", metavar="TIME", help="learn from calls before TIME (Unix seconds or ISO 8601)")
    out = p.add_argument_group("policy")
    out.add_argument("--format", choices=[*FORMATS, "all"], default="all", help="what to write (default %(default)s)")
    out.add_argument("--out", type=Path, metavar="DIR", help="write one YAML file per object, review.yaml and allowlist.yaml there (default: print)")
    out.add_argument("--min-calls", type=int, default=Thresholds.min_calls, help="successful calls an edge needs to be allowed (default %(default)s)")
    out.add_argument("--min-callers", type=int, default=Thresholds.min_callers,
                     help="distinct actors a cohort edge (users behind a workload, addresses behind a CIDR) needs (default %(default)s)")
    out.add_argument("--external", choices=["cidr", "omit"], default="cidr", help="external callers: allowed by CIDR, or left out for review (default %(default)s)")
    out.add_argument("--cidr-prefix", type=int, default=24, help="IPv4 prefix length external addresses are grouped by (default %(default)s)")
    out.add_argument("--cidr-prefix-v6", type=int, default=64, help="IPv6 prefix length (default %(default)s)")
    out.add_argument("--default-deny", action="store_true",
                     help="add a deny-all per namespace seen (kubeward-default-deny): workloads no call reached are closed too")
    out.add_argument("--mapping", type=Path, metavar="FILE", help="YAML: labels, service accounts and ports per workload (see above)")
    out.add_argument("--no-validate", action="store_true", help="skip the schema validation (it needs the CRDs from the Go module proxy once)")
    cmp = p.add_argument_group("compare with what is deployed")
    cmp.add_argument("--deployed", type=Path, metavar="DIR", help="a directory of deployed policy YAML files")
    cmp.add_argument("--kubeconfig", type=Path, metavar="FILE", help="read the deployed policies from this cluster")
    cmp.add_argument("--context", help="kubeconfig context (default: its current one)")
    p.set_defaults(func=run)
    return p
