"""Regenerate the Python modules of ``ingest/proto/*.proto`` (edge tool; needs grpcio-tools).

Run ``python -m ingest.proto.generate`` from the repository root after editing a
``.proto`` file, and commit the results. ``generate(out_root)`` writes
``<out_root>/ingest/proto/<name>_pb2.py``, ``_pb2.pyi`` and ``_pb2_grpc.py`` for
every ``.proto`` here. Protoc runs with the repository root as the include path,
so generated imports are absolute (``from ingest.proto import envoy_core_pb2``)
and work as a package without rewriting. Two edits follow protoc: descriptors are
registered in ``ingest.proto.pool.POOL`` instead of protobuf's default pool (see
``ingest.proto.pool`` for why), and the ``.pyi`` stubs and gRPC modules start with
``# mypy: ignore-errors`` (generated code is not held to ``--strict``; the types
it declares are still used when checking our modules). Tests regenerate into a
temporary directory and compare, so the committed files cannot drift from the
``.proto`` files. The output names the grpcio-tools and protobuf versions that
made it (and checks them at import), so the dev extra pins grpcio-tools exactly.
"""

from __future__ import annotations

import sys
import tempfile
from importlib import resources
from pathlib import Path

__all__ = ["PROTO_DIR", "generate", "main"]

PROTO_DIR = Path(__file__).resolve().parent
_REPO_ROOT = PROTO_DIR.parents[1]
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_NO_STRICT = "# mypy: ignore-errors\n"
_OUR_POOL = "from ingest.proto.pool import POOL as _POOL  # Kubeward: our own pool, see ingest/proto/pool.py\nDESCRIPTOR = _POOL.AddSerializedFile("


def _protoc(out_root: Path, protos: list[Path]) -> None:
    from grpc_tools import protoc

    include = str(resources.files("grpc_tools") / "_proto")
    args = ["grpc_tools.protoc", f"-I{_REPO_ROOT}", f"-I{include}", f"--python_out={out_root}", f"--pyi_out={out_root}", f"--grpc_python_out={out_root}"]
    args += [str(p.relative_to(_REPO_ROOT)) for p in protos]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {[p.name for p in protos]} (args {args})")


def _use_our_pool(path: Path) -> None:
    text = path.read_text()
    if text.count(_DEFAULT_POOL) != 1:
        raise RuntimeError(f"{path}: expected one default-pool registration line, protoc's output changed")
    path.write_text(text.replace(_DEFAULT_POOL, _OUR_POOL))


def generate(out_root: Path) -> list[Path]:
    """Generate every module under ``out_root/ingest/proto``; return the written files, sorted."""
    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files in {PROTO_DIR}")
    out_root.mkdir(parents=True, exist_ok=True)
    _protoc(out_root, protos)
    out_dir = out_root / "ingest" / "proto"
    for stub in out_dir.glob("*_pb2_grpc.py"):
        if "def add_" not in stub.read_text():  # a .proto without a service: nothing to serve
            stub.unlink()
    written = sorted(out_dir.glob("*_pb2*.py*"))
    for path in written:
        if path.name.endswith("_pb2.py"):
            _use_our_pool(path)
        else:
            path.write_text(_NO_STRICT + path.read_text())
    return written


def main() -> int:
    """Regenerate in place (through a temporary directory, so a failure leaves the old files)."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            target = PROTO_DIR / path.name
            target.write_bytes(path.read_bytes())
            print(f"wrote {target.relative_to(_REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
