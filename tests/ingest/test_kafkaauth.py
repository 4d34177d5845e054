"""KafkaSecurity: one settings section, the keyword arguments of kafka-python, aiokafka and Faust, and errors that
name the key and the value but never a password."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import faust.auth
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from deploy.runtime.brokertls import CA_FILE, client_files, ensure_certificates
from ingest.config import build_settings
from ingest.errors import SettingsError
from ingest.kafkaauth import KafkaSecurity

SECRET = "hunter2-not-for-logs"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a client certificate and key for ``collector`` (PEM, as the local broker makes them)."""
    tls_dir = ensure_certificates(tmp_path_factory.mktemp("tls"), ["collector"])
    cert, key = client_files(tls_dir, "collector")
    return {"ca_file": tls_dir / CA_FILE, "cert_file": cert, "key_file": key}


def sasl(**overrides: Any) -> KafkaSecurity:
    fields: dict[str, Any] = {"protocol": "SASL_PLAINTEXT", "username": "collector", "password": SECRET}
    fields.update(overrides)
    return KafkaSecurity(**fields)


def _message(**fields: Any) -> str:
    with pytest.raises(ValidationError) as excinfo:
        KafkaSecurity(**fields)
    text = str(excinfo.value) + repr(excinfo.value.errors())
    assert SECRET not in text
    return str(excinfo.value)


# ------------------------------------------------------------------ defaults and dialects


def test_the_default_is_plaintext_without_credentials() -> None:
    plain = KafkaSecurity()
    assert plain.kafka_python() == {"security_protocol": "PLAINTEXT"}
    assert plain.aiokafka() == {"security_protocol": "PLAINTEXT"}
    assert plain.faust_credentials(faust.auth) is None
    assert plain.ssl_context() is None


def test_scram_kwargs_for_kafka_python_and_aiokafka() -> None:
    expected = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": "collector", "sasl_plain_password": SECRET}
    security = sasl(mechanism="SCRAM-SHA-512")
    assert security.kafka_python() == expected
    assert security.aiokafka() == expected


def test_protocol_and_mechanism_are_case_insensitive() -> None:
    security = sasl(protocol=" sasl_plaintext", mechanism="scram-sha-256")
    assert (security.protocol, security.mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")


def test_mutual_tls_kwargs(tls: dict[str, Path]) -> None:
    security = KafkaSecurity(protocol="SSL", **tls)
    assert security.kafka_python() == {
        "security_protocol": "SSL", "ssl_check_hostname": True, "ssl_cafile": str(tls["ca_file"]),
        "ssl_certfile": str(tls["cert_file"]), "ssl_keyfile": str(tls["key_file"]), "ssl_password": None}
    kwargs = security.aiokafka()
    assert kwargs["security_protocol"] == "SSL"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_sasl_ssl_kwargs_carry_both(tls: dict[str, Path]) -> None:
    security = sasl(protocol="SASL_SSL", ca_file=tls["ca_file"], check_hostname=False)
    kwargs = security.kafka_python()
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_plain_password"] == SECRET
    assert kwargs["ssl_cafile"] == str(tls["ca_file"]) and kwargs["ssl_check_hostname"] is False
    context = security.aiokafka()["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and not context.check_hostname


# ------------------------------------------------------------------------------ faust


def test_faust_sasl_credentials_give_faust_the_same_aiokafka_arguments() -> None:
    security = sasl(mechanism="SCRAM-SHA-512")
    credentials = security.faust_credentials(faust.auth)
    assert isinstance(credentials, faust.auth.SASLCredentials)
    assert credentials.username == "collector" and credentials.password == SECRET
    assert SECRET not in repr(credentials)
    faust_kwargs = dict(credentials_to_aiokafka_auth(credentials))
    assert faust_kwargs.pop("ssl_context") is None
    assert faust_kwargs == security.aiokafka()


def test_faust_sasl_ssl_and_ssl_credentials(tls: dict[str, Path]) -> None:
    over_tls = sasl(protocol="SASL_SSL", ca_file=tls["ca_file"]).faust_credentials(faust.auth)
    assert credentials_to_aiokafka_auth(over_tls)["security_protocol"] == "SASL_SSL"
    assert isinstance(credentials_to_aiokafka_auth(over_tls)["ssl_context"], ssl.SSLContext)
    mutual = KafkaSecurity(protocol="SSL", **tls).faust_credentials(faust.auth)
    assert isinstance(mutual, faust.auth.SSLCredentials)
    assert credentials_to_aiokafka_auth(mutual)["security_protocol"] == "SSL"


# ------------------------------------------------------------------------------ errors


def test_sasl_needs_a_username_and_a_password() -> None:
    assert "username is required with protocol='SASL_PLAINTEXT' (username=None)" in _message(protocol="SASL_PLAINTEXT")
    assert "password is required with protocol='SASL_SSL' (username='bob' has none)" in _message(protocol="SASL_SSL", username="bob")
    assert "password is required" in _message(protocol="SASL_PLAINTEXT", username="bob", password="")


@pytest.mark.parametrize(("fields", "expected"), [
    ({"protocol": "SASL"}, "protocol='SASL' is not one of PLAINTEXT, SASL_PLAINTEXT, SASL_SSL, SSL"),
    ({"mechanism": "PLAIN"}, "mechanism='PLAIN' is not one of SCRAM-SHA-256, SCRAM-SHA-512"),
    ({"username": "bob"}, "username='bob' is set but protocol='PLAINTEXT' does not use SASL"),
    ({"password": SECRET}, "password='**********' is set but protocol='PLAINTEXT' does not use SASL"),
    ({"protocol": "SASL_PLAINTEXT", "username": "u", "password": SECRET, "ca_file": "/etc/hostname"},
     "ca_file='/etc/hostname' is set but protocol='SASL_PLAINTEXT' does not use TLS"),
    ({"protocol": "SSL", "key_password": SECRET}, "key_password='**********' is set without cert_file"),
    ({"protocol": "SSL", "key_file": "/no/such.key"}, "key_file='/no/such.key' is set without cert_file"),
    ({"protocol": "SSL", "ca_file": "/no/such/ca.pem"}, "ca_file='/no/such/ca.pem' is not a readable file"),
    ({"protocol": "SSL", "cert": "x.pem"}, "cert\n  Extra inputs are not permitted"),
])
def test_errors_name_the_key_and_the_value(fields: dict[str, Any], expected: str) -> None:
    assert expected in _message(**fields)


def test_a_password_of_the_wrong_type_is_not_echoed() -> None:
    with pytest.raises(ValidationError) as excinfo:
        KafkaSecurity(protocol="SASL_PLAINTEXT", username="u", password=987654321)
    assert "987654321" not in str(excinfo.value) + repr(excinfo.value.errors())
    assert excinfo.value.errors()[0]["loc"] == ("password",)


def test_the_password_never_shows_in_repr_or_json() -> None:
    security = sasl()
    assert SECRET not in repr(security) and SECRET not in security.model_dump_json()
    assert isinstance(security.password, SecretStr)


# ------------------------------------------------------- nested in a component's settings


class _ComponentSettings(BaseSettings):
    """How a component would nest the section (the lead wires the real ones)."""

    model_config = SettingsConfigDict(env_prefix="KUBEWARD_TESTCOMP_", env_nested_delimiter="__", frozen=True)
    kafka: KafkaSecurity = KafkaSecurity()


def test_read_from_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWARD_TESTCOMP_KAFKA__PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("KUBEWARD_TESTCOMP_KAFKA__USERNAME", "worker")
    monkeypatch.setenv("KUBEWARD_TESTCOMP_KAFKA__PASSWORD", SECRET)
    assert build_settings(_ComponentSettings).kafka == sasl(username="worker")


def test_a_nested_error_names_the_key_and_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWARD_TESTCOMP_KAFKA__USERNAME", "worker")
    monkeypatch.setenv("KUBEWARD_TESTCOMP_KAFKA__PASSWORD", SECRET)
    with pytest.raises(SettingsError) as excinfo:
        build_settings(_ComponentSettings)
    message = str(excinfo.value)
    assert "KUBEWARD_TESTCOMP_KAFKA=" in message and "username='worker' is set but protocol='PLAINTEXT'" in message
    assert SECRET not in message


def test_json_validation_takes_a_password_and_hides_it_in_errors() -> None:
    security = KafkaSecurity.model_validate_json(f'{{"protocol": "SASL_SSL", "username": "w", "password": "{SECRET}"}}')
    assert security.kafka_python()["sasl_plain_password"] == SECRET
    assert type(security.kafka_python()["sasl_plain_password"]) is str
    with pytest.raises(ValidationError) as excinfo:
        KafkaSecurity.model_validate_json(f'{{"username": "w", "password": "{SECRET}"}}')
    assert SECRET not in str(excinfo.value) + repr(excinfo.value.errors())
