"""ingest.templating: concrete paths become templates plus the object ids they name."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.templating import hash_object_id, template_path


@pytest.mark.parametrize(
    ("path", "template", "ids"),
    [
        ("/orders/81231/items", "/orders/{id}/items", ["81231"]),
        ("/orders/7", "/orders/{id}", ["7"]),
        ("/users/3fa85f64-5717-4562-b3fc-2c963f66afa6", "/users/{id}", ["3fa85f64-5717-4562-b3fc-2c963f66afa6"]),
        ("/users/3FA85F64-5717-4562-B3FC-2C963F66AFA6/x", "/users/{id}/x", ["3FA85F64-5717-4562-B3FC-2C963F66AFA6"]),
        ("/blobs/0123456789abcdef", "/blobs/{id}", ["0123456789abcdef"]),
        ("/blobs/deadbeefcafe", "/blobs/{id}", ["deadbeefcafe"]),
        ("/tokens/a1b2c3d4e5f6g7", "/tokens/{id}", ["a1b2c3d4e5f6g7"]),
        ("/pods/web-7fb96c846b-2xkzq", "/pods/{id}", ["web-7fb96c846b-2xkzq"]),
        ("/a/1/b/2/c", "/a/{id}/b/{id}/c", ["1", "2"]),
    ],
    ids=["digits", "one-digit", "uuid", "uuid-upper", "long-hex", "hex-12", "mixed-token", "pod-name", "two-ids"],
)
def test_id_segments_are_templated(path: str, template: str, ids: list[str]) -> None:
    assert template_path(path) == (template, ids)


@pytest.mark.parametrize(
    "path",
    ["/v1/orders", "/api/v2/catalog", "/healthz", "/orders/search", "/deadbeef", "/users/me", "/a-b_c/short1", "/abcdefghijklmnop", "/"],
    ids=["version", "api-version", "health", "word", "short-hex", "me", "short-token", "long-letters-only", "root"],
)
def test_non_id_segments_stay(path: str) -> None:
    assert template_path(path) == (path, [])


@pytest.mark.parametrize(
    ("path", "template", "ids"),
    [
        ("/orders/81231/items?expand=1", "/orders/{id}/items", ["81231"]),
        ("/search?q=81231&page=2", "/search", []),
        ("/x?", "/x", []),
        ("?only=query", "/", []),
    ],
)
def test_query_is_dropped(path: str, template: str, ids: list[str]) -> None:
    assert template_path(path) == (template, ids)


def test_empty_path_is_root_and_trailing_slash_is_kept() -> None:
    assert template_path("") == ("/", [])
    assert template_path("/orders/12/") == ("/orders/{id}/", ["12"])


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=5))
def test_every_numeric_segment_becomes_an_id(numbers: list[int]) -> None:
    path = "".join(f"/r{i}/{n}" for i, n in enumerate(numbers))
    template, ids = template_path(path)
    assert ids == [str(n) for n in numbers]
    assert template == "".join(f"/r{i}/{{id}}" for i in range(len(numbers)))


@given(st.uuids())
def test_every_uuid_is_an_id(value: uuid.UUID) -> None:
    assert template_path(f"/things/{value}/children") == ("/things/{id}/children", [str(value)])


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=30))
def test_lowercase_words_are_never_ids(word: str) -> None:
    assert template_path(f"/{word}") == (f"/{word}", [])


@given(st.text(alphabet="/abcdefghij0123456789-", max_size=40))
def test_templating_is_idempotent(path: str) -> None:
    template, _ = template_path(path)
    assert template_path(template) == (template, [])


KEY = b"object-key"


def test_hash_is_16_hex_characters() -> None:
    digest = hash_object_id("81231", KEY)
    assert len(digest) == 16 and int(digest, 16) >= 0


def test_hash_is_stable_keyed_blake2b() -> None:
    """Stable across calls and processes: the simulator and the shim must hash an id the same way."""
    expected = hashlib.blake2b(b"81231", key=KEY, digest_size=8).hexdigest()
    assert hash_object_id("81231", KEY) == hash_object_id("81231", KEY) == expected


def test_hash_is_keyed() -> None:
    assert hash_object_id("81231", KEY) != hash_object_id("81231", b"another-key")


def test_hash_does_not_contain_the_id() -> None:
    assert "81231" not in hash_object_id("81231", KEY)


@given(st.lists(st.text(min_size=1, max_size=20), min_size=2, max_size=50, unique=True))
def test_distinct_ids_hash_apart(values: list[str]) -> None:
    assert len({hash_object_id(v, KEY) for v in values}) == len(values)


def test_module_doctests_pass() -> None:
    import doctest

    import ingest.templating

    result = doctest.testmod(ingest.templating)
    assert result.attempted >= 1 and result.failed == 0


def test_a_long_object_id_key_still_hashes() -> None:
    digest = hash_object_id("81231", b"k" * 65)
    assert len(digest) == 16 and digest != hash_object_id("81231", b"k" * 64)
