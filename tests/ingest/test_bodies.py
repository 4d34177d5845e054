"""Bodies to features: JSON, NDJSON, forms, multipart and text read within limits; bad input never raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.bodies import BodyLimits, body_features, query_object_ids, walk_body
from ingest.errors import SettingsError
from ingest.sensitive import CARD, EMAIL, PHONE, SECRET


def as_json(doc: object) -> bytes:
    return json.dumps(doc).encode()


# ------------------------------------------------------------------ JSON


def test_nested_json_leaves_have_paths() -> None:
    walk = walk_body(as_json({"data": [{"user": {"email": "a@example.org", "tags": ["x", "y"]}}], "n": 1}), "application/json")
    assert walk.kind == "json"
    assert walk.leaves == [("data[].user.email", "a@example.org"), ("data[].user.tags[]", "x"),
                           ("data[].user.tags[]", "y"), ("n", 1)]


def test_features_of_a_page_of_records() -> None:
    users = [{"id": i, "uuid": f"3f1c2a4e-8b7d-4c2e-9a1f-00000000000{i}", "email": f"u{i}@example.org",
              "phone": "+44 20 7946 0958", "card": {"last4": "4242"}} for i in range(3)]
    f = body_features(as_json({"data": users, "page": 1, "total": 3}), "application/json; charset=utf-8")
    assert f.sensitive == {EMAIL: 3, PHONE: 3}
    assert f.records == 3
    assert f.object_ids == [x for i in range(3) for x in (str(i), f"3f1c2a4e-8b7d-4c2e-9a1f-00000000000{i}")]
    assert (f.truncated, f.parse_error, f.kind) == (False, None, "json")


@pytest.mark.parametrize(
    ("doc", "records"),
    [([{"id": 1}, {"id": 2}], 2), ([], 0), ({"items": [{"a": 1}] * 4}, 4), ({"results": []}, 0),
     ({"data": {"users": [{"id": 1}, {"id": 2}]}}, 2), ({"id": 9, "name": "x"}, 1), ({"error": "nope"}, 0),
     ({"data": [1, 2, 3], "rows": [{"a": 1}]}, 1), ("just a string", 0)],
)
def test_records(doc: object, records: int) -> None:
    assert body_features(as_json(doc), "application/json").records == records


def test_object_ids_from_id_named_fields_deduplicated() -> None:
    doc = {"id": "o-1", "user_id": 7, "ownerId": "u-9", "order_uuid": "abc", "paid": True, "valid": "x",
           "ids": [1, 2, 2], "flag_id": False, "note_id": None, "ratio_id": 0.5,
           "items": [{"id": "o-1"}, {"id": "o-2"}]}
    ids = body_features(as_json(doc), "application/json").object_ids
    assert ids == ["o-1", "7", "u-9", "abc", "1", "2", "o-2"]


def test_object_ids_are_capped_and_long_values_dropped() -> None:
    doc = [{"id": i} for i in range(50)] + [{"id": "x" * 300}]
    f = body_features(as_json(doc), "application/json", limits=BodyLimits(max_ids=10, max_id_chars=128))
    assert f.object_ids == [str(i) for i in range(10)]


def test_malformed_json_is_scanned_as_text_with_a_flag() -> None:
    body = b'{"data": [{"id": 41, "email": "a@example.org"}, {"id": "x-2", "email": "b@exa'
    f = body_features(body, "application/json")
    assert f.parse_error is not None and f.parse_error.startswith("invalid JSON")
    assert f.sensitive == {EMAIL: 1}
    assert f.object_ids == ["41", "x-2"]
    assert f.records == 0


def test_oversized_body_is_cut_and_flagged() -> None:
    body = as_json([{"id": i, "email": f"u{i}@example.org"} for i in range(200)])
    f = body_features(body, "application/json", limits=BodyLimits(max_bytes=1000))
    assert f.truncated and f.parse_error == "truncated"
    assert 0 < f.sensitive[EMAIL] < 200
    assert f.object_ids[:3] == ["0", "1", "2"]


def test_leaf_and_depth_limits() -> None:
    wide = walk_body(as_json({"a": list(range(100))}), "application/json", limits=BodyLimits(max_leaves=10))
    assert len(wide.leaves) == 10 and wide.truncated
    deep_doc: object = "bottom"
    for _ in range(50):
        deep_doc = {"k": deep_doc}
    deep = walk_body(as_json(deep_doc), "application/json", limits=BodyLimits(max_depth=8))
    assert deep.leaves == [] and deep.truncated
    shallow = walk_body(as_json(deep_doc), "application/json")
    assert shallow.truncated and shallow.leaves == []  # 50 levels is past the default depth of 32


def test_json_past_the_parser_nesting_limit_does_not_raise() -> None:
    f = body_features(b"[" * 5000 + b"]" * 5000, "application/json")
    assert f.parse_error is not None and f.sensitive == {}


def test_ndjson_counts_each_line_as_a_record() -> None:
    body = b'{"id": 1, "email": "a@example.org"}\n{"id": 2}\nnot json\n{"id": 3}\n'
    f = body_features(body, "application/x-ndjson")
    assert (f.records, f.object_ids, f.sensitive) == (3, ["1", "2", "3"], {EMAIL: 1})
    assert f.parse_error is not None


# ------------------------------------------------------------------ forms, multipart, text


def test_form_urlencoded_fields() -> None:
    body = b"user%5Bemail%5D=a%40example.org&password=Tr0ub4dor%263&card=4111+1111+1111+1111&ids%5B%5D=5&empty="
    walk = walk_body(body, "application/x-www-form-urlencoded")
    assert walk.leaves[:2] == [("user.email", "a@example.org"), ("password", "Tr0ub4dor&3")]
    f = body_features(body, "application/x-www-form-urlencoded")
    assert f.sensitive == {EMAIL: 1, SECRET: 1, CARD: 1}
    assert f.object_ids == ["5"]


def test_form_leaf_limit() -> None:
    body = "&".join(f"f{i}=v" for i in range(50)).encode()
    walk = walk_body(body, "application/x-www-form-urlencoded", limits=BodyLimits(max_leaves=5))
    assert len(walk.leaves) == 5 and walk.truncated


def multipart(boundary: str, *parts: tuple[str, str | None, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, ctype, payload in parts:
        disp = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = disp + (f"\r\nContent-Type: {ctype}" if ctype else "")
        out += f"--{boundary}\r\n{head}\r\n\r\n".encode() + payload + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_multipart_text_and_json_parts_read_binary_files_skipped() -> None:
    body = multipart(
        "XyZ",
        ("email", None, None, b"a@example.org"),
        ("meta", None, "application/json", b'{"owner_id": 12, "ssn": "536-22-1234"}'),
        ("avatar", "me.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"b@example.org"),
        ("notes", "notes.txt", "text/plain", b"call +44 20 7946 0958"),
    )
    f = body_features(body, 'multipart/form-data; boundary="XyZ"')
    assert f.kind == "multipart"
    assert f.sensitive == {EMAIL: 1, "ssn": 1, PHONE: 1}
    assert f.object_ids == ["12"]


def test_multipart_without_boundary_is_text_with_a_flag() -> None:
    f = body_features(b"--x\r\n\r\na@example.org", "multipart/form-data")
    assert f.parse_error == "multipart without boundary" and f.sensitive == {EMAIL: 1}


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "text/plain", "application/xml", None])
def test_text_bodies_are_one_leaf(ctype: str | None) -> None:
    body = b"<p>Contact a@example.org or +1-202-555-0143</p>"
    walk = walk_body(body, ctype)
    assert walk.kind == "text" and walk.leaves == [("", body.decode())]
    assert body_features(body, ctype).sensitive == {EMAIL: 1, PHONE: 1}


@pytest.mark.parametrize("ctype", ["image/png", "application/octet-stream", "application/grpc", None])
def test_binary_bodies_are_not_read(ctype: str | None) -> None:
    body = b"\x00\x01a@example.org\x00"
    assert walk_body(body, ctype).kind == "binary"
    assert body_features(body, ctype).sensitive == {}


def test_json_is_sniffed_without_a_content_type() -> None:
    assert walk_body(b'  {"id": 1}', None).kind == "json"


def test_declared_charset_is_used() -> None:
    body = "{\"name\": \"Jos\u00e9\", \"email\": \"jose@example.org\"}".encode("latin-1")
    f = body_features(body, "application/json; charset=latin-1")
    assert f.sensitive == {EMAIL: 1}
    text = walk_body("caf\u00e9 a@example.org".encode("latin-1"), "text/plain; charset=iso-8859-1")
    assert text.leaves == [("", "caf\u00e9 a@example.org")]


@pytest.mark.parametrize("body", [b"", b"   \n"])
def test_empty_body(body: bytes) -> None:
    f = body_features(body, "application/json")
    assert (f.kind, f.sensitive, f.object_ids, f.records, f.parse_error) == ("empty", {}, [], 0, None)


# ------------------------------------------------------------------ query strings and limits


@pytest.mark.parametrize(
    ("query", "ids"),
    [("?id=7", ["7"]), ("id=7&user_id=u1&q=hello", ["7", "u1"]), ("/orders?orderId=9&page=2", ["9"]),
     ("ids=1,2,3", ["1", "2", "3"]), ("ids[]=4&ids[]=5&ids[]=4", ["4", "5"]), ("user_id=a%2Fb", ["a/b"]),
     ("page=2&paid=1&valid=yes", []), ("id=", []), ("", []), ("/plain/path", [])],
)
def test_query_object_ids(query: str, ids: list[str]) -> None:
    assert query_object_ids(query) == ids


def test_query_object_ids_are_capped() -> None:
    query = "ids=" + ",".join(str(i) for i in range(100))
    assert query_object_ids(query, limits=BodyLimits(max_ids=5)) == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("field", ["max_bytes", "max_leaves", "max_depth", "max_ids", "max_id_chars"])
def test_limits_reject_non_positive_values_naming_the_key(field: str) -> None:
    with pytest.raises(SettingsError, match=rf"BodyLimits\.{field}=0"):
        BodyLimits(**{field: 0})


# ------------------------------------------------------------------ never raises

CONTENT_TYPES = st.sampled_from([
    None, "application/json", "application/x-ndjson", "application/x-www-form-urlencoded", "text/html",
    "multipart/form-data; boundary=b", "multipart/form-data", "application/json; charset=utf-16",
    "text/plain; charset=bogus", "text/plain; charset=rot13", "image/png", "application/vnd.api+json",
])


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=2048), ctype=CONTENT_TYPES)
def test_body_features_never_raises_on_arbitrary_bytes(body: bytes, ctype: str | None) -> None:
    f = body_features(body, ctype, limits=BodyLimits(max_bytes=1024, max_leaves=50, max_depth=4, max_ids=20))
    assert all(isinstance(v, int) and v > 0 for v in f.sensitive.values())
    assert len(f.object_ids) <= 20 and f.records >= 0


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(doc=JSON_VALUES, cut=st.integers(min_value=1, max_value=400))
def test_body_features_never_raises_on_json_whole_or_cut(doc: object, cut: int) -> None:
    body = json.dumps(doc).encode()
    whole = body_features(body, "application/json")
    assert whole.parse_error is None or "64-bit" in whole.parse_error or "Integer" in whole.parse_error
    body_features(body[:cut], "application/json", limits=BodyLimits(max_bytes=cut))
