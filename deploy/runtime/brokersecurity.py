"""Secured mode of the local broker: who may connect (SCRAM, optionally mutual TLS) and who may do what (ACLs).

``deploy.runtime.broker.start(..., security=Secured())`` turns it on. The broker then has:

* a ``SASL_PLAINTEXT`` client listener on the usual port (SCRAM-SHA-256 by default), also the
  inter-broker listener; optionally an ``SSL`` listener that requires a client certificate
  (``tls_port``) and a ``SASL_SSL`` listener (``sasl_ssl_port``), with certificates from
  :mod:`deploy.runtime.brokertls`;
* a ``CONTROLLER`` listener that takes only SASL/PLAIN from the broker's own ``admin`` principal
  (KRaft cannot check SCRAM there: SCRAM credentials live in the metadata the controller serves);
* ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false`` and ``super.users=User:admin``:
  a principal may do only what an ACL of its role grants.

Credentials: ``admin``'s SCRAM credential is written at storage format time (``--add-scram``,
the only way to bootstrap it); the role principals' credentials and ACLs are set through the admin
API on every start and reconciled (a principal or grant no longer declared is removed). Everything
needed to reach the broker again (passwords included) is kept in ``<data_dir>/security.json``,
mode 0600, like the JAAS lines in ``server.properties``: this is a local broker.

Roles (:func:`role_grants`) follow what each component really does:

=========  =============================================================================
collector  writes summaries and their dead letters
shim       writes summaries (its reports); reads the verdict and policy topics (no group)
worker     reads summaries in its consumer group and the policy topic; writes verdicts,
           findings, dead letters, inventory; owns the topics and groups named
           ``<worker_prefix>*`` (Faust's changelog, e.g. ``kubeward-worker-actor-state-changelog``)
operator   reads and writes the policy topic (``kubeward policy``)
=========  =============================================================================

Only ``worker`` principals (and the broker's own ``admin``) can write the verdict topic.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaAdminClient
from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern,
                         ResourcePatternFilter, ResourceType, UserScramCredentialDeletion, UserScramCredentialUpsertion)

from deploy.runtime import brokertls
from ingest.kafkaauth import KafkaSecurity
from ingest.topics import DLQ, FINDINGS, INVENTORY, POLICY, SUMMARIES, VERDICTS

__all__ = [
    "ADMIN",
    "DEFAULT_PRINCIPALS",
    "ROLES",
    "STATE_FILE",
    "ClientProtocol",
    "Grant",
    "Principal",
    "Secured",
    "SecurityError",
    "SecurityState",
    "apply_grants",
    "declared_roles",
    "format_arguments",
    "listener_properties",
    "load_state",
    "resolve",
    "role_grants",
]

ADMIN = "admin"
ROLES = ("collector", "shim", "worker", "operator")
STATE_FILE = "security.json"
TLS_DIR = "tls"
Mechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]
ClientProtocol = Literal["SASL_PLAINTEXT", "SASL_SSL", "SSL"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PASSWORD = re.compile(r"[A-Za-z0-9._~-]{12,128}")  # written into JAAS lines and StorageTool arguments as is


class SecurityError(ValueError):
    """A secured-mode declaration that cannot work (bad name, role, password or a changed admin)."""


@dataclass(frozen=True)
class Grant:
    """Operations a role may perform on one resource (a literal name, or every name with a prefix)."""

    resource: Literal["topic", "group"]
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False


def role_grants(worker_prefix: str = "kubeward-worker") -> dict[str, tuple[Grant, ...]]:
    """The ACLs of each role. READ and WRITE imply DESCRIBE (metadata) on the same resource."""
    return {
        "collector": (Grant("topic", SUMMARIES.name, ("WRITE",)), Grant("topic", DLQ.name, ("WRITE",))),
        "shim": (Grant("topic", SUMMARIES.name, ("WRITE",)), Grant("topic", VERDICTS.name, ("READ",)),
                 Grant("topic", POLICY.name, ("READ",))),
        "worker": (Grant("topic", SUMMARIES.name, ("READ",)), Grant("topic", POLICY.name, ("READ",)),
                   *(Grant("topic", name, ("WRITE",)) for name in (VERDICTS.name, FINDINGS.name, DLQ.name, INVENTORY.name)),
                   Grant("group", worker_prefix, ("READ",), prefixed=True),
                   Grant("topic", worker_prefix, ("CREATE", "READ", "WRITE"), prefixed=True)),
        "operator": (Grant("topic", POLICY.name, ("READ", "WRITE")),),
    }


@dataclass(frozen=True)
class Principal:
    """A SCRAM user (and, with TLS, a client certificate ``CN=<name>``) that acts in one role."""

    name: str
    role: str
    password: str | None = None  # None: kept from the last start, or generated

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.name == ADMIN:
            raise SecurityError(f"principal name={self.name!r} must match {_NAME.pattern} and not be {ADMIN!r}")
        if self.role not in ROLES:
            raise SecurityError(f"principal {self.name!r}: role={self.role!r} is not one of {', '.join(ROLES)}")
        if self.password is not None and not self.password:
            raise SecurityError(f"principal {self.name!r}: password is empty")


DEFAULT_PRINCIPALS = tuple(Principal(role, role) for role in ROLES)


@dataclass(frozen=True)
class Secured:
    """What ``start(..., security=Secured(...))`` sets up. One principal per role by default."""

    principals: tuple[Principal, ...] = DEFAULT_PRINCIPALS
    mechanism: Mechanism = "SCRAM-SHA-256"
    worker_prefix: str = "kubeward-worker"
    tls_port: int | None = None  # SSL listener that requires a client certificate (mutual TLS)
    sasl_ssl_port: int | None = None  # SASL_SSL listener: TLS plus SCRAM
    admin_password: str | None = None  # None: kept from the last start, or generated

    def __post_init__(self) -> None:
        names = [p.name for p in self.principals]
        if len(names) != len(set(names)):
            raise SecurityError(f"principal names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
        if self.mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise SecurityError(f"mechanism={self.mechanism!r} is not SCRAM-SHA-256 or SCRAM-SHA-512")
        if self.admin_password is not None and not _PASSWORD.fullmatch(self.admin_password):
            raise SecurityError(f"admin_password must match {_PASSWORD.pattern} (it is written into JAAS lines)")
        if not _NAME.fullmatch(self.worker_prefix):
            raise SecurityError(f"worker_prefix={self.worker_prefix!r} must match {_NAME.pattern}")


@dataclass(frozen=True)
class SecurityState:
    """A secured broker's resolved credentials and listeners (``<data_dir>/security.json``)."""

    host: str
    port: int
    mechanism: Mechanism
    admin_password: str
    principals: tuple[Principal, ...]
    worker_prefix: str
    tls_dir: str | None = None
    tls_port: int | None = None
    sasl_ssl_port: int | None = None

    def bootstrap(self, protocol: ClientProtocol = "SASL_PLAINTEXT") -> str:
        """The bootstrap address of the listener speaking ``protocol``."""
        port = {"SASL_PLAINTEXT": self.port, "SSL": self.tls_port, "SASL_SSL": self.sasl_ssl_port}[protocol]
        if port is None:
            raise SecurityError(f"no {protocol} listener on this broker (it was started without one)")
        return f"{self.host}:{port}"

    def password(self, name: str) -> str:
        if name == ADMIN:
            return self.admin_password
        for principal in self.principals:
            if principal.name == name:
                return principal.password or ""
        raise SecurityError(f"no principal {name!r}; declared: {', '.join(p.name for p in self.principals)}")

    def client(self, name: str, protocol: ClientProtocol = "SASL_PLAINTEXT") -> KafkaSecurity:
        """``KafkaSecurity`` for principal ``name`` (or ``admin``) on the ``protocol`` listener."""
        self.bootstrap(protocol)  # raises if there is no such listener
        sasl = {"username": name, "password": self.password(name), "mechanism": self.mechanism}
        if protocol == "SASL_PLAINTEXT":
            return KafkaSecurity(protocol=protocol, **sasl)
        assert self.tls_dir is not None
        ca = Path(self.tls_dir) / brokertls.CA_FILE
        if protocol == "SASL_SSL":
            return KafkaSecurity(protocol=protocol, ca_file=ca, **sasl)
        if name == ADMIN:
            raise SecurityError("the admin principal has no client certificate; use SASL_PLAINTEXT or SASL_SSL")
        cert, key = brokertls.client_files(Path(self.tls_dir), name)
        return KafkaSecurity(protocol="SSL", ca_file=ca, cert_file=cert, key_file=key)

    @property
    def admin(self) -> KafkaSecurity:
        return self.client(ADMIN)


# ----------------------------------------------------------------- state file


def load_state(data_dir: Path) -> SecurityState | None:
    """The state of a broker data dir formatted in secured mode, or None."""
    path = Path(data_dir) / STATE_FILE
    if not path.exists():
        return None
    raw: dict[str, Any] = json.loads(path.read_text())
    raw["principals"] = tuple(Principal(**p) for p in raw["principals"])
    return SecurityState(**raw)


def _save_state(data_dir: Path, state: SecurityState) -> None:
    path = Path(data_dir) / STATE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(state), out, indent=1)
    os.chmod(path, 0o600)


def resolve(secured: Secured, stored: SecurityState | None, data_dir: Path, host: str, port: int) -> SecurityState:
    """Fill in passwords (declared, else kept from ``stored``, else generated), make TLS files, save the state."""
    if stored and secured.admin_password and secured.admin_password != stored.admin_password:
        raise SecurityError(f"{data_dir} was formatted with another admin password; omit it or wipe the dir")
    if stored and secured.mechanism != stored.mechanism:
        raise SecurityError(f"{data_dir} was formatted for {stored.mechanism}, not {secured.mechanism}; wipe the dir to change it")
    old = {p.name: p for p in stored.principals} if stored else {}
    principals = tuple(replace(p, password=p.password or (old[p.name].password if p.name in old else None)
                               or secrets.token_urlsafe(18)) for p in secured.principals)
    admin_password = secured.admin_password or (stored.admin_password if stored else secrets.token_urlsafe(24))
    tls_dir = None
    if secured.tls_port is not None or secured.sasl_ssl_port is not None:
        tls_dir = str(brokertls.ensure_certificates(Path(data_dir) / TLS_DIR, [p.name for p in principals]))
    state = SecurityState(host, port, secured.mechanism, admin_password, principals, secured.worker_prefix,
                          tls_dir, secured.tls_port, secured.sasl_ssl_port)
    _save_state(data_dir, state)
    return state


# ----------------------------------------------------------- broker settings


def _jaas(module: str, username: str, password: str, extra: str = "") -> str:
    return f'{module} required username="{username}" password="{password}"{extra};'


def listener_properties(state: SecurityState, controller_port: int) -> dict[str, str]:
    """The ``server.properties`` entries of secured mode (they replace the PLAINTEXT listener ones)."""
    host, mech, pw = state.host, state.mechanism, state.admin_password
    scram = _jaas("org.apache.kafka.common.security.scram.ScramLoginModule", ADMIN, pw)
    listeners = {"SASL_PLAINTEXT": state.port, "CONTROLLER": controller_port}
    if state.tls_port is not None:
        listeners["SSL"] = state.tls_port
    if state.sasl_ssl_port is not None:
        listeners["SASL_SSL"] = state.sasl_ssl_port
    addresses = ",".join(f"{name}://{host}:{port}" for name, port in listeners.items())
    props = {
        "listeners": addresses,
        "advertised.listeners": addresses,
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": ",".join(f"{n}:{'SASL_PLAINTEXT' if n == 'CONTROLLER' else n}" for n in listeners),
        "sasl.enabled.mechanisms": mech,
        "sasl.mechanism.inter.broker.protocol": mech,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            "org.apache.kafka.common.security.plain.PlainLoginModule", ADMIN, pw, f' user_{ADMIN}="{pw}"'),
        f"listener.name.sasl_plaintext.{mech.lower()}.sasl.jaas.config": scram,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN}",
        "allow.everyone.if.no.acl.found": "false",
    }
    if state.tls_dir is not None:
        props.update(_tls_properties(state, scram))
    return props


def _tls_properties(state: SecurityState, scram: str) -> dict[str, str]:
    assert state.tls_dir is not None
    tls = Path(state.tls_dir)
    props = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls / brokertls.BROKER_FILE),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls / brokertls.CA_FILE),
        # the SSL listener's principal is the certificate's CN: User:<name>, as for SCRAM
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
    }
    if state.tls_port is not None:
        props["listener.name.ssl.ssl.client.auth"] = "required"
    if state.sasl_ssl_port is not None:
        props[f"listener.name.sasl_ssl.{state.mechanism.lower()}.sasl.jaas.config"] = scram
    return props


def format_arguments(state: SecurityState) -> list[str]:
    """Extra ``StorageTool format`` arguments: the admin's SCRAM credential (needed before any client can log in)."""
    return ["--add-scram", f"{state.mechanism}=[name={ADMIN},password={state.admin_password}]"]


# ------------------------------------------------------------ users and ACLs


def _acls(state: SecurityState, grants: Mapping[str, tuple[Grant, ...]]) -> set[ACL]:
    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
    wanted = set()
    for principal in state.principals:
        for grant in grants[principal.role]:
            pattern = ResourcePattern(kinds[grant.resource], grant.name,
                                      ACLResourcePatternType.PREFIXED if grant.prefixed else ACLResourcePatternType.LITERAL)
            for operation in grant.operations:
                wanted.add(ACL(f"User:{principal.name}", "*", ACLOperation[operation], ACLPermissionType.ALLOW, pattern))
    return wanted


def _sync_users(admin: KafkaAdminClient, state: SecurityState) -> None:
    known = set(admin.describe_user_scram_credentials())
    declared = {p.name for p in state.principals}
    changes: list[Any] = [UserScramCredentialUpsertion(p.name, state.mechanism, p.password) for p in state.principals]
    changes += [UserScramCredentialDeletion(name, state.mechanism) for name in sorted(known - declared - {ADMIN})]
    failed = {user: error for user, error in admin.alter_user_scram_credentials(changes).items() if error}
    if failed:
        raise SecurityError(f"could not set SCRAM credentials: {failed}")


def _sync_acls(admin: KafkaAdminClient, wanted: set[ACL]) -> tuple[int, int]:
    everything = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                           ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
    existing, error = admin.describe_acls(everything)
    if error.errno:
        raise SecurityError(f"could not list ACLs: {error}")
    missing, stale = wanted - set(existing), set(existing) - wanted
    if missing:
        failed = admin.create_acls(list(missing))["failed"]
        if failed:
            raise SecurityError(f"could not create ACLs: {failed}")
    if stale:
        for _filter, _deleted, err in admin.delete_acls(list(stale)):
            if err.errno:
                raise SecurityError(f"could not delete a stale ACL {_filter}: {err}")
    return len(missing), len(stale)


def apply_grants(state: SecurityState, *, timeout_s: float = 30.0) -> tuple[int, int]:
    """Make the broker's SCRAM users and ACLs exactly the declared ones; return (ACLs added, ACLs removed)."""
    ms = int(timeout_s * 1000)
    with KafkaAdminClient(bootstrap_servers=state.bootstrap(), client_id="kubeward-security",
                          request_timeout_ms=ms, **state.admin.kafka_python()) as admin:
        _sync_users(admin, state)
        return _sync_acls(admin, _acls(state, role_grants(state.worker_prefix)))


def declared_roles(principals: Iterable[Principal]) -> dict[str, list[str]]:
    """Principal names by role, for display."""
    roles: dict[str, list[str]] = {}
    for principal in principals:
        roles.setdefault(principal.role, []).append(principal.name)
    return roles
