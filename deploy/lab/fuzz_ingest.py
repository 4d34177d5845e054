"""Fuzz targets of the summaries topic, the control topics and what a collector hands on (``deploy.lab.fuzz`` runs them).

* the summaries topic: ``ingest.envelope.decode_message`` alone, and the worker's whole path for a batch of
  messages (``streams.pipeline.Pipeline.handle_many``), where every message that does not decode must come out
  as a dead letter with a reason and every row of those that do must be processed or dead-lettered;
* the control topics as the shim reads them (``enforcement.control.ControlConsumer.apply`` and ``apply_policy``),
  policy files (``ingest.policyfile.load_policy_file``) and Kubernetes pod watch events (``ingest.pods``).

``publishable`` is what a collector does with what it decoded (``deploy.lab.fuzz_collectors`` calls it): the
observations are summarised, cut into envelopes by actor and encoded as the publisher does, and the worker must
decode each envelope (a collector's output that the worker refuses would be lost). ``encodable`` checks the same
for the shim's reports.
"""

from __future__ import annotations

import atexit
import base64
import functools
import itertools
import json
import random
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from deploy.lab.fuzz import Batch, Invariant, Target
from deploy.lab.fuzz_inputs import SEP, as_bytes, pack, record
from ingest import SUMMARIES, EnvelopeError, Policy, Verdict, decode_message, encode_envelope, encode_rows, sign_verdict
from ingest.collectors.accesslog import Rejected
from ingest.errors import SettingsError
from ingest.observation import HttpObservation
from ingest.pods import PodEventError
from ingest.schema import Destination, LlmExtras, McpExtras, McpTool, Reason, RequestSummary, Scope, Source, Subject

__all__ = ["DATASETS", "MAX_MESSAGE", "SCRATCH", "T0", "TARGETS", "TOKENS", "checked_rejects", "chunks", "dataset", "encodable",
           "publishable"]

DATASETS = Path("/work/shared/datasets")
KEY = b"fuzz-verdict-key"
T0 = 1_700_000_000.0
#: the worker's limit (``WorkerSettings.max_message_bytes``), also used where a message is decoded alone
MAX_MESSAGE = 16 << 20
_HEADER_NAMES = ("authorization", "x-forwarded-client-cert", "x-forwarded-for", "cookie", "x-api-key", "content-type",
                 "x-request-id", "traceparent", "user-agent", "x-kubeward-destination", "mcp-session-id", "host")
TOKENS = tuple(n.encode() for n in _HEADER_NAMES) + (
    b"Bearer ", b"Basic ", b"URI=spiffe://cluster.local/ns/a/sa/b", b"By=", b";", b",", b"outbound|80||",
    b".svc.cluster.local", b"application/json", b"text/event-stream", b"multipart/form-data; boundary=x",
    b"application/x-www-form-urlencoded", b"charset=utf-16", b"charset=idna", b"jsonrpc", b"tools/call", b"tools/list",
    b"data: ", b"2024-05-01T10:00:00.123Z", b"0000-00-00T00:00:00Z", b"9999-12-31T23:59:59+23:59", b"stdout F ",
    b"stderr P ", b"/v1/chat/completions", b"/openai/deployments/x/", b"resourceSpans", b"intValue", b"stringValue",
)


# ---------------------------------------------------------------------- what a collector does next


@functools.cache
def _summarizer() -> Any:
    """The collector's summariser with its MCP tool and text scanners (``deploy.collect``), as deployed."""
    from deploy.collect import text_scanner, tool_scanner
    from ingest.summarize import Summarizer

    return Summarizer(tool_scanner=tool_scanner(), text_scanner=text_scanner())


def publishable(observations: Sequence[HttpObservation]) -> None:
    """Summarise and cut into envelopes by actor as a collector does; the rows are encoded in batches (``_ENVELOPES``)."""
    if not observations:
        return
    from ingest.envelopebuffer import EnvelopeBuffer

    rows = _summarizer().summarize_many(observations)
    buffer = EnvelopeBuffer(range(SUMMARIES.partitions), envelope_rows=100_000)
    buffer.add(rows, now=0.0)
    for envelope in buffer.drain():
        envelope.key.encode("utf-8")  # the Kafka key
    _ENVELOPES.add(rows)


def encodable(rows: list[dict[str, Any]]) -> None:
    """Rows encode as one envelope (``encode_rows``, the publisher's and the shim reporter's path) and the worker
    decodes it; an envelope that does not encode loses every row in it, other calls' too."""
    payload = encode_rows(rows)
    try:
        decode_message(payload, MAX_MESSAGE)
    except EnvelopeError as exc:
        raise Invariant(f"the worker refuses an envelope of rows a collector or the shim wrote: {exc}") from exc


_ENVELOPES = Batch(encodable)


def checked_rejects(rejects: Iterable[Rejected]) -> None:
    for rejected in rejects:
        if not rejected.reason or not isinstance(rejected.detail, str):
            raise Invariant(f"a rejected input without a reason: {rejected!r}"[:300])


# ---------------------------------------------------------------------- seeds shared by several targets


def _summaries() -> list[RequestSummary]:
    base = dict(id="r1", time=T0, source=Source(workload="shop/web", namespace="shop", ip="10.0.0.7"), principal="jwt:0011",
                destination=Destination(service="orders", namespace="shop"), method="GET", path_template="/orders/{id}")
    return [
        RequestSummary(**base),
        RequestSummary(**{**base, "id": "r2", "status": 200, "response_bytes": 512, "object_ids": ["a1", "b2"],
                          "sensitive": {"email": 2, "ssn": 1}, "redacted": {"email": 1}, "duration_ms": 3.5,
                          "inline_findings": ["inline:sqli"], "decision": "deny", "auth_type": "jwt"}),
        RequestSummary(**{**base, "id": "r3", "protocol": "mcp", "method": "POST", "path_template": "/mcp",
                          "mcp": McpExtras(jsonrpc_method="tools/call", tool_name="send", tools=[McpTool(name="send", hash="ab")])}),
        RequestSummary(**{**base, "id": "r4", "protocol": "llm", "method": "POST", "path_template": "/v1/chat/completions",
                          "llm": LlmExtras(model="gpt", input_tokens=10, output_tokens=3, tool_calls=["f"])}),
        RequestSummary(**{**base, "id": "r5", "source": Source(ip="203.0.113.9", external=True), "principal": None, "time": T0 + 86_400}),
    ]


def _summary_seeds() -> list[bytes]:
    import pyarrow as pa

    from ingest.envelope import SUMMARY_SCHEMA, encode_table, summary_to_row

    summaries = _summaries()
    seeds = [s.model_dump_json().encode() for s in summaries]
    seeds += [encode_envelope(summaries[:1]), encode_envelope(summaries), encode_envelope(summaries[2:4])]
    rows = [summary_to_row(s) for s in summaries[:2]]
    required = ("id", "time", "source", "destination", "method", "path_template")
    table = pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA).select(list(required))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:  # another producer's envelope: required columns only, uncompressed
        writer.write_table(table)
    seeds += [sink.getvalue().to_pybytes(), encode_table(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA))]
    seeds.append(json.dumps({**json.loads(seeds[0]), "time": "NaN", "extra": [1, 2]}).encode())
    return seeds


def dataset(path: Path, limit: int, step: int = 1) -> list[dict[str, Any]]:
    """Up to ``limit`` records of a shared data set, every ``step``-th (none when the data sets are absent)."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in itertools.islice(handle, 0, limit * step, step)]


def chunks(data: bytes, seed: int, cuts: int = 4) -> list[bytes]:
    """``data`` cut at a few points drawn from ``seed`` (the input's checksum: the same input cuts the same)."""
    rng = random.Random(seed)
    points = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(cuts + 1)))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


# ---------------------------------------------------------------------- summaries topic and worker


def _envelope(data: bytes) -> None:
    decode_message(data, MAX_MESSAGE)


@functools.cache
def _pipeline() -> Any:
    from streams.pipeline import Pipeline
    from streams.settings import WorkerSettings

    settings = WorkerSettings(verdict_key="fuzz-worker-key", max_message_bytes=MAX_MESSAGE, dlq_raw_cap=2 * MAX_MESSAGE,
                              inventory_interval_s=5.0)
    return Pipeline(settings, SUMMARIES.name)


def _worker(data: bytes) -> None:
    """A batch of up to four messages (separated by ``SEP``) through the worker; every one accounted for."""
    from ingest.schema import DeadLetter

    messages = data.split(SEP)[:4]
    pipeline = _pipeline()
    out = pipeline.handle_many(zlib.crc32(data) % 4, [(b"k%d" % i, m, i) for i, m in enumerate(messages)], time.time())
    bad, good_rows = set(), 0
    for i, message in enumerate(messages):
        try:
            good_rows += decode_message(message, MAX_MESSAGE).num_rows
        except EnvelopeError:
            bad.add(i)
    lettered, refused = set(), 0
    for _, letter in out.dead_letters:
        if not letter.error or not isinstance(letter.error, str):
            raise Invariant(f"a dead letter without a reason: {letter!r}"[:300])
        DeadLetter.model_validate_json(letter.model_dump_json())  # what the app sends to the dead-letter topic
        raw = base64.b64decode(letter.raw_b64)
        try:
            refused += decode_message(raw, MAX_MESSAGE).num_rows  # rows refused for their time: an envelope of them
        except EnvelopeError:
            lettered.add(letter.offset)
    if bad - lettered:
        raise Invariant(f"messages {sorted(bad - lettered)} of {len(messages)} did not decode and got no dead letter")
    if out.rows + refused != good_rows:
        raise Invariant(f"{good_rows} rows decoded, {out.rows} processed and {refused} dead-lettered")


def _worker_seeds() -> list[bytes]:
    singles = _summary_seeds()
    return singles + [pack(singles[0], singles[6]), pack(singles[6], b"not a summary", singles[1]), pack(singles[2], singles[-1])]


# ---------------------------------------------------------------------- control topics


def _verdicts() -> list[Verdict]:
    reason = Reason(detector="bola", score=0.9, evidence="12 objects of others")
    base = dict(id="v1", subject=Subject(kind="actor", value="shop/web|jwt:0011"), action="block", mode="enforce",
                expires_at=T0 + 1e9, issued_at=T0, evidence_time=T0 - 1, reasons=[reason])
    return [
        sign_verdict(Verdict(**base), KEY),
        sign_verdict(Verdict(**{**base, "id": "v2", "action": "throttle", "rate_per_s": 1.5, "burst": 3,
                                "subject": Subject(kind="ip", value="203.0.113.9")}), KEY),
        sign_verdict(Verdict(**{**base, "id": "v3", "scope": Scope(service="orders", path_template="/orders/{id}"),
                                "subject": Subject(kind="workload", value="shop/web")}), KEY),
        sign_verdict(Verdict(**{**base, "id": "v4", "action": "redact", "mode": "observe",
                                "subject": Subject(kind="principal", value="jwt:0011")}), KEY),
    ]


@functools.cache
def _control() -> Any:
    from enforcement.cache import VerdictCache
    from enforcement.control import ControlConsumer

    return ControlConsumer("127.0.0.1:1", VerdictCache(), KEY)


def _verdict_record(data: bytes) -> None:
    """One record of the verdict topic (key, value or tombstone; ``sign`` re-signs a value that parses, as a worker
    holding the key would), then a lookup of its subject in the cache."""
    fields = record(data) or {"value": data.decode("latin-1")}
    key, value = as_bytes(fields.get("key")), as_bytes(fields.get("value"))
    if fields.get("tombstone"):
        value = None
    verdict = None
    if value is not None and fields.get("sign"):
        try:
            verdict = sign_verdict(Verdict.model_validate_json(value), KEY)
            value = verdict.model_dump_json().encode()
        except ValueError:
            verdict = None
    control = _control()
    now = time.time()
    control.apply(key, value, now)
    if verdict is not None:
        scope = verdict.scope or Scope()
        control.cache.find((verdict.subject.cache_key, "ip:10.0.0.7"), scope.service, now, scope.path_template)
    if len(control.cache) > 10_000:
        control.cache.purge(now + 2e9)


def _verdict_seeds() -> list[bytes]:
    seeds = []
    for v in _verdicts():
        text = v.model_dump_json()
        seeds += [text.encode(), json.dumps({"key": v.entry_key, "value": text}).encode(),
                  json.dumps({"key": v.entry_key, "value": text, "sign": True}).encode(),
                  json.dumps({"key": v.entry_key, "tombstone": True}).encode()]
    return seeds


def _policy_record(data: bytes) -> None:
    from enforcement.cache import VerdictCache
    from enforcement.control import ControlConsumer

    fields = record(data) or {"key": "default", "value": data.decode("latin-1")}
    control = ControlConsumer("127.0.0.1:1", VerdictCache(), KEY, on_policy=lambda policy: None)
    value = None if fields.get("tombstone") else as_bytes(fields.get("value"))
    control.apply_policy(as_bytes(fields.get("key")), value)


def _policies() -> list[Policy]:
    return [Policy(), Policy(name="default", version="7", default_mode="enforce", modes={"shop": "observe", "shop/orders": "enforce"},
                             retired_endpoints=["orders GET /v1/orders"], actions={"exfiltration": "redact"},
                             user_expected_principals=["jwt:00"], approved_tools={"shop/mcp/send": "a" * 64})]


def _policy_seeds() -> list[bytes]:
    seeds = []
    for policy in _policies():
        text = policy.model_dump_json()
        seeds += [text.encode(), json.dumps({"key": policy.name, "value": text}).encode()]
    return seeds


#: where file targets write their inputs (in memory where there is /dev/shm), removed when the process ends
SCRATCH = Path(tempfile.mkdtemp(prefix="kubeward-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


def _policy_file(data: bytes) -> None:
    from ingest.policyfile import load_policy_file

    as_json = (data.lstrip()[:1] == b"{") != (zlib.crc32(data) % 8 == 0)  # mostly by content, one in eight the other way
    path = SCRATCH / ("policy.json" if as_json else "policy.yaml")
    path.write_bytes(data)
    load_policy_file(path)


def _policy_file_seeds() -> list[bytes]:
    yaml_text = ("name: default\nversion: 3\ndefault_mode: enforce  # a comment\nmodes:\n  shop: observe\n  shop/orders: enforce\n"
                 "verdict_ttl_s: 600\nthrottle_rate_per_s: 2.5\nretired_endpoints:\n  - orders GET /v1/orders\n"
                 "actions: {exfiltration: redact}\n")
    return [yaml_text.encode(), b"default_mode: observe\n", json.dumps(_policies()[1].model_dump(exclude={"schema_version"})).encode(),
            b"name: a\nname: b\n", b"- a\n- b\n", b"&a [*a]\n", b"modes:\n  Shop: enforce\n"]


# ---------------------------------------------------------------------- pod watch events


def _pod_event(data: bytes) -> None:
    from ingest.pods import PodDirectory

    event = record(data)
    directory = PodDirectory()
    directory.apply(event if event is not None else {"type": "ADDED", "object": data.decode("latin-1")})
    for ip in list(directory.snapshot())[:4]:
        directory.lookup(ip)


def _pod_seeds() -> list[bytes]:
    pod = {"metadata": {"name": "orders-7d9f-abcde", "namespace": "shop", "uid": "u1", "resourceVersion": "42",
                        "creationTimestamp": "2024-05-01T10:00:00Z", "labels": {"app.kubernetes.io/name": "orders"},
                        "ownerReferences": [{"kind": "ReplicaSet", "name": "orders-7d9f", "controller": True}]},
           "spec": {"serviceAccountName": "orders", "hostNetwork": False},
           "status": {"phase": "Running", "podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}, {"ip": "fd00::7"}]}}
    return [json.dumps({"type": t, "object": pod}).encode() for t in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")] + \
        [json.dumps({"type": "ERROR", "object": {"code": 410}}).encode()]


# ---------------------------------------------------------------------- registry


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("envelope_decode", _envelope, _summary_seeds, (EnvelopeError,), weight=2.0,
           what="ingest.envelope.decode_message: one summaries-topic message (Arrow IPC envelope or JSON)"),
    Target("worker_batch", _worker, _worker_seeds, weight=1.0,
           what="streams.pipeline.Pipeline.handle_many: a batch of messages; bad ones dead-lettered with a reason, rows accounted"),
    Target("verdict_record", _verdict_record, _verdict_seeds, weight=1.0,
           what="enforcement.control.ControlConsumer.apply: a verdict-topic record (key, value, tombstone), then a cache lookup"),
    Target("policy_record", _policy_record, _policy_seeds, weight=1.0,
           what="enforcement.control.ControlConsumer.apply_policy (ingest.policyfile.decode_snapshot, PolicyTracker)"),
    Target("policy_file", _policy_file, _policy_file_seeds, (SettingsError,), weight=0.5,
           what="ingest.policyfile.load_policy_file: a YAML or JSON policy file"),
    Target("pod_event", _pod_event, _pod_seeds, (PodEventError,), weight=0.5,
           what="ingest.pods.PodDirectory.apply: a Kubernetes pod watch event"),
)}
