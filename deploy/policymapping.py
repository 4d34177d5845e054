"""How workload names become pod selectors, mTLS principals and ports in suggested policy (``kubeward policy suggest
--mapping FILE``): by default pods are selected by ``app.kubernetes.io/name`` = workload name, the service account is
the workload name, ports are those seen in traffic, else the named port ``http``; a mapping file overrides any of
them per workload, read strictly (an unknown key or a bad value names itself). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import SettingsError

__all__ = ["PolicyMapping", "Port", "WorkloadMapping", "mapping_from_dict"]

Port = int | str


@dataclass(frozen=True)
class WorkloadMapping:
    """Overrides for one workload: its pods' labels, service account, serving ports."""

    labels: Mapping[str, str] | None = None
    service_account: str | None = None
    ports: tuple[Port, ...] = ()


@dataclass(frozen=True)
class PolicyMapping:
    """How workload names become selectors, principals and ports (see the module docstring)."""

    trust_domain: str = "cluster.local"
    label: str = "app.kubernetes.io/name"
    default_port: Port = "http"
    workloads: Mapping[str, WorkloadMapping] = field(default_factory=dict)

    def _of(self, namespace: str, name: str) -> WorkloadMapping:
        return self.workloads.get(f"{namespace}/{name}") or WorkloadMapping()

    def labels(self, namespace: str, name: str) -> dict[str, str]:
        """The labels that select the workload's pods."""
        return dict(self._of(namespace, name).labels or {self.label: name})

    def principal(self, namespace: str, name: str) -> str:
        """The workload's mTLS principal as Istio names it."""
        return f"{self.trust_domain}/ns/{namespace}/sa/{self._of(namespace, name).service_account or name}"

    def ports(self, namespace: str, name: str, seen: Iterable[int]) -> list[Port]:
        """The ports the workload serves: the mapping's, else those seen in traffic, else ``default_port``."""
        given = self._of(namespace, name).ports
        if given:
            return list(given)
        return sorted(set(seen)) or [self.default_port]


def _port(value: Any, where: str) -> Port:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SettingsError(f"{where}={value!r}: a port is a number or a port name")
    port: Port = int(value) if isinstance(value, str) and value.isdigit() else value
    return _checked_port(port, where)


def _checked_port(value: Port, where: str) -> Port:
    if isinstance(value, int) and not 1 <= value <= 65535:
        raise SettingsError(f"{where}={value!r}: a port number is 1-65535")
    if isinstance(value, str) and (len(value) > 15 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value)):
        raise SettingsError(f"{where}={value!r}: a port name is at most 15 lower-case letters, digits and '-'")
    return value


def _keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SettingsError(f"{where}: unknown keys {unknown}; expected some of {sorted(allowed)}")


def _workload(name: str, data: Any) -> WorkloadMapping:
    where = f"workloads.{name}"
    if "/" not in name:
        raise SettingsError(f"{where}: a workload is named namespace/name")
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where}={data!r}: expected a mapping of labels, service_account, ports")
    _keys(data, {"labels", "service_account", "ports"}, where)
    labels = data.get("labels")
    if labels is not None and (not isinstance(labels, Mapping) or not labels or not all(isinstance(v, str) for v in labels.values())):
        raise SettingsError(f"{where}.labels={labels!r}: expected a non-empty mapping of label -> string")
    account = data.get("service_account")
    if account is not None and not isinstance(account, str):
        raise SettingsError(f"{where}.service_account={account!r}: expected a string")
    ports = data.get("ports") or []
    if not isinstance(ports, list):
        raise SettingsError(f"{where}.ports={ports!r}: expected a list")
    return WorkloadMapping(dict(labels) if labels else None, account, tuple(_port(p, f"{where}.ports") for p in ports))


def mapping_from_dict(data: Mapping[str, Any] | None) -> PolicyMapping:
    """A ``PolicyMapping`` from a mapping file's contents, strictly (unknown keys and bad values name themselves).

    >>> m = mapping_from_dict({"workloads": {"shop/web": {"service_account": "frontend", "ports": [8080]}}})
    >>> m.principal("shop", "web"), m.ports("shop", "web", []), m.labels("shop", "web")
    ('cluster.local/ns/shop/sa/frontend', [8080], {'app.kubernetes.io/name': 'web'})
    """
    if data is None:
        return PolicyMapping()
    if not isinstance(data, Mapping):
        raise SettingsError(f"mapping file: expected a mapping at the top, not {type(data).__name__}")
    _keys(data, {"trust_domain", "label", "default_port", "workloads"}, "mapping file")
    workloads = data.get("workloads") or {}
    if not isinstance(workloads, Mapping):
        raise SettingsError(f"workloads={workloads!r}: expected a mapping of namespace/name -> settings")
    for key in ("trust_domain", "label"):
        if key in data and not (isinstance(data[key], str) and data[key]):
            raise SettingsError(f"{key}={data[key]!r}: expected a non-empty string")
    return PolicyMapping(trust_domain=data.get("trust_domain", "cluster.local"), label=data.get("label", "app.kubernetes.io/name"),
                         default_port=_port(data.get("default_port", "http"), "default_port"),
                         workloads={str(k): _workload(str(k), v) for k, v in workloads.items()})
