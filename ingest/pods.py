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
* Each field read must have the JSON type the API server sends, or be absent: ``metadata``,
  ``spec``, ``status`` and ``labels`` objects; ``ownerReferences`` and ``podIPs`` lists of
  objects; ``namespace``, ``name``, ``uid``, ``resourceVersion``, the service account, an owner's
  ``kind`` and ``name``, ``phase`` and each ``ip`` strings; ``hostNetwork`` a boolean. Any other
  type raises :class:`PodEventError` naming the field (the watch counts it and relists), never a
  ``TypeError`` from deep inside. A string that is no IP address is only skipped (above).

Threads: one writer (the watch thread) and any number of readers. Readers only touch the
IP map, which the writer changes by single-key assignment or deletion, or replaces by one
attribute swap (:meth:`replace_all`); both are atomic in CPython.

Errors::

    IngestError
     └── PodEventError   a watch event has an unknown type, is an ERROR, has no pod, or a pod field of the wrong type
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
    """A watch event cannot be applied: unknown or ERROR type, no pod object, or a pod field of the wrong type."""


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


def _bad(path: str, value: Any, expected: str) -> PodEventError:
    return PodEventError(f"pod field {path}={value!r:.80} is not {expected}")


def _mapping(obj: Mapping[str, Any], path: str, *names: str) -> Mapping[str, Any]:
    """``_field(obj, *names)`` when it is a mapping, ``{}`` when absent; another type raises :class:`PodEventError`."""
    value = _field(obj, *names)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(path, value, "an object")
    return value


def _mappings(obj: Mapping[str, Any], path: str, *names: str) -> list[Mapping[str, Any]]:
    """``_field(obj, *names)`` when it is a list of mappings, ``[]`` when absent; else :class:`PodEventError`."""
    value = _field(obj, *names)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, Mapping) for item in value):
        raise _bad(path, value, "a list of objects")
    return list(value)


def _text(obj: Mapping[str, Any], path: str, *names: str) -> str | None:
    """``_field(obj, *names)`` when it is a string, ``None`` when absent; another type raises :class:`PodEventError`."""
    value = _field(obj, *names)
    if value is None or isinstance(value, str):
        return value
    raise _bad(path, value, "a string")


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


def _pod_ips(status: Mapping[str, Any]) -> tuple[str, ...]:
    """Every distinct valid address of ``status.podIPs`` and ``status.podIP``, in order."""
    listed = _mappings(status, "status.podIPs", "podIPs", "pod_ips", "pod_i_ps")
    raw = [_text(entry, "status.podIPs[].ip", "ip") for entry in listed]
    raw.append(_text(status, "status.podIP", "podIP", "pod_ip"))
    canonical = (_canonical_ip(value) for value in raw)
    return tuple(dict.fromkeys(ip for ip in canonical if ip is not None))


def _controller_owner(meta: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference with ``controller: true``, else the first one, else ``None``."""
    owners = _mappings(meta, "metadata.ownerReferences", "ownerReferences", "owner_references")
    return next((ref for ref in owners if ref.get("controller")), owners[0] if owners else None)


def _strip(pattern: re.Pattern[str], name: str) -> str:
    match = pattern.match(name)
    return match.group("base") if match else name


def _owner_name(owner: Mapping[str, Any], labels: Mapping[str, Any]) -> str | None:
    """The workload name an owner reference stands for, or ``None`` for other owner kinds."""
    kind = _text(owner, "metadata.ownerReferences[].kind", "kind")
    name = _text(owner, "metadata.ownerReferences[].name", "name")
    if not name:
        return None
    if kind == "ReplicaSet":
        template_hash = labels.get("pod-template-hash")
        if isinstance(template_hash, str) and template_hash and name.endswith("-" + template_hash):
            return name[: -len(template_hash) - 1]
        return _strip(_HASH_SUFFIX, name)
    if kind == "Job":
        return _strip(_CRONJOB_SUFFIX, name)
    return name if kind in _NAMED_OWNERS else None


def _namespace_and_name(meta: Mapping[str, Any]) -> tuple[str, str]:
    return _text(meta, "metadata.namespace", "namespace") or "default", _text(meta, "metadata.name", "name") or ""


def _workload(meta: Mapping[str, Any]) -> str:
    labels = _mapping(meta, "metadata.labels", "labels")
    owner = _controller_owner(meta)
    name = _owner_name(owner, labels) if owner is not None else None
    if name is None:
        name = next((labels[key] for key in _NAME_LABELS if isinstance(labels.get(key), str) and labels[key]), None)
    namespace, pod_name = _namespace_and_name(meta)
    return f"{namespace}/{name or pod_name}"


def workload_of(pod: Mapping[str, Any]) -> str:
    """``namespace/name`` of the workload that owns ``pod`` (see the module docstring for the rules).

    Raises :class:`PodEventError` when a field it reads has the wrong type.
    """
    return _workload(_mapping(pod, "metadata", "metadata"))


def _parse(pod: Mapping[str, Any], seq: int) -> _Pod:
    """The writer's record of one pod dict; ``seq`` orders pods seen at the same instant.

    Raises :class:`PodEventError` when the pod or a field it reads has the wrong type (see the module docstring).
    """
    if not isinstance(pod, Mapping):
        raise PodEventError(f"pod={pod!r:.80} is not an object")
    meta, spec, status = (_mapping(pod, part, part) for part in ("metadata", "spec", "status"))
    namespace, name = _namespace_and_name(meta)
    account = _text(spec, "spec.serviceAccountName", "serviceAccountName", "service_account_name") or \
        _text(spec, "spec.serviceAccount", "serviceAccount", "service_account")
    identity = PodIdentity(namespace, name, _workload(meta), account or "default")
    phase = _text(status, "status.phase", "phase")
    live = phase not in _FINISHED_PHASES and not _field(meta, "deletionTimestamp", "deletion_timestamp")
    created = _timestamp(_field(meta, "creationTimestamp", "creation_timestamp"))
    uid = _text(meta, "metadata.uid", "uid") or f"{namespace}/{name}"
    host_network = _field(spec, "hostNetwork", "host_network")
    if not isinstance(host_network, bool | None):
        raise _bad("spec.hostNetwork", host_network, "a boolean")
    return _Pod(uid, identity, _pod_ips(status), bool(host_network), (live, created, seq))


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
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            raise PodEventError(f"watch event type={kind!r} is not ADDED, MODIFIED, DELETED, BOOKMARK or ERROR")
        # read (and type-checked) before anything changes, as _parse is: a bad event leaves the directory as it was
        version = _text(_mapping(pod, "metadata", "metadata"), "metadata.resourceVersion", "resourceVersion", "resource_version")
        if kind in ("ADDED", "MODIFIED"):
            self._upsert(_parse(pod, next(self._seq)))
        elif kind == "DELETED":
            self._remove(_parse(pod, 0).uid)
        if version:
            self.resource_version = version

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
