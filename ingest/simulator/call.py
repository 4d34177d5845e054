"""The simulator's record of one call, ``SimCall``, and its conversion to summary rows.

A ``SimCall`` holds three groups of fields, kept apart on purpose:

* **the request**, what a traffic driver sends: caller workload, ip and
  principal, destination service, method, raw path, request size;
* **the server model**, the simulator's own guess at the answer (``status``,
  ``response_bytes``, ``sensitive``, ``object_ids``, ``duration_ms``;
  ``SERVER_MODEL_FIELDS``). Evaluation reads them today. No detector may: once
  the simulator drives real HTTP through a data plane, the summaries the worker
  sees are derived from what the server actually answered;
* **the ground truth** (``scenario``, ``attack_id``, ``malicious``), for the
  driver and the tally only; on a summary it travels in ``ground_truth``.

``to_row`` is the fast path to an envelope row (``RequestSummary.model_dump()``
shaped, object ids as keyed hashes by ``ingest.templating.hash_object_id``);
``to_summary`` the validated record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ingest.envelope import row_to_summary, summary_row
from ingest.schema import SCHEMA_VERSION, RequestSummary, actor_key
from ingest.simulator.catalog import Endpoint
from ingest.templating import hash_object_id

__all__ = ["SERVER_MODEL_FIELDS", "SimCall", "new_call"]

# the fields that model the server's answer: evaluation may read them, a detector never
SERVER_MODEL_FIELDS: tuple[str, ...] = ("status", "response_bytes", "sensitive", "object_ids", "duration_ms")


class _Keep(enum.Enum):
    """Sentinel: keep the call's own value (``None`` is a meaningful status)."""

    KEEP = "keep"


@dataclass(slots=True)
class SimCall:
    """One simulated L7 call: the request to send, the simulator's model of the answer, the ground truth."""

    # -- the request: what a traffic driver sends
    time: float
    source_workload: str | None
    source_namespace: str | None
    source_ip: str
    external: bool
    principal: str | None
    auth_type: str
    dest_service: str
    dest_namespace: str | None
    dest_external: bool
    method: str
    raw_path: str
    path_template: str  # the catalog's template of raw_path; a collector derives its own from raw_path
    request_bytes: int
    # -- the server model (SERVER_MODEL_FIELDS): the simulator's guess at the answer, not something a
    # detector may read; once the simulator drives real HTTP, summaries carry what the server answered
    status: int
    response_bytes: int
    sensitive: dict[str, int]
    object_ids: list[str]  # raw ids the call touched (path, or the records of a page)
    duration_ms: float
    # -- ground truth: for the driver and the tally, never for a detector
    scenario: str = "benign"
    attack_id: str | None = None
    malicious: bool = False

    @property
    def actor(self) -> str:
        """The actor key, ``ingest.schema.actor_key(workload or ip, principal)``."""
        return actor_key(self.source_workload or self.source_ip, self.principal)

    def hashed_ids(self, object_id_key: bytes) -> list[str]:
        """``ingest.templating.hash_object_id`` of each raw object id."""
        return [hash_object_id(o, object_id_key) for o in self.object_ids]

    def to_row(
        self,
        id: str,
        object_id_key: bytes,
        decision: str | None = None,
        reporter: str = "simulator",
        status: int | None | _Keep = _Keep.KEEP,
        response_bytes: int | None = None,
        sensitive: dict[str, int] | None = None,
        with_raw_path: bool = False,
    ) -> dict[str, Any]:
        """The ``RequestSummary.model_dump()`` dict built directly; the map fields (``sensitive``, ``redacted``) as (key, value) pairs."""
        ext = self.dest_external
        row = {
            "schema_version": SCHEMA_VERSION,
            "id": id,
            "time": self.time,
            "duration_ms": self.duration_ms,
            "reporter": reporter,
            "source": {"workload": self.source_workload, "namespace": self.source_namespace, "pod": None,
                       "ip": self.source_ip, "external": self.external},
            "principal": self.principal,
            "auth_type": self.auth_type,
            "destination": {"service": self.dest_service, "namespace": self.dest_namespace,
                            "host": self.dest_service if ext else None, "port": 443 if ext else None, "external": ext},
            "protocol": "http",
            "method": self.method,
            "path_template": self.path_template,
            "raw_path": self.raw_path if with_raw_path else None,
            "status": self.status if status is _Keep.KEEP else status,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes if response_bytes is None else response_bytes,
            "object_ids": self.hashed_ids(object_id_key),
            "sensitive": list((self.sensitive if sensitive is None else sensitive).items()),
            "inline_findings": [],
            "decision": decision,
            "mcp": None,
            "llm": None,
            "trace_id": None,
            "ground_truth": {"scenario": self.scenario, "attack_id": self.attack_id, "malicious": self.malicious},
        }
        for name, default in _OTHER_FIELDS:
            row[name] = default.copy() if isinstance(default, (list, dict)) else default
        return row

    def to_summary(
        self,
        id: str,
        object_id_key: bytes,
        decision: str | None = None,
        reporter: str = "simulator",
        status: int | None | _Keep = _Keep.KEEP,
        response_bytes: int | None = None,
        sensitive: dict[str, int] | None = None,
        with_raw_path: bool = False,
    ) -> RequestSummary:
        """The call as a ``RequestSummary``: object ids hashed, raw path dropped unless asked for."""
        return row_to_summary(self.to_row(id, object_id_key, decision, reporter, status, response_bytes, sensitive, with_raw_path))


def new_call(t: float, workload: str | None, ip: str, external: bool, principal: str | None, auth: str,
             ep: Endpoint, raw: str, ids: list[str], status: int, req: int, resp: int, sens: dict[str, int],
             ms: float, scenario: str = "benign", attack_id: str | None = None, malicious: bool = False) -> SimCall:
    """A call from ``workload`` (or an outside ``ip``) to ``ep``; the source namespace is the workload's."""
    # positional, in field order: 0.9 us per call against 3.1 us with keywords (22 fields, one per simulated call)
    return SimCall(t, workload, workload.partition("/")[0] if workload else None, ip, external, principal, auth,
                   ep.service, ep.namespace, ep.namespace is None, ep.method, raw, ep.template, req,
                   status, resp, sens, ids, ms, scenario, attack_id, malicious)


# Schema fields the simulator has nothing to say about (added to RequestSummary after ``to_row`` was
# written): ``to_row`` gives them the model's defaults, so its rows always match ``model_dump()``.
_OTHER_FIELDS: tuple[tuple[str, Any], ...] = ()  # empty while the probe row below is built
_OTHER_FIELDS = tuple(
    (name, default) for name, default in summary_row().items()
    if name not in new_call(0.0, None, "", False, None, "", Endpoint("", None, "", ""), "", [], 0, 0, 0, {}, 0.0).to_row("", b"")
)
