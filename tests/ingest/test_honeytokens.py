"""ingest.honeytokens: the declaration file, its checks, and the keyed hashes that are all it keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import SettingsError, hash_object_id
from ingest.honeytokens import (
    HoneytokenKeys,
    Honeytokens,
    hash_account,
    hash_credential,
    load_honeytokens,
    parse_honeytokens,
    short_service,
)
from ingest.principal import hash_principal

FIXTURE = Path(__file__).with_name("data") / "honeytokens.yaml"
DEPLOYED = Path(__file__).resolve().parents[2] / "deploy" / "runtime" / "honeytokens.yaml"
KEYS = HoneytokenKeys(object_id_key=b"obj-key", principal_key=b"principal-key", credential_key=b"cred-key")
RAW = ("kw-honey-3f9c2d1e7a", "Winter2024!honey", "hny.eyJ0b2tlbiI6ImRlY295In0.sig", "svc-backup", "ops.admin@example.com", "900017", "u-7f3c9a21b4")


@pytest.fixture(scope="module")
def tokens() -> Honeytokens:
    return load_honeytokens(FIXTURE, KEYS)


def test_the_fixture_loads_every_declared_token(tokens: Honeytokens) -> None:
    assert (len(tokens.credentials), len(tokens.passwords), len(tokens.accounts), len(tokens.probes)) == (2, 1, 2, 7)
    assert tokens.object_ids == {"orders": frozenset({hash_object_id("900017", b"obj-key")}),
                                 "users": frozenset({hash_object_id("u-7f3c9a21b4", b"obj-key")})}
    assert len(tokens) == 7


def test_no_declared_value_is_kept(tokens: Honeytokens) -> None:
    text = repr(tokens) + "".join(str(v) for v in tokens.object_ids.values())
    for raw in RAW:
        assert raw not in text


def test_principals_are_what_a_summary_carries_for_the_credential(tokens: Honeytokens) -> None:
    assert tokens.principals == {
        hash_principal("apikey", "kw-honey-3f9c2d1e7a", b"principal-key"),
        hash_principal("bearer", "hny.eyJ0b2tlbiI6ImRlY295In0.sig", b"principal-key"),
        hash_principal("basic", "ops.admin@example.com", b"principal-key"),
    }


def test_subjects_use_the_object_key_unless_given_and_ignore_case(tokens: Honeytokens) -> None:
    assert hash_account("OPS.Admin@example.com ", b"obj-key") in tokens.subjects
    own = parse_honeytokens({"credentials": [{"kind": "api_key", "value": "x" * 12, "account": "a1"}]},
                            HoneytokenKeys(subject_key=b"subject-key"))
    assert own.subjects == {hash_account("a1", b"subject-key")}


@pytest.mark.parametrize("value, expected", [
    ("kw-honey-3f9c2d1e7a", "credential"), ("Winter2024!honey", "password"), ("svc-backup", "account"),
    ("ops.admin@example.com", "account"), ("kw-honey-3f9c2d1e7b", None), ("900017", None),
])  # fmt: skip
def test_credential_of_confirms_exact_values(tokens: Honeytokens, value: str, expected: str | None) -> None:
    assert tokens.probe(value) is (value in RAW)
    assert tokens.credential_of(value) == expected


@pytest.mark.parametrize("value, service, expected", [
    ("900017", "orders", True), ("900017", "shop/orders", True), ("900017", "payments", False), ("900017", None, True),
    ("900018", "orders", False), ("u-7f3c9a21b4", "users", True), ("u-7f3c9a21b4", "orders", False),
])  # fmt: skip
def test_object_ids_match_only_their_service(tokens: Honeytokens, value: str, service: str | None, expected: bool) -> None:
    assert tokens.is_object(value, service) is expected


def test_hashes_depend_on_their_keys() -> None:
    assert hash_credential("abcdefgh", b"a") != hash_credential("abcdefgh", b"b")
    one = parse_honeytokens({"object_ids": [{"service": "s", "id": "123"}]}, HoneytokenKeys(object_id_key=b"a"))
    two = parse_honeytokens({"object_ids": [{"service": "s", "id": "123"}]}, HoneytokenKeys(object_id_key=b"b"))
    assert one.object_ids != two.object_ids
    assert one.is_object("123", "s") and two.is_object("123", "s")


def test_an_empty_declaration_is_empty(tmp_path: Path) -> None:
    (tmp_path / "h.yaml").write_text("# nothing yet\n")
    empty = load_honeytokens(tmp_path / "h.yaml")
    assert len(empty) == 0 and not empty.probes and not empty.principals
    assert len(parse_honeytokens({})) == 0


def test_short_service() -> None:
    assert [short_service(s) for s in ("shop/orders", "orders")] == ["orders", "orders"]


@pytest.mark.parametrize("document, names", [
    ({"credentials": [{"kind": "token", "value": "abcdefghij"}]}, ["credentials[0].kind", "'token'"]),
    ({"credentials": [{"kind": "api_key", "value": "short"}]}, ["credentials[0].value", "<secret>", "at least 8"]),
    ({"credentials": [{"kind": "password", "value": " padded-value"}]}, ["credentials[0].value", "<secret>"]),
    ({"credentials": [{"kind": "api_key", "value": "abcdefghij", "account": "  "}]}, ["credentials[0].account", "blank"]),
    ({"credentials": [{"kind": "api_key"}]}, ["credentials[0].value", "required"]),
    ({"object_ids": [{"service": "orders", "id": "orders"}]}, ["object_ids[0].id", "'orders'", "not id-like"]),
    ({"object_ids": [{"service": "", "id": "123"}]}, ["object_ids[0].service", "''"]),
    ({"object_ids": [{"id": "123", "svc": "x"}]}, ["object_ids[0]"]),
    ({"tokens": []}, ["tokens", "[]"]),
    (["not", "a", "mapping"], ["expected a mapping", "list"]),
])  # fmt: skip
def test_errors_name_the_key_and_the_value(document: object, names: list[str]) -> None:
    with pytest.raises(SettingsError) as err:
        parse_honeytokens(document, source="h.yaml")
    message = str(err.value)
    assert message.startswith("h.yaml")
    for name in names:
        assert name in message
    assert "short" not in message and "padded-value" not in message  # credential values are never echoed


def test_a_duplicate_key_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text("object_ids: []\ncredentials: []\nobject_ids: []\n")
    with pytest.raises(SettingsError, match=r"h\.yaml:3: duplicate key 'object_ids'$"):
        load_honeytokens(path)


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="nope.yaml"):
        load_honeytokens(tmp_path / "nope.yaml")


@pytest.mark.skipif(not DEPLOYED.exists(), reason="deploy/runtime/honeytokens.yaml not written yet")
def test_the_demo_honeytokens_load() -> None:
    assert len(load_honeytokens(DEPLOYED)) > 0


def test_a_syntax_error_names_its_line_and_never_quotes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text("credentials:\n  - {kind: api_key, value: kw-secret-value-1\n")
    with pytest.raises(SettingsError, match=r"h.yaml:\d+: ") as err:
        load_honeytokens(path)
    assert "kw-secret-value-1" not in str(err.value)
