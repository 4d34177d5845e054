"""The local broker's secured mode without a broker: roles, server properties, credentials state, certificates.

What the broker really enforces is tested in ``tests/integration/test_broker_security.py``.
"""

from __future__ import annotations

import ssl
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from deploy.runtime import broker, brokersecurity, brokerstate, brokertls
from deploy.runtime.brokersecurity import Principal, Secured, SecurityError, role_grants
from ingest.topics import ALL_TOPICS, VERDICTS


def _writers(topic: str) -> set[str]:
    return {role for role, grants in role_grants().items()
            for g in grants if g.resource == "topic" and not g.prefixed and g.name == topic and "WRITE" in g.operations}


def test_only_workers_may_write_the_verdict_topic() -> None:
    assert _writers(VERDICTS.name) == {"worker"}


def test_worker_prefix_grants_do_not_cover_a_project_topic() -> None:
    prefixes = [g.name for grants in role_grants().values() for g in grants if g.prefixed]
    assert prefixes and not any(spec.name.startswith(p) for p in prefixes for spec in ALL_TOPICS)


def test_every_declared_role_has_grants() -> None:
    assert set(role_grants()) == set(brokersecurity.ROLES)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: Principal("admin", "worker"), "not be 'admin'"),
    (lambda: Principal("bad name", "worker"), "name='bad name' must match"),
    (lambda: Principal("w1", "root"), "role='root' is not one of collector, shim, worker, operator"),
    (lambda: Principal("w1", "worker", password=""), "password is empty"),
    (lambda: Secured(principals=(Principal("a", "shim"), Principal("a", "worker"))), "names repeat: ['a']"),
    (lambda: Secured(admin_password='has"quote'), "admin_password must match"),
    (lambda: Secured(mechanism="PLAIN"), "mechanism='PLAIN'"),  # type: ignore[arg-type]
])
def test_bad_declarations_say_what_is_wrong(make: Callable[[], object], expected: str) -> None:
    with pytest.raises(SecurityError) as excinfo:
        make()
    assert expected in str(excinfo.value)


def _state(tmp_path: Path, secured: Secured = Secured(), stored: brokersecurity.SecurityState | None = None) -> brokersecurity.SecurityState:
    return brokersecurity.resolve(secured, stored, tmp_path, "127.0.0.1", 19092)


def test_resolve_generates_passwords_keeps_them_and_saves_them_privately(tmp_path: Path) -> None:
    first = _state(tmp_path)
    assert all(p.password and len(p.password) >= 20 for p in first.principals)
    assert stat.S_IMODE((tmp_path / brokersecurity.STATE_FILE).stat().st_mode) == 0o600
    again = _state(tmp_path, Secured(principals=(*brokersecurity.DEFAULT_PRINCIPALS, Principal("collector-2", "collector"))),
                   brokersecurity.load_state(tmp_path))
    assert again.admin_password == first.admin_password
    assert again.password("worker") == first.password("worker")
    assert again.password("collector-2") not in {first.password(p.name) for p in first.principals}
    assert brokersecurity.load_state(tmp_path) == again


def test_a_formatted_admin_password_cannot_change(tmp_path: Path) -> None:
    stored = _state(tmp_path)
    with pytest.raises(SecurityError, match="another admin password"):
        _state(tmp_path, Secured(admin_password="a-different-password"), stored)


def test_secured_properties_have_no_plaintext_client_listener_and_deny_by_default(tmp_path: Path) -> None:
    props = brokersecurity.listener_properties(_state(tmp_path), controller_port=19093)
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["listener.security.protocol.map"] == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"  # KRaft cannot check SCRAM on the controller listener


def test_plaintext_properties_are_unchanged_by_secured_mode(tmp_path: Path) -> None:
    text = brokerstate.server_properties(tmp_path, 19092, 19093)
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093\n" in text
    assert "sasl" not in text and "authorizer" not in text and "ssl" not in text


def test_tls_listeners_and_certificates(tmp_path: Path) -> None:
    state = _state(tmp_path, Secured(tls_port=19094, sasl_ssl_port=19095))
    props = brokersecurity.listener_properties(state, controller_port=19093)
    assert "SSL://127.0.0.1:19094" in props["listeners"] and "SASL_SSL://127.0.0.1:19095" in props["listeners"]
    assert props["listener.name.ssl.ssl.client.auth"] == "required"
    mutual = state.client("collector", "SSL")
    assert mutual.cert_file is not None and mutual.ca_file is not None and mutual.key_file is not None
    cert = x509.load_pem_x509_certificate(mutual.cert_file.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "collector"  # User:collector after mapping
    context = ssl.create_default_context(cafile=str(mutual.ca_file))
    context.load_cert_chain(mutual.cert_file, mutual.key_file)  # the key matches the certificate
    assert stat.S_IMODE(mutual.key_file.stat().st_mode) == 0o600
    broker_pem = (Path(str(state.tls_dir)) / brokertls.BROKER_FILE).read_text()
    assert broker_pem.startswith("-----BEGIN PRIVATE KEY-----") and "BEGIN CERTIFICATE" in broker_pem
    with pytest.raises(SecurityError, match="no client certificate"):
        state.client("admin", "SSL")


def test_clients_of_a_broker_without_tls(tmp_path: Path) -> None:
    state = _state(tmp_path)
    worker = state.client("worker")
    assert (worker.protocol, worker.username, worker.mechanism) == ("SASL_PLAINTEXT", "worker", "SCRAM-SHA-256")
    with pytest.raises(SecurityError, match="no SSL listener"):
        state.client("worker", "SSL")
    with pytest.raises(SecurityError, match="no principal 'mallory'"):
        state.client("mallory")


def test_a_data_dir_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "meta.properties").touch()
    with pytest.raises(broker.BrokerError, match="was formatted PLAINTEXT; it cannot start secured"):
        broker._check_mode(tmp_path, True, Secured())
    _state(tmp_path)
    with pytest.raises(broker.BrokerError, match="was formatted secured; it cannot start without security"):
        broker._check_mode(tmp_path, True, None)
    assert broker._check_mode(tmp_path, True, Secured()) is not None


def test_format_adds_only_the_admin_scram_credential(tmp_path: Path) -> None:
    state = _state(tmp_path)
    assert brokersecurity.format_arguments(state) == ["--add-scram", f"SCRAM-SHA-256=[name=admin,password={state.admin_password}]"]
