"""The collector's fast file path produces what the straightforward code produced.

Each shortcut taken for speed (``deploy/lab/bench_collectors.py``) is checked against a reference that
does the work the plain way, over rendered benchmark entries and hand-made edge cases: the summariser's
row against ``summary_row`` built field by field (as ``Summarizer.summarize`` did before it was
memoised), ``template_path`` against the per-segment ``_split_id`` walk, ``encode_rows`` against
``pa.Table.from_pylist`` (byte for byte), the inline CRI split against ``_cri``, ``split_address``
against its rules, and ``hash_object_id`` against a freshly keyed BLAKE2b.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from deploy.lab.bench_collectors import render_entries
from deploy.runtime.demoapi import mint_jwt
from ingest.bodies import query_object_ids
from ingest.collectors.accesslog import Rejected, split_address
from ingest.collectors.files import AccessLogFileSource
from ingest.envelope import SUMMARY_SCHEMA, encode_rows, encode_table, summary_row
from ingest.idblocks import object_blocks
from ingest.identity import IdentityConfig
from ingest.loginsubject import login_subject
from ingest.observation import HttpObservation
from ingest.summarize import Summarizer, SummarizerConfig, _login_failed
from ingest.templating import WEAK, _split_id, hash_object_id, template_path

SECRET = b"idp"


def _entry(**kw: Any) -> bytes:
    doc: dict[str, Any] = {
        "start_time": "2024-05-01T10:00:00.123Z", "method": "GET", "path": "/api/v1/orders/123",
        "authority": "orders.shop.svc.cluster.local:8080", "request_id": "r-edge", "response_code": 200,
        "bytes_received": 0, "bytes_sent": 10, "duration": 5, "upstream_cluster": "inbound|8080||orders.shop.svc.cluster.local",
        "downstream_peer_address": "10.244.0.5:4444",
    }
    doc.update(kw)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def _cri(message: bytes, flag: bytes = b"F", stream: bytes = b"stdout") -> bytes:
    return b"2024-05-01T10:00:00.123456789Z " + stream + b" " + flag + b" " + message + b"\n"


def _edge_lines() -> bytes:
    """Lines the benchmark never writes: partial CRI lines, IPv6 peers, other credentials, bad values, bad lines."""
    split = _entry(path="/api/v1/users/550e8400-e29b-41d4-a716-446655440000/items/42?user_id=7&ids=1,2,3&page=2")
    jwt = mint_jwt("user-edge", SECRET)
    lines = [
        _cri(split[:30], b"P") + _cri(split[30:70], b"P") + _cri(split[70:]),
        _cri(_entry(downstream_peer_address="[fd00::7]:8080", x_forwarded_for="203.0.113.9, 10.244.1.2")),
        _cri(_entry(downstream_peer_address="fd00::7", x_forwarded_for="2001:db8::1")),
        _cri(_entry(authorization="Bearer not-a-jwt-token")),
        _cri(_entry(authorization=f"Bearer {jwt}", x_forwarded_for="6.6.6.6, 198.51.100.4, 10.244.0.9")),
        _cri(_entry(authorization=f"Bearer {jwt[:-4]}AAAA")),
        _cri(_entry(authorization="Basic YWxpY2U6c2VjcmV0", path="/login", method="POST")),
        _cri(_entry(authorization="  basic YWxpY2U6c2VjcmV0", path="/api/v1/token")),
        _cri(_entry(authorization="Basic YWxpY2U6c2VjcmV0", path="/api/v1/orders")),
        _cri(_entry(authorization="Digest x", path="/login")),
        _cri(_entry(cookie="theme=dark; sessionid=abc123; x=1")),
        _cri(_entry(x_api_key="key-1", user_agent="curl/8")),
        _cri(_entry(x_forwarded_client_cert="By=spiffe://a/ns/x/sa/y;URI=spiffe://cluster.local/ns/shop/sa/frontend")),
        _cri(_entry(start_time=..., request_id=...)),
        _cri(_entry(method=...)),
        _cri(_entry(path="-")),
        _cri(_entry(response_code="404", bytes_sent="12", duration="7.5")),
        _cri(_entry(response_code="abc")),
        _cri(_entry(trace_id="-", request_id="-", authority="-")),
        _cri(_entry(trace_id="")),
        _cri(_entry(trace_id=5)),
        _cri(_entry(path="/Accounts/AC0123456789abcdef0123456789abcdef.json/2010-04-01/x@y.com/sha256:0123456789abcdef0123")),
        _cri(_entry(path="/a//b/{id}/\u00b2/v1beta1/report.csv/")),
        _cri(_entry(path="relative/123")),
        _cri(_entry(path="/", method="POST", response_code=201)),
        _cri(_entry(path="/api/v1/login", method="POST", response_code=401)),
        _cri(b'{"method": "GET", "path": "/x" broken json'),
        _cri(b"[1, 2]"),
        _cri(b"plain text from istio-proxy"),
        b"not a cri line at all\n",
        _entry(path="/plain/json/line") + b"\n",
        _cri(_entry(**{"x-envoy-origin-path": "/gw/path/9", "path": ..., ":authority": "gw.example.com", "user-agent": "gw",
                       "x-forwarded-for": "1.2.3.4", "x-request-id": "gw-1", "request_id": ...})),
        _cri(_entry(upstream_cluster=..., authority="10.1.2.3:8080")),
        _cri(_entry(upstream_cluster=..., authority="api.example.com")),
        _cri(_entry(x_kubeward_destination="shop/payments")),
        _cri(_entry(content_type="application/json", referer="https://x", traceparent="00-ab-cd-01")),
        _cri(_entry(response_content_type="text/html", duration=None)),
        _cri(_entry(downstream_peer_address=..., downstream_remote_address="10.0.0.9:1")),
        _cri(_entry(start_time="2024-05-01T12:00:00+02:00")),
        _cri(_entry(start_time="2024-05-01T10:00:00.123456Z")),
        _cri(_entry(start_time="bad time")),
        _cri(_entry(path="/q?user_id=%41%42&x=1&ids[]=4&ids[]=4")),
        _cri(_entry(path="/q?")),
        _cri(b"", b"F", b"stderr"),
        _cri(_entry(path="/stderr/1"), b"P", b"stderr") + _cri(b"", b"F", b"stderr"),
        _cri(_entry(path="/interleaved/1"), b"P", b"stderr") + _cri(_entry(path="/out/2")) + _cri(b"", b"F", b"stderr"),
    ]
    return b"".join(lines)


def _read(path: Path) -> tuple[list[HttpObservation], list[Rejected]]:
    rejects: list[Rejected] = []
    batches: list[list[HttpObservation]] = []
    source = AccessLogFileSource([str(path)], initial_position="beginning", on_reject=rejects.append, chunk_bytes=1 << 14)
    while source.poll_once(lambda observations: batches.append(list(observations))):
        pass
    source.close()
    return [o for batch in batches for o in batch], rejects


def _reference_row(s: Summarizer, obs: HttpObservation) -> dict[str, Any]:
    """``Summarizer.summarize`` before it was memoised, for observations without bodies (what access logs carry)."""
    assert obs.request_body is None and obs.response_body is None
    who = s.identities.resolve(obs.headers, obs.peer_ip)
    where = s.identities.destination(obs.headers, obs.route, obs.authority)
    service = where.service or "-"
    path, _, query = obs.path.partition("?")
    template, ids = template_path(path)
    if query:
        ids += query_object_ids(query)
    key = s.config.object_id_key
    ids = list(dict.fromkeys(ids))
    subject = login_subject(obs.method, path, obs.headers, obs.request_body, basic_anywhere=s.config.basic_auth_anywhere)
    outcome = "auth_failure" if s.config.learn_login_outcomes and _login_failed(obs.method, template, obs.status, None) else None
    return summary_row(
        id=obs.request_id or uuid.uuid4().hex, time=obs.time, duration_ms=obs.duration_ms, reporter=obs.reporter,
        source={"workload": who.workload, "namespace": who.namespace, "pod": who.pod, "ip": who.ip, "external": who.external},
        principal=who.principal, auth_type=who.auth_type,
        destination={"service": service, "namespace": where.namespace, "host": where.host, "external": where.external},
        method=obs.method, path_template=template, raw_path=obs.path if s.config.keep_raw_path else None, status=obs.status,
        request_bytes=obs.request_bytes, response_bytes=obs.response_bytes,
        object_ids=[hash_object_id(i, key) for i in ids], object_blocks=object_blocks(template, ids, key),
        object_ids_created=[], sensitive={}, response_properties=[], outcome=outcome,
        credential_subject=hash_object_id(subject, key) if subject is not None else None,
        inline_findings=list(obs.inline_findings), decision=obs.decision, mcp=None, llm=None, trace_id=obs.trace_id,
    )


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row with a generated id (no request id in the entry: a random uuid4) blanked."""
    return {**row, "id": "<generated>"} if row["id"] and len(row["id"]) == 32 and "-" not in row["id"] else row


@pytest.fixture(scope="module")
def read(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[HttpObservation], list[Rejected]]:
    path = tmp_path_factory.mktemp("speed") / "0.log"
    path.write_bytes(b"".join(render_entries(4000, identities=300)) + _edge_lines())
    return _read(path)


@pytest.mark.parametrize("config", [
    SummarizerConfig(),
    SummarizerConfig(identity=IdentityConfig(jwt_hs256_secret=SECRET, trusted_hops=1, trusted_proxies=("10.244.0.0/16",)),
                     keep_raw_path=True, basic_auth_anywhere=True, object_id_key=b"k" * 80),
], ids=["defaults", "checked-jwt-trusted-hops-raw-path"])
def test_rows_equal_the_field_by_field_rows(read: tuple[list[HttpObservation], list[Rejected]], config: SummarizerConfig) -> None:
    observations, _ = read
    pods = {"10.244.0.5": ("shop/frontend", "shop", "frontend-abc")}.get
    fast, reference = Summarizer(config, pods=pods), Summarizer(config, pods=pods)
    for _ in range(2):  # cold, then warm memos
        rows = fast.summarize_many(observations)
        expected = [_reference_row(reference, o) for o in observations]
        assert [_comparable(r) for r in rows] == [_comparable(r) for r in expected]
        assert all(list(r) == list(e) for r, e in zip(rows, expected))  # key order too
    assert sum(r["id"] == "<generated>" for r in map(_comparable, rows)) == 2  # no request id, "-"


def test_rows_do_not_share_mutable_parts(read: tuple[list[HttpObservation], list[Rejected]]) -> None:
    observations, _ = read
    rows = Summarizer().summarize_many(observations[:50] * 2)
    rows[0]["source"]["workload"] = "mutated"
    rows[0]["destination"]["service"] = "mutated"
    rows[0]["object_ids"].append("mutated")
    assert all(r["source"]["workload"] != "mutated" and r["destination"]["service"] != "mutated" for r in rows[1:])
    assert all("mutated" not in r["object_ids"] for r in rows[1:])


def test_edge_lines_parse_and_reject_as_before(read: tuple[list[HttpObservation], list[Rejected]]) -> None:
    observations, rejects = read
    assert len(observations) == 4000 + 37  # as the code before the speed work read them
    assert [r.reason for r in rejects] == ["missing_field", "missing_field", "bad_number", "bad_type", "bad_json", "not_json",
                                           "not_json", "not_json", "bad_time", "not_json"]
    joined = observations[4000]
    assert joined.path.startswith("/api/v1/users/550e8400") and joined.time == 1714557600.123
    by_path = {o.path: o for o in observations[4000:]}
    assert by_path["/stderr/1"].request_id == "r-edge" and "/interleaved/1" in by_path and "/out/2" in by_path
    peers = [o.peer_ip for o in observations[4001:4003]]
    assert peers == ["fd00::7", "fd00::7"]
    traces = [o.trace_id for o in observations if o.request_id == "r-edge" and o.path == "/api/v1/orders/123"]
    assert None in traces


@pytest.mark.parametrize("address, host", [
    ("10.0.0.7:5432", "10.0.0.7"), ("[fd00::1]:80", "fd00::1"), ("fd00::1", "fd00::1"), ("host", "host"), ("a:b:c", "a:b:c"),
    ("[x", ""), (":80", ""), ("a:", "a"), ("[::1]", "::1"),
])
def test_split_address(address: str, host: str) -> None:
    assert split_address(address) == host


def _segment_walk(path: str) -> tuple[str, list[str]]:
    segments, ids = [], []
    for seg in path.split("?", 1)[0].split("/"):
        found = _split_id(seg, WEAK) if seg else None
        if found is None:
            segments.append(seg)
        else:
            ids.append(found[0])
            segments.append("{id}" + found[1])
    return "/".join(segments) or "/", ids


def test_template_path_equals_the_segment_walk(read: tuple[list[HttpObservation], list[Rejected]]) -> None:
    paths = [o.path for o in read[0]] + ["", "/", "//", "/\u00b2", "/2010-04-01/x", "/v1/report.csv", "/CA0123456789.json?x=1", "/{id}/1"]
    for path in paths * 2:  # the second pass answers literal segments from the memo
        assert template_path(path) == _segment_walk(path)


@pytest.mark.parametrize("key", [b"kubeward-dev-object-key", b"", b"k" * 64, b"k" * 65])
def test_hash_object_id_equals_a_freshly_keyed_blake2b(key: bytes) -> None:
    fresh = hashlib.blake2b(key).digest() if len(key) > 64 else key
    for value in ("310017", "", "é" * 100, "x" * 300):
        assert hash_object_id(value, key) == hashlib.blake2b(value.encode(), key=fresh, digest_size=8).hexdigest()


def test_encode_rows_is_byte_identical_to_from_pylist(read: tuple[list[HttpObservation], list[Rejected]]) -> None:
    rows = Summarizer().summarize_many(read[0])
    for start in range(0, len(rows), 1000):
        chunk = rows[start:start + 1000]
        assert encode_rows(chunk) == encode_table(pa.Table.from_pylist(chunk, schema=SUMMARY_SCHEMA))
    partial = [{k: v for k, v in row.items() if k != "trace_id"} for row in rows[:10]]  # a row lacking a column
    assert encode_rows(partial) == encode_table(pa.Table.from_pylist(partial, schema=SUMMARY_SCHEMA))
    assert encode_rows([]) == encode_table(pa.Table.from_pylist([], schema=SUMMARY_SCHEMA))
