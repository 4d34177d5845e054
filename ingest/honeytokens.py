"""Honeytokens: credentials and object ids that no legitimate caller ever uses, declared in configuration.

Contract: pure apart from ``load_honeytokens``, which reads one file. The file
(YAML or JSON) has two optional lists and nothing else::

    credentials:                       # api_key | bearer_token | password
      - {kind: api_key, value: "kw-honey-3f9c2d1e", account: svc-backup}
      - {kind: password, value: "Winter2024!", account: "ops.admin@example.com"}
    object_ids:                        # an object planted in a service's data
      - {service: orders, id: "900017"}

``parse_honeytokens(document, keys)`` checks a parsed document and turns it
into ``Honeytokens``, which holds **only keyed hashes**, never a declared
value (the declaration is dropped once hashed):

- ``credentials``: keyed BLAKE2b (``keys.credential_key``, its own
  personalisation) of every credential value; ``accounts``: the same of every
  account name. The inline check hashes a request value the same way to confirm.
- ``object_ids``: ``ingest.templating.hash_object_id(id, keys.object_id_key)``
  per service (its short name: ``shop/orders`` and ``orders`` are one service),
  so they compare equal to a summary's ``object_ids``.
- ``principals``: the principal a summary carries when the credential is used
  (``ingest.principal.hash_principal``: ``apikey:``/``bearer:`` of the value,
  ``basic:`` of a password's account, ``jwt:`` of a bearer token's account).
- ``subjects``: what a summary's ``credential_subject`` holds for an account
  (``hash_account``).
- ``probes``: Python's ``hash()`` of every declared string, as ``str`` and as
  UTF-8 ``bytes``. ``str`` and ``bytes`` hashing is SipHash keyed by a
  per-process random secret (``PYTHONHASHSEED`` unset), so the inline
  pre-filter costs one set probe per request value; only a probe hit pays for
  the BLAKE2b confirmation. ``words``: every declared value is one word of a
  JSON text (no whitespace, quote, backslash or ``{}[],:``), so the inline check
  may find it by splitting a raw JSON body instead of walking the parsed document.

A declared object id must be id-like (``ingest.templating.id_kind`` STRONG:
digits, a UUID, a long token...): a word such as ``orders`` would match a path
segment of every request, and a word is never extracted as an object id by the
summariser anyway. A credential value has at least ``MIN_SECRET_CHARS`` characters.
Errors are ``ingest.errors.SettingsError`` naming the file, the key and the bad value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ingest.errors import SettingsError
from ingest.principal import hash_principal
from ingest.templating import STRONG, hash_object_id, id_kind
from ingest.yamlfile import StrictLoader

__all__ = [
    "CREDENTIAL_KINDS",
    "MIN_SECRET_CHARS",
    "CredentialToken",
    "HoneytokenFile",
    "HoneytokenKeys",
    "HoneytokenSettings",
    "Honeytokens",
    "ObjectToken",
    "hash_account",
    "hash_credential",
    "load_honeytokens",
    "parse_honeytokens",
    "short_service",
]

CREDENTIAL_KINDS = ("api_key", "bearer_token", "password")
#: shortest credential value accepted: a short honeytoken could be someone's real password or a common word
MIN_SECRET_CHARS = 8
_CREDENTIAL_PERSON = b"kw-honey-cred"
_ACCOUNT_PERSON = b"kw-honey-acct"
_NOT_A_WORD = re.compile(r'[\s"\\{}\[\],:]')


def _keyed(value: str, key: bytes, person: bytes) -> str:
    if len(key) > 64:
        key = hashlib.blake2b(key).digest()
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), key=key, person=person, digest_size=16).hexdigest()


def hash_credential(value: str, key: bytes) -> str:
    """Keyed BLAKE2b of a credential value (32 hex characters), separate from object-id and principal hashes.

    >>> hash_credential("s3cret-value", b"k") == hash_credential("s3cret-value", b"k") != hash_credential("s3cret-value", b"j")
    True
    """
    return _keyed(value, key, _CREDENTIAL_PERSON)


def _hash_account_name(account: str, key: bytes) -> str:
    return _keyed(account.strip().casefold(), key, _ACCOUNT_PERSON)


def hash_account(account: str, key: bytes) -> str:
    """A summary's ``credential_subject`` for an account: ``hash_object_id`` of its trimmed, case-folded name.

    Account names compare case-insensitively (e-mail addresses, most user stores).

    >>> hash_account(" Ops.Admin@example.com", b"k") == hash_account("ops.admin@example.com", b"k")
    True
    """
    return hash_object_id(account.strip().casefold(), key)


def short_service(service: str) -> str:
    """A service's short name: ``shop/orders`` -> ``orders`` (summaries name the destination by its short name)."""
    return service.rpartition("/")[2]


class CredentialToken(BaseModel):
    """One declared credential: its kind, its value (secret) and the account it names (required for a password)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["api_key", "bearer_token", "password"]
    value: SecretStr
    account: str | None = None

    @field_validator("value")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if len(text) < MIN_SECRET_CHARS or text != text.strip():
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters without surrounding spaces (got {len(text)} characters)")
        return value

    @field_validator("account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value


class ObjectToken(BaseModel):
    """One declared object id and the service whose data holds it."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    service: str = Field(min_length=1)
    id: str

    @field_validator("id")
    @classmethod
    def _id_like(cls, value: str) -> str:
        if id_kind(value) != STRONG:
            raise ValueError(f"{value!r} is not id-like (digits, a UUID, a hex string or a token of 10+ letters and digits)")
        return value


class HoneytokenFile(BaseModel):
    """The declaration as written (see the module docstring); turned into ``Honeytokens`` and dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    credentials: tuple[CredentialToken, ...] = ()
    object_ids: tuple[ObjectToken, ...] = ()


@dataclass(frozen=True, slots=True)
class HoneytokenKeys:
    """The keys the hashes are made with; each must equal the one the rest of the deployment uses.

    ``object_id_key``: the summariser's and shim's object-id key. ``principal_key``:
    the identity settings' principal key. ``credential_key``: honeytokens' own key.
    ``subject_key``: the key of ``credential_subject`` (default ``object_id_key``).
    """

    object_id_key: bytes = b"kubeward-dev-object-key"
    principal_key: bytes = b"kubeward-dev-principal-key"
    credential_key: bytes = b"kubeward-dev-honeytoken-key"
    subject_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Honeytokens:
    """Declared honeytokens as keyed hashes only (see the module docstring); empty by default."""

    credentials: frozenset[str] = frozenset()
    passwords: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()
    object_ids: Mapping[str, frozenset[str]] = field(default_factory=dict)
    principals: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()
    probes: frozenset[int] = frozenset()
    words: bool = True
    keys: HoneytokenKeys = field(default_factory=HoneytokenKeys, repr=False)

    def __len__(self) -> int:
        """How many distinct honeytokens (credentials, accounts and object ids) are declared."""
        return len(self.credentials) + len(self.passwords) + len(self.accounts) + sum(len(ids) for ids in self.object_ids.values())

    def probe(self, value: str | bytes) -> bool:
        """Whether ``value`` (text, or its UTF-8 bytes) may be a honeytoken: one set probe (false positives possible, never false negatives)."""
        return hash(value) in self.probes

    def credential_of(self, value: str) -> str | None:
        """``credential`` (an API key or token), ``password`` or ``account`` when ``value`` is a declared one, else None.

        A password or an account name alone may be a real user's; only a credential is a hit by itself.
        """
        hashed = hash_credential(value, self.keys.credential_key)
        if hashed in self.credentials:
            return "credential"
        if hashed in self.passwords:
            return "password"
        if _hash_account_name(value, self.keys.credential_key) in self.accounts:
            return "account"
        return None

    def is_object(self, value: str, service: str | None) -> bool:
        """Whether ``value`` is a declared object id of ``service`` (of any service when ``service`` is unknown)."""
        hashed = hash_object_id(value, self.keys.object_id_key)
        if service is None:
            return any(hashed in ids for ids in self.object_ids.values())
        return hashed in self.object_ids.get(short_service(service), frozenset())


def _principals(token: CredentialToken, key: bytes) -> Iterable[str]:
    value = token.value.get_secret_value()
    if token.kind == "api_key":
        yield hash_principal("apikey", value, key)
    elif token.kind == "bearer_token":
        yield hash_principal("bearer", value, key)
        if token.account:
            yield hash_principal("jwt", token.account, key)
    if token.kind == "password" and token.account:
        yield hash_principal("basic", token.account, key)


def _build(declared: HoneytokenFile, keys: HoneytokenKeys) -> Honeytokens:
    ck, subject_key = keys.credential_key, keys.subject_key or keys.object_id_key
    values = [t.value.get_secret_value() for t in declared.credentials]
    accounts = [t.account for t in declared.credentials if t.account]
    raw = (*values, *accounts, *(a.strip().casefold() for a in accounts), *(o.id for o in declared.object_ids))
    by_service: dict[str, set[str]] = {}
    for obj in declared.object_ids:
        by_service.setdefault(short_service(obj.service), set()).add(hash_object_id(obj.id, keys.object_id_key))
    return Honeytokens(
        credentials=frozenset(hash_credential(t.value.get_secret_value(), ck) for t in declared.credentials if t.kind != "password"),
        passwords=frozenset(hash_credential(t.value.get_secret_value(), ck) for t in declared.credentials if t.kind == "password"),
        accounts=frozenset(_hash_account_name(a, ck) for a in accounts),
        object_ids={service: frozenset(ids) for service, ids in by_service.items()},
        principals=frozenset(p for t in declared.credentials for p in _principals(t, keys.principal_key)),
        subjects=frozenset(hash_account(a, subject_key) for a in accounts),
        probes=frozenset(h for s in raw for h in (hash(s), hash(s.encode("utf-8", "surrogatepass")))),
        words=not any(_NOT_A_WORD.search(s) for s in raw),
        keys=keys,
    )


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _shown(value: Any, loc: tuple[int | str, ...]) -> str:
    return "<secret>" if loc and loc[-1] == "value" else repr(value)


def parse_honeytokens(document: Any, keys: HoneytokenKeys | None = None, source: str = "honeytokens") -> Honeytokens:
    """``Honeytokens`` of a parsed document (a mapping, or None for an empty file); errors name ``source``, the key and the value.

    A credential value is never repeated in an error message (``<secret>``).
    """
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise SettingsError(f"{source}: expected a mapping with 'credentials' and 'object_ids', got {type(document).__name__}")
    try:
        declared = HoneytokenFile.model_validate(document)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        raise SettingsError(f"{source}: {_where(loc)}={_shown(err.get('input'), loc)}: {err['msg']}") from None
    return _build(declared, keys or HoneytokenKeys())


def load_honeytokens(path: str | Path, keys: HoneytokenKeys | None = None) -> Honeytokens:
    """Read and hash a honeytoken file (YAML, or JSON which is YAML); duplicate keys are rejected with their line."""
    path = Path(path)
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)  # noqa: S506 - a safe loader
    except OSError as exc:
        raise SettingsError(f"honeytokens file {str(path)!r}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:  # the file's own text (a credential, maybe) is never quoted back
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SettingsError(f"honeytokens file {where}: {getattr(exc, 'problem', None) or type(exc).__name__}") from None
    return parse_honeytokens(document, keys, source=str(path))


class HoneytokenSettings(BaseModel):
    """Where the declared honeytokens are and the keys to hash them with (section ``honeytokens`` of the shim's
    and the worker's settings). Every key must equal the one the rest of the deployment uses, or nothing matches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: Path | None = Field(default=None, description="YAML file of declared honeytokens (credentials, accounts, object ids); none: off")
    credential_key: SecretStr = Field(default=SecretStr("kubeward-dev-honeytoken-key"), description="key of the honeytoken credential hashes")
    object_id_key: SecretStr = Field(default=SecretStr("kubeward-dev-object-key"), description="the collectors' and shims' object-id key")
    principal_key: SecretStr = Field(default=SecretStr("kubeward-dev-principal-key"), description="the identity settings' principal key")

    def load(self) -> Honeytokens | None:
        """The declared honeytokens as hashes, or None when no file is configured; ``SettingsError`` names a bad entry."""
        if self.file is None:
            return None
        keys = HoneytokenKeys(object_id_key=self.object_id_key.get_secret_value().encode(),
                              principal_key=self.principal_key.get_secret_value().encode(),
                              credential_key=self.credential_key.get_secret_value().encode())
        return load_honeytokens(self.file, keys)
