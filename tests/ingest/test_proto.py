"""ingest/proto: the committed generated modules match the .proto files, and live in a pool of their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ingest.proto import envoy_accesslog_pb2, envoy_als_pb2, envoy_auth_pb2, envoy_core_pb2, envoy_ext_proc_pb2
from ingest.proto.generate import PROTO_DIR, generate
from ingest.proto.pool import POOL

ROOT = Path(__file__).resolve().parents[2]


def test_regenerating_yields_the_committed_files(tmp_path: Path) -> None:
    """Edit a .proto without running ``python -m ingest.proto.generate`` and this fails."""
    written = generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in written}
    committed = {p.name: p.read_bytes() for p in PROTO_DIR.glob("*_pb2*.py*")}
    assert sorted(fresh) == sorted(committed), "generated file set differs; run python -m ingest.proto.generate"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"stale generated files {stale}; run python -m ingest.proto.generate"


def test_every_proto_has_the_subset_header_and_a_pb2_module() -> None:
    for proto in sorted(PROTO_DIR.glob("*.proto")):
        text = proto.read_text()
        assert "wire-compatible subset" in text and "Mirrors:" in text, f"{proto.name} lacks the header naming what it mirrors"
        assert (PROTO_DIR / f"{proto.stem}_pb2.py").exists(), f"{proto.name} was never generated"


@pytest.mark.parametrize(
    ("module", "service", "method", "streaming"),
    [
        (envoy_auth_pb2, "envoy.service.auth.v3.Authorization", "Check", (False, False)),
        (envoy_als_pb2, "envoy.service.accesslog.v3.AccessLogService", "StreamAccessLogs", (True, False)),
        (envoy_ext_proc_pb2, "envoy.service.ext_proc.v3.ExternalProcessor", "Process", (True, True)),
    ],
)
def test_service_paths_are_envoys(module: object, service: str, method: str, streaming: tuple[bool, bool]) -> None:
    """The gRPC path Envoy calls is /<package>.<Service>/<Method>: names must be exactly Envoy's."""
    (found,) = module.DESCRIPTOR.services_by_name.values()  # type: ignore[attr-defined]
    assert found.full_name == service
    rpc = found.methods_by_name[method]
    assert (rpc.client_streaming, rpc.server_streaming) == streaming


def test_field_numbers_that_differ_from_older_envoy_versions() -> None:
    """Spot checks against Envoy 1.40.0 (the whole subset was compared with the binary's descriptors)."""
    common = envoy_accesslog_pb2.AccessLogCommon.DESCRIPTOR.fields_by_name
    assert common["intermediate_log_entry"].number == 27 and common["duration"].number == 23
    request = envoy_ext_proc_pb2.ProcessingRequest.DESCRIPTOR.fields_by_name
    assert (request["request_headers"].number, request["observability_mode"].number) == (2, 10)
    assert envoy_core_pb2.HeaderValue.DESCRIPTOR.fields_by_name["raw_value"].number == 3
    assert envoy_auth_pb2.AttributeContext.HttpRequest.DESCRIPTOR.fields_by_name["header_map"].number == 13


def test_unknown_fields_from_the_full_api_are_skipped() -> None:
    """A full Envoy message carries fields the subset omits; parsing keeps ours and skips the rest."""
    ours = envoy_core_pb2.HeaderValue(key="x-a", value="1").SerializeToString()
    unknown = b"\x98\x06\x01"  # field 99 (tag 99 << 3 = 792 as a varint: 0x98 0x06), varint value 1
    parsed = envoy_core_pb2.HeaderValue.FromString(unknown + ours)
    assert (parsed.key, parsed.value) == ("x-a", "1")


def test_descriptors_live_in_kubewards_pool_not_the_default_one() -> None:
    assert POOL.FindMessageTypeByName("google.rpc.Status") is not None
    assert envoy_auth_pb2.DESCRIPTOR.pool is POOL


def test_a_conflicting_upstream_definition_in_the_default_pool_does_not_break_imports() -> None:
    """googleapis-common-protos (google.rpc.Status) or xds-protos (envoy.*) may register the full types."""
    code = """
from google.protobuf import descriptor_pb2, descriptor_pool
for package, name in (("google.rpc", "Status"), ("envoy.config.core.v3", "HeaderValue")):
    fd = descriptor_pb2.FileDescriptorProto(name=f"upstream/{package}.proto", package=package, syntax="proto3")
    message = fd.message_type.add(name=name)
    message.field.add(name="other", number=7, type=9, label=1)
    descriptor_pool.Default().AddSerializedFile(fd.SerializeToString())
from ingest.proto import envoy_auth_pb2
print(envoy_auth_pb2.CheckResponse(status={"code": 7}).status.code)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "7"
