"""Workload identity from pod IPs: a directory fed by Kubernetes pod list/watch events.

Contract
--------
:class:`PodDirectory` maps a pod IP to a :class:`PodIdentity` (namespace, pod, workload,
service account). :meth:`PodDirectory.lookup` is one ``dict.get``: the shim and the collectors
call it per request. Pods arrive as plain dicts, either raw API JSON (``podIPs``, camelCase)
or the ``kubernetes`` client's ``.to_dict()`` (``pod_ips``, or ``pod_i_ps`` before
client 35, snake_case); both are read.

* :meth:`PodDirectory.apply` takes one watch event (``ADDED`` / ``MODIFIED`` / ``DELETED``;
  ``BOOKMARK`` only advances :attr:`PodDirectory.resource_version`); ``ERROR`` and unknown types
  raise :class:`PodEventError`. :meth:`PodDirectory.replace_all` rebuilds everything from a relist.
* Every address in ``status.podIPs`` and ``status.podIP`` is mapped (IPv4 and IPv6), in the
  canonical text ``inet_ntop`` writes, which is how socket peer addresses read (``fd00::a``).
  Pods without an IP yet map nothing.
* When several known pods claim one IP (a pod deleted, its IP reused before the old pod's
  ``DELETED`` arrived), the newest wins: running before finished or terminating, then the later
  ``creationTimestamp``, then the later one seen. Pods are tracked by ``uid``, so a late
  ``DELETED`` of the old pod removes only the old pod's claim and never the new pod's entry.
* ``hostNetwork`` pods share their node's IP: such an IP is *ambiguous* and
  :meth:`PodDirectory.lookup` returns ``None`` for it (:meth:`PodDirectory.is_ambiguous` says why).
* ``workload`` is ``namespace/name`` of the owner: a ReplicaSet's name without its
  pod-template-hash (the Deployment), a StatefulSet / DaemonSet / ReplicationController name, a
  Job's name or, for a CronJob's Job (``<cronjob>-<minutes>``), the CronJob's name; other pods use
  the ``app.kubernetes.io/name`` or ``app`` label, else the pod's own name.

Threads: one writer (the watch thread) and any number of readers. Readers only touch the
IP map, which the writer changes by single-key assignment or deletion, or replaces by one
attribute swap (:meth:`replace_all`); both are atomic in CPython.

Errors::

    IngestError
     └── PodEventError   a watch event has an unknown type, is an ERROR, or has no pod
"""

from __future__ import annotations

import itertools
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from ingest.errors import IngestError

__all__ = ["PodDirectory", "PodEventError", "PodIdentity", "workload_of"]

# Characters of a pod-template-hash (apimachinery's SafeEncodeString alphabet).
_HASH_SUFFIX = re.compile(r"^(?P<base>.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}$")
# A CronJob names its Jobs ``<cronjob>-<scheduled time in minutes since the epoch>``.
_CRONJOB_SUFFIX = re.compile(r"^(?P<base>.+)-\d{8,}$")
_NAMED_OWNERS = frozenset({"StatefulSet", "DaemonSet", "ReplicationController"})
_FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
_NAME_LABELS = ("app.kubernetes.io/name", "app")


class PodEventError(IngestError):
    """A watch event cannot be applied: unknown or ERROR type, or no pod object."""


@dataclass(frozen=True, slots=True)
class PodIdentity:
    """Who sends from a pod IP: its namespace, pod name, owning workload and service account."""

    namespace: str
    pod: str
    workload: str
    service_account: str


@dataclass(frozen=True, slots=True)
class _Pod:
    """What the writer keeps per pod uid."""

    uid: str
    identity: PodIdentity
    ips: tuple[str, ...]
    host_network: bool
    rank: tuple[bool, float, int]


def _field(obj: Mapping[str, Any] | None, *names: str) -> Any:
    """The first of ``names`` present in ``obj``: the raw JSON name, then the ``.to_dict()`` spellings."""
    if obj:
        for name in names:
            value = obj.get(name)
            if value is not None:
                return value
    return None


def _timestamp(value: Any) -> float:
    """Seconds since the epoch of a ``creationTimestamp`` (RFC 3339 text or ``datetime``); 0 if absent."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


def _canonical_ip(value: Any) -> str | None:
    """The text ``inet_ntop`` writes for an IP address (as socket peer addresses read), or ``None``."""
    if not isinstance(value, str) or not value:
        return None
    family = socket.AF_INET6 if ":" in value else socket.AF_INET
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, value))
    except (OSError, ValueError):
        return None


def _pod_ips(status: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Every distinct valid address of ``status.podIPs`` and ``status.podIP``, in order."""
    listed = _field(status, "podIPs", "pod_ips", "pod_i_ps") or []
    raw = [_field(entry, "ip") for entry in listed if isinstance(entry, Mapping)]
    raw.append(_field(status, "podIP", "pod_ip"))
    canonical = (_canonical_ip(value) for value in raw)
    return tuple(dict.fromkeys(ip for ip in canonical if ip is not None))


def _controller_owner(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference with ``controller: true``, else the first one, else ``None``."""
    owners = [ref for ref in (_field(meta, "ownerReferences", "owner_references") or []) if isinstance(ref, Mapping)]
    return next((ref for ref in owners if ref.get("controller")), owners[0] if owners else None)


def _strip(pattern: re.Pattern[str], name: str) -> str:
    match = pattern.match(name)
    return match.group("base") if match else name


def _owner_name(owner: Mapping[str, Any], labels: Mapping[str, Any]) -> str | None:
    """The workload name an owner reference stands for, or ``None`` for other owner kinds."""
    kind, name = owner.get("kind"), owner.get("name")
    if not isinstance(name, str) or not name:
        return None
    if kind == "ReplicaSet":
        template_hash = labels.get("pod-template-hash")
        if isinstance(template_hash, str) and template_hash and name.endswith("-" + template_hash):
            return name[: -len(template_hash) - 1]
        return _strip(_HASH_SUFFIX, name)
    if kind == "Job":
        return _strip(_CRONJOB_SUFFIX, name)
    return name if kind in _NAMED_OWNERS else None


def workload_of(pod: Mapping[str, Any]) -> str:
    """``namespace/name`` of the workload that owns ``pod`` (see the module docstring for the rules)."""
    meta = _field(pod, "metadata") or {}
    labels = meta.get("labels") or {}
    owner = _controller_owner(meta)
    name = _owner_name(owner, labels) if owner is not None else None
    if name is None:
        name = next((labels[key] for key in _NAME_LABELS if isinstance(labels.get(key), str) and labels[key]), None)
    namespace = meta.get("namespace") or "default"
    return f"{namespace}/{name or meta.get('name') or ''}"


def _parse(pod: Mapping[str, Any], seq: int) -> _Pod:
    """The writer's record of one pod dict; ``seq`` orders pods seen at the same instant."""
    meta = _field(pod, "metadata") or {}
    spec = _field(pod, "spec") or {}
    status = _field(pod, "status") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
    account = _field(spec, "serviceAccountName", "service_account_name") or _field(spec, "serviceAccount", "service_account")
    identity = PodIdentity(namespace, name, workload_of(pod), account or "default")
    live = status.get("phase") not in _FINISHED_PHASES and not _field(meta, "deletionTimestamp", "deletion_timestamp")
    created = _timestamp(_field(meta, "creationTimestamp", "creation_timestamp"))
    uid = meta.get("uid") or f"{namespace}/{name}"
    host_network = bool(_field(spec, "hostNetwork", "host_network"))
    return _Pod(uid, identity, _pod_ips(status), host_network, (live, created, seq))


class PodDirectory:
    """Pod IP → :class:`PodIdentity`, kept current by list/watch events (one writer, many readers)."""

    def __init__(self) -> None:
        self._by_ip: dict[str, PodIdentity] = {}
        self._ambiguous: frozenset[str] = frozenset()
        self._pods: dict[str, _Pod] = {}
        self._claims: dict[str, set[str]] = {}
        self._seq = itertools.count()
        self.resource_version: str | None = None
        """The ``resourceVersion`` of the last list or event applied (where a watch resumes)."""

    # ------------------------------------------------------------------ readers

    def lookup(self, ip: str) -> PodIdentity | None:
        """The identity of the pod that owns ``ip`` (canonical text form), or ``None``."""
        return self._by_ip.get(ip)

    def is_ambiguous(self, ip: str) -> bool:
        """True when ``ip`` is shared by hostNetwork pods (a node IP), so no pod is named for it."""
        return ip in self._ambiguous

    def snapshot(self) -> Mapping[str, PodIdentity]:
        """A read-only copy of the current IP map, taken in one step (safe while the writer runs)."""
        return MappingProxyType(dict(self._by_ip))

    def __len__(self) -> int:
        """The number of IPs that map to a pod."""
        return len(self._by_ip)

    @property
    def pod_count(self) -> int:
        """The number of pods known (with or without IPs)."""
        return len(self._pods)

    # ------------------------------------------------------------------ writer

    def apply(self, event: Mapping[str, Any]) -> None:
        """Apply one watch event ``{"type": ..., "object": pod}``; raise :class:`PodEventError` if it cannot be."""
        kind, pod = event.get("type"), event.get("object")
        if kind == "ERROR":
            raise PodEventError(f"watch event type='ERROR': {pod!r}")
        if not isinstance(pod, Mapping):
            raise PodEventError(f"watch event type={kind!r} has object={pod!r}, expected a pod dict")
        if kind in ("ADDED", "MODIFIED"):
            self._upsert(_parse(pod, next(self._seq)))
        elif kind == "DELETED":
            self._remove(_parse(pod, 0).uid)
        elif kind != "BOOKMARK":
            raise PodEventError(f"watch event type={kind!r} is not ADDED, MODIFIED, DELETED, BOOKMARK or ERROR")
        version = _field(_field(pod, "metadata"), "resourceVersion", "resource_version")
        if version:
            self.resource_version = str(version)

    def replace_all(self, pods: Iterable[Mapping[str, Any]], resource_version: str | None) -> None:
        """Replace everything with the pods of a fresh list taken at ``resource_version``."""
        fresh = PodDirectory()
        fresh._seq = self._seq
        for pod in pods:
            fresh._upsert(_parse(pod, next(self._seq)))
        self._pods, self._claims = fresh._pods, fresh._claims
        self._ambiguous = fresh._ambiguous
        self._by_ip = fresh._by_ip  # the one swap readers see
        self.resource_version = resource_version

    def _upsert(self, pod: _Pod) -> None:
        old = self._pods.get(pod.uid)
        if old is not None:  # keep the first-seen order so a MODIFIED does not outrank a newer pod
            pod = _Pod(pod.uid, pod.identity, pod.ips, pod.host_network, pod.rank[:2] + old.rank[2:])
        self._pods[pod.uid] = pod
        stale = set(old.ips) - set(pod.ips) if old is not None else set()
        for ip in stale:
            self._claims.get(ip, set()).discard(pod.uid)
        for ip in pod.ips:
            self._claims.setdefault(ip, set()).add(pod.uid)
        self._resolve(stale | set(pod.ips))

    def _remove(self, uid: str) -> None:
        old = self._pods.pop(uid, None)
        if old is None:
            return
        for ip in old.ips:
            self._claims.get(ip, set()).discard(uid)
        self._resolve(set(old.ips))

    def _resolve(self, ips: set[str]) -> None:
        """Recompute the owner of each IP in ``ips`` from its claims."""
        shared: set[str] = set()
        for ip in ips:
            claimants = [self._pods[uid] for uid in self._claims.get(ip, ())]
            if not claimants:
                self._claims.pop(ip, None)
                self._by_ip.pop(ip, None)
            elif any(pod.host_network for pod in claimants):
                shared.add(ip)
                self._by_ip.pop(ip, None)
            else:
                self._by_ip[ip] = max(claimants, key=lambda pod: pod.rank).identity
        if shared != (ips & self._ambiguous):  # rebuild the ambiguous set only when it changes
            self._ambiguous = frozenset((self._ambiguous - ips) | shared)
