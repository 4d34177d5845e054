"""Shared unit-test fixtures: record factories and a clean environment.

Factories are fixtures that return callables, so a test states only what
matters to it (``summary_factory(principal=None, service="payments")``) and
everything else gets a sensible default.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pytest

from ingest import Destination, Reason, RequestSummary, Scope, Source, Subject, Verdict, decode_message, encode_envelope

#: a Unix time on a 60 s boundary, so windows in tests start where the test says
T0 = 1_699_999_980.0
assert T0 % 60 == 0

_SOURCE_KEYS = {"workload", "source_namespace", "pod", "ip", "source_external"}
_DEST_KEYS = {"service", "dest_namespace", "host", "port", "dest_external"}


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strip every ``KUBEWARD_`` variable so settings tests see only what they set (HTTPX's clean_environ)."""
    for name in list(os.environ):
        if name.upper().startswith("KUBEWARD_"):
            monkeypatch.delenv(name)


SummaryFactory = Callable[..., RequestSummary]


@pytest.fixture
def summary_factory() -> SummaryFactory:
    """``summary_factory(**overrides) -> RequestSummary`` with sensible defaults.

    Besides every ``RequestSummary`` field, flat shortcuts set the nested
    records: ``workload``, ``source_namespace``, ``pod``, ``ip``,
    ``source_external`` for ``source``; ``service``, ``dest_namespace``,
    ``host``, ``port``, ``dest_external`` for ``destination``.
    """
    counter = itertools.count()

    def make(**overrides: Any) -> RequestSummary:
        n = next(counter)
        src = {"workload": "shop/web", "source_namespace": "shop", "ip": "10.0.0.7"}
        dst = {"service": "orders", "dest_namespace": "shop"}
        for key in list(overrides):
            if key in _SOURCE_KEYS:
                src[key] = overrides.pop(key)
            elif key in _DEST_KEYS:
                dst[key] = overrides.pop(key)
        fields: dict[str, Any] = {
            "id": f"req-{n}",
            "time": T0 + 1.0,
            "source": Source(
                workload=src.get("workload"),
                namespace=src.get("source_namespace"),
                pod=src.get("pod"),
                ip=src.get("ip"),
                external=bool(src.get("source_external", False)),
            ),
            "principal": "alice",
            "destination": Destination(
                service=dst["service"],
                namespace=dst.get("dest_namespace"),
                host=dst.get("host"),
                port=dst.get("port"),
                external=bool(dst.get("dest_external", False)),
            ),
            "method": "GET",
            "path_template": "/orders/{id}",
            "status": 200,
            "response_bytes": 512,
        }
        fields.update(overrides)
        return RequestSummary(**fields)

    return make


def stolen_objects(summary_factory: SummaryFactory, thief: str = "mallory", owners: int = 100, t: float = T0 + 1,
                   step: float = 0.01, key: bytes = b"k") -> tuple[list[RequestSummary], list[RequestSummary]]:
    """BOLA as it looks in traffic: ``owners`` users each create an order (POST, 201, its id in the answer,
    so ``streams.ownership`` learns the owner) at ``t - 1``, then from ``t`` on ``thief`` reads every one of them (200).

    Returns (creations, thefts); a volume of reads of nobody's objects is no BOLA (issue 7), this is.
    """
    from ingest import hash_object_id

    ids = [hash_object_id(f"{thief}-{u}", key) for u in range(owners)]
    made = [summary_factory(principal=f"owner-{u}", time=t - 1, method="POST", path_template="/orders", status=201, object_ids_created=[oid])
            for u, oid in enumerate(ids)]
    read = [summary_factory(principal=thief, time=t + i * step, object_ids=[oid]) for i, oid in enumerate(ids)]
    return made, read


VerdictFactory = Callable[..., Verdict]


@pytest.fixture
def verdict_factory() -> VerdictFactory:
    """``verdict_factory(**overrides) -> Verdict``: a block of actor ``shop/web|alice`` for 15 minutes."""
    counter = itertools.count()

    def make(**overrides: Any) -> Verdict:
        n = next(counter)
        fields: dict[str, Any] = {
            "id": f"verdict-{n}",
            "subject": Subject(kind="actor", value="shop/web|alice"),
            "action": "block",
            "mode": "enforce",
            "expires_at": T0 + 900.0,
            "reasons": [Reason(detector="bola_breadth", score=0.8, evidence="distinct_objects=100 in window")],
            "issued_at": T0,
            "evidence_time": T0,
        }
        if isinstance(overrides.get("scope"), str):
            overrides["scope"] = Scope(service=overrides["scope"])
        fields.update(overrides)
        return Verdict(**fields)

    return make


TableOf = Callable[[Sequence[RequestSummary]], pa.Table]


@pytest.fixture
def table_of() -> TableOf:
    """Summaries to the Arrow table a worker sees: ``encode_envelope`` then ``decode_message``."""

    def make(summaries: Sequence[RequestSummary]) -> pa.Table:
        return decode_message(encode_envelope(list(summaries)), max_bytes=1 << 30)

    return make


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``kubeward ARGV...`` in process: (exit code, stdout, stderr)."""
    from deploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()
