"""How a Kafka client authenticates to the broker: one settings section, three client dialects.

``KafkaSecurity`` is a plain settings section (nest it in a component's settings,
read as ``<PREFIX>_KAFKA__PROTOCOL=SASL_PLAINTEXT`` and so on). Its methods turn it
into the keyword arguments of each client library the project uses:

* :meth:`KafkaSecurity.kafka_python` for ``KafkaProducer``/``KafkaConsumer``/``KafkaAdminClient``;
* :meth:`KafkaSecurity.aiokafka` for ``AIOKafkaProducer``/``AIOKafkaConsumer``;
* :meth:`KafkaSecurity.faust_credentials` for Faust's ``broker_credentials``. It is
  handed the ``faust.auth`` module, so this module imports neither faust nor a Kafka client
  (only ``streams/app.py`` imports faust).

The default is ``PLAINTEXT`` with no credentials, which gives exactly the
arguments the components use today. Errors name the key and the value at fault
(never a password).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, Self, get_args

from pydantic import (BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, SecretStr, ValidationInfo, field_validator,
                      model_validator)

__all__ = ["FaustAuth", "KafkaSecurity"]

SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
Mechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]
_SASL = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
_TLS = frozenset({"SSL", "SASL_SSL"})


class FaustAuth(Protocol):
    """What :meth:`KafkaSecurity.faust_credentials` needs of ``faust.auth`` (pass the module itself)."""

    @property
    def SASLCredentials(self) -> Callable[..., Any]: ...  # noqa: N802 - faust's class names

    @property
    def SSLCredentials(self) -> Callable[..., Any]: ...  # noqa: N802


class KafkaSecurity(BaseModel):
    """Transport security and credentials of one Kafka client (``security.protocol`` and friends)."""

    # Inputs stay out of error messages (pydantic would print the whole input, password included);
    # each message below names the key and its value itself, never a password.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    protocol: SecurityProtocol = Field(default="PLAINTEXT", description="PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL (TLS, mutual when cert_file is set)")
    mechanism: Mechanism = Field(default="SCRAM-SHA-256", description="SASL mechanism of the SASL_* protocols")
    username: str | None = Field(default=None, description="SASL user name (the broker principal User:<username>)")
    password: SecretStr | None = Field(default=None, description="SASL password")
    ca_file: Path | None = Field(default=None, description="PEM CA bundle that signed the broker certificate (TLS protocols; default: the system CAs)")
    cert_file: Path | None = Field(default=None, description="PEM client certificate for mutual TLS (may hold the key too)")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file")
    key_password: SecretStr | None = Field(default=None, description="password of an encrypted key_file")
    check_hostname: bool = Field(default=True, description="verify that the broker certificate names the host connected to")

    @field_validator("protocol", "mechanism", mode="before")
    @classmethod
    def _known(cls, value: object, info: ValidationInfo) -> object:
        allowed = get_args(SecurityProtocol if info.field_name == "protocol" else Mechanism)
        name = value.strip().upper() if isinstance(value, str) else value
        if name not in allowed:
            raise ValueError(f"{info.field_name}={value!r} is not one of {', '.join(allowed)}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for problem in (self._sasl_problem(), self._tls_problem(), self._file_problem()):
            if problem:
                raise ValueError(problem)
        return self

    # Declared after ``_consistent`` so that it wraps it: the input that any error carries (here or
    # in an enclosing settings model, ``errors()`` included, which ``ingest.config`` prints) is the
    # one with the secrets already masked.
    @model_validator(mode="wrap")
    @classmethod
    def _wrap_secrets(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if isinstance(data, Mapping):
            data = dict(data)
            for key in ("password", "key_password"):
                value = data.get(key)
                if isinstance(value, str):
                    data[key] = _Masked(value)
                elif value is not None and not isinstance(value, SecretStr):
                    data[key] = _NotAString()
        return handler(data)

    def _sasl_problem(self) -> str | None:
        if self.protocol in _SASL:
            if not self.username:
                return f"username is required with protocol={self.protocol!r} (username={self.username!r})"
            if self.password is None or not self.password.get_secret_value():
                return f"password is required with protocol={self.protocol!r} (username={self.username!r} has none)"
        elif self.username is not None or self.password is not None:
            key = "username" if self.username is not None else "password"
            shown = repr(self.username) if key == "username" else "'**********'"
            return f"{key}={shown} is set but protocol={self.protocol!r} does not use SASL (use SASL_PLAINTEXT or SASL_SSL)"
        return None

    def _tls_problem(self) -> str | None:
        if self.protocol not in _TLS:
            for key in ("ca_file", "cert_file", "key_file", "key_password"):
                if getattr(self, key) is not None:
                    shown = "'**********'" if key == "key_password" else repr(str(getattr(self, key)))
                    return f"{key}={shown} is set but protocol={self.protocol!r} does not use TLS (use SSL or SASL_SSL)"
        if self.key_file is not None and self.cert_file is None:
            return f"key_file={str(self.key_file)!r} is set without cert_file (the certificate it belongs to)"
        if self.key_password is not None and self.cert_file is None:
            return "key_password='**********' is set without cert_file (the key it opens belongs to a client certificate)"
        return None

    def _file_problem(self) -> str | None:
        for key in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self, key)
            if path is not None and not path.is_file():
                return f"{key}={str(path)!r} is not a readable file"
        return None

    # ------------------------------------------------------------------ dialects

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in _SASL

    @property
    def uses_tls(self) -> bool:
        return self.protocol in _TLS

    def _secret(self, value: SecretStr | None) -> str | None:
        return str(value.get_secret_value()) if value is not None else None  # a plain str, not the masked one

    def _sasl_kwargs(self) -> dict[str, Any]:
        return {"sasl_mechanism": self.mechanism, "sasl_plain_username": self.username,
                "sasl_plain_password": self._secret(self.password)} if self.uses_sasl else {}

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (``KafkaProducer(bootstrap_servers=..., **these)``)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol, **self._sasl_kwargs()}
        if self.uses_tls:
            kwargs.update(ssl_check_hostname=self.check_hostname, ssl_cafile=_str(self.ca_file),
                          ssl_certfile=_str(self.cert_file), ssl_keyfile=_str(self.key_file),
                          ssl_password=self._secret(self.key_password))
        return kwargs

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context (CA, hostname check, client certificate), or None without TLS."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=_str(self.ca_file))
        context.check_hostname = self.check_hostname
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file, self._secret(self.key_password))
        return context

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (``AIOKafkaConsumer(..., bootstrap_servers=..., **these)``)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol, **self._sasl_kwargs()}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        return kwargs

    def faust_credentials(self, auth: FaustAuth) -> Any | None:
        """Faust's ``broker_credentials`` built from ``auth`` (the ``faust.auth`` module); None for PLAINTEXT.

        ``faust.App(..., broker_credentials=security.faust_credentials(faust.auth))``.
        """
        if self.uses_sasl:
            return auth.SASLCredentials(username=self.username, password=self._secret(self.password),
                                        mechanism=self.mechanism, ssl_context=self.ssl_context())
        if self.uses_tls:
            return auth.SSLCredentials(self.ssl_context())
        return None


class _Masked(str):
    """A secret on its way into ``SecretStr``: a string (valid in Python and JSON validation) that prints masked."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"


class _NotAString:
    """Stands in for a secret given as something other than a string: fails validation without showing it."""

    def __repr__(self) -> str:
        return "'<hidden: not a string>'"


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None
