"""ingest.templating: concrete paths become templates plus the object ids they name, stateless or learned."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.openapi import SpecIndex, parse_spec
from ingest.templating import STRONG, WEAK, WORD, PathTemplater, hash_object_id, id_kind, template_path


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


# --- id kinds ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("segment", "kind"),
    [
        ("pods", WORD),
        ("kube-system", WORD),
        ("john.doe", WORD),
        ("v1beta1", WORD),
        ("2010-04-01", WEAK),
        ("81231", STRONG),
        ("3fa85f64-5717-4562-b3fc-2c963f66afa6", STRONG),
        ("john.doe@example.com", STRONG),
        ("sha256:" + "ab" * 32, STRONG),
        ("10.0.0.12", STRONG),
        ("2024-05-01T10:00:00Z", STRONG),
        ("AC" + "0f" * 16, STRONG),
        ("00ub0oNGTSWTBKOLGLNR", STRONG),
        ("nginx-7d9f8c6b5-x2k4p", STRONG),
    ],
)
def test_id_kind(segment: str, kind: int) -> None:
    assert id_kind(segment) == kind


@pytest.mark.parametrize(
    ("path", "template", "ids"),
    [
        ("/users/john.doe@example.com/keys", "/users/{id}/keys", ["john.doe@example.com"]),
        ("/v2/library/nginx/manifests/sha256:" + "ab" * 32, "/v2/library/nginx/manifests/{id}", ["sha256:" + "ab" * 32]),
        ("/Calls/CA" + "0f" * 16 + ".json", "/Calls/{id}.json", ["CA" + "0f" * 16]),
        ("/2010-04-01/Accounts.json", "/{id}/Accounts.json", ["2010-04-01"]),
    ],
    ids=["email", "digest", "id-with-extension", "date-stays-an-id-here"],
)
def test_template_path_knows_more_id_shapes(path: str, template: str, ids: list[str]) -> None:
    assert template_path(path) == (template, ids)


# --- PathTemplater ---------------------------------------------------------------------------

def learned(paths: list[str], **options: Any) -> PathTemplater:
    templater = PathTemplater(**options)
    for path in paths:
        templater.observe("svc", "GET", path)
    templater.refresh("svc")
    return templater


def shape(templater: PathTemplater, path: str) -> str:
    return templater.template("svc", "GET", path)[0]


RESOURCES = ["pods", "services", "configmaps", "secrets", "endpoints", "events", "nodes", "namespaces", "serviceaccounts", "limitranges"]
NAMES = ["default", "kube-system", "payments", "john.doe", "web-2", "billing-api", "alice", "monitoring", "nginx", "team-a", "staging", "frontend"]


def test_an_unknown_service_uses_the_stateless_heuristic() -> None:
    assert PathTemplater().template("nobody", "GET", "/orders/42?x=1") == ("/orders/{id}", ["42"])


@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12), min_size=1, max_size=8))
def test_a_static_path_seen_once_comes_back_unchanged(words: list[str]) -> None:
    path = "/" + "/".join(words)
    assert learned([path]).template("svc", "GET", path) == (path, [])


def test_ids_are_templated_from_the_first_request() -> None:
    templater = learned(["/orders/81231/items"])
    assert templater.template("svc", "GET", "/orders/81231/items") == ("/orders/{id}/items", ["81231"])
    assert templater.template("svc", "GET", "/orders/99/items") == ("/orders/{id}/items", ["99"])


def test_word_values_become_a_parameter_while_frequent_siblings_stay() -> None:
    paths = [f"/user/{name}" for name in NAMES[:6]] + ["/user/login", "/user/logout", "/user/createWithList"] * 4
    templater = learned(paths)
    assert shape(templater, "/user/someone-new") == "/user/{id}"
    assert shape(templater, "/user/default") == "/user/{id}"
    assert [shape(templater, f"/user/{s}") for s in ("login", "logout", "createWithList")] == ["/user/login", "/user/logout", "/user/createWithList"]


def test_a_kubernetes_like_vocabulary_stays_literal_and_namespaces_do_not() -> None:
    paths = [f"/api/v1/{r}" for r in RESOURCES] * 5
    # each namespace is seen twice (two resources), each namespaced resource about five times
    paths += [f"/api/v1/namespaces/{ns}/{RESOURCES[(i + k) % 5]}" for i, ns in enumerate(NAMES) for k in (0, 1)]
    templater = learned(paths)
    assert [shape(templater, f"/api/v1/{r}") for r in RESOURCES] == [f"/api/v1/{r}" for r in RESOURCES]
    assert shape(templater, "/api/v1/namespaces/brand-new/pods") == "/api/v1/namespaces/{id}/pods"
    assert shape(templater, "/api/v1/namespaces/default/secrets") == "/api/v1/namespaces/{id}/secrets"


def test_a_few_frequent_values_with_alike_subtrees_are_a_parameter() -> None:
    paths = [f"/namespaces/{ns}/{r}" for ns in NAMES[:5] for r in RESOURCES[:6]] * 10
    assert shape(learned(paths), "/namespaces/kube-system/pods") == "/namespaces/{id}/pods"


def test_api_versions_with_identical_subtrees_stay_literal() -> None:
    paths = [f"/apis/apps/{v}/{r}" for v in ("v1", "v1beta1", "v1beta2", "v2") for r in RESOURCES[:5]] * 10
    templater = learned(paths)
    assert [shape(templater, f"/apis/apps/{v}/pods") for v in ("v1", "v2")] == ["/apis/apps/v1/pods", "/apis/apps/v2/pods"]


def test_a_known_extension_stays_out_of_the_parameter() -> None:
    sids = [f"CA{i:032x}" for i in range(1, 6)]
    paths = ["/Accounts/Calls.json"] * 5 + [f"/Accounts/Calls/{s}.json" for s in sids] + [f"/Accounts/Calls/{s}/Recordings.json" for s in sids]
    templater = learned(paths)
    assert templater.template("svc", "GET", f"/Accounts/Calls/CA{99:032x}.json") == ("/Accounts/Calls/{id}.json", [f"CA{99:032x}"])
    assert shape(templater, f"/Accounts/Calls/CA{99:032x}/Recordings.json") == "/Accounts/Calls/{id}/Recordings.json"
    assert shape(templater, "/Accounts/Calls.json") == "/Accounts/Calls.json"


def test_file_names_with_several_extensions_are_one_parameter() -> None:
    files = ["report-2024.pdf", "logo.png", "q1-summary.csv", "notes.txt", "a1b2c3d4e5f6.pdf"]
    templater = learned([f"/attachments/{f}" for f in files])
    assert shape(templater, "/attachments/another.docx") == "/attachments/{id}"
    assert templater.template("svc", "GET", "/attachments/logo.png") == ("/attachments/{id}", ["logo.png"])


def test_one_date_is_a_version_and_several_are_values() -> None:
    templater = learned(["/2010-04-01/Accounts.json"] * 5 + [f"/reports/2024-01-{d:02d}" for d in (1, 2, 3)])
    assert shape(templater, "/2010-04-01/Accounts.json") == "/2010-04-01/Accounts.json"
    assert shape(templater, "/reports/2024-02-02") == "/reports/{id}"


def test_the_query_is_dropped_and_a_trailing_slash_kept() -> None:
    templater = learned(["/api/", "/api/v1/", "/orders/12/?page=2"])
    assert [shape(templater, p) for p in ("/api/", "/api/v1/", "/orders/13/?q=1")] == ["/api/", "/api/v1/", "/orders/{id}/"]


def test_a_declared_spec_wins_for_the_paths_it_matches() -> None:
    spec = SpecIndex(parse_spec({"openapi": "3.0.0", "paths": {"/user/{username}": {"get": {}}, "/user/login": {"get": {}}}}))
    templater = PathTemplater(specs={"svc": spec})
    for path in ["/user/login"] * 5 + ["/user/alice", "/user/bob", "/orders/7"]:
        templater.observe("svc", "GET", path)
    templater.refresh()
    assert templater.template("svc", "GET", "/user/alice") == ("/user/{username}", ["alice"])
    assert templater.template("svc", "GET", "/user/login") == ("/user/login", [])
    assert templater.template("svc", "GET", "/orders/8") == ("/orders/{id}", ["8"])
    assert templater.template("other", "GET", "/user/alice") == ("/user/alice", [])


def test_templates_change_as_traffic_arrives() -> None:
    templater = PathTemplater()
    assert templater.learn("svc", "GET", "/teams/alpha") == ("/teams/alpha", [])
    for name in ("beta", "gamma", "delta"):
        templater.observe("svc", "GET", f"/teams/{name}")
    templater.refresh("svc")
    assert shape(templater, "/teams/alpha") == "/teams/{id}"
    for _ in range(10):
        templater.observe("svc", "GET", "/teams/alpha")
    templater.refresh("svc")
    assert shape(templater, "/teams/alpha") == "/teams/alpha"


def test_observe_compiles_on_its_own_schedule() -> None:
    templater = PathTemplater(recompile_every=4)
    templater.observe("svc", "GET", "/a")
    assert shape(templater, "/a") == "/a"
    for name in NAMES:
        templater.observe("svc", "GET", f"/teams/{name}")
    # no refresh: a young service is recompiled as it learns, so a never-seen word is already a value
    assert shape(templater, "/teams/brand-new") == "/teams/{id}"


def test_templates_lists_the_learned_endpoints() -> None:
    templater = learned(["/a/1", "/a/2/x", "/b", "/"])
    assert templater.templates("svc") == ["/", "/a/{id}", "/a/{id}/x", "/b"]
    assert templater.templates("nobody") == []


def test_children_per_position_are_capped_and_the_overflow_is_a_parameter() -> None:
    templater = learned([f"/users/{name}-{suffix}" for name in NAMES for suffix in ("x", "y", "z")], max_children=8)
    raw = templater._raw["svc"].lits["users"]
    assert len(raw.lits) == 8 and "" in raw.ids
    assert shape(templater, "/users/nobody-seen") == "/users/{id}"


def test_nodes_per_service_are_capped() -> None:
    templater = learned([f"/{a}/{b}/{c}" for a in NAMES for b in RESOURCES for c in ("x", "y")], max_nodes=50)
    assert templater._nodes["svc"] == 50
    assert shape(templater, "/default/pods/x").startswith("/")


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_observation_order_does_not_change_the_templates(rnd: Any) -> None:
    paths = [f"/api/v1/{r}" for r in RESOURCES] * 3 + [f"/api/v1/namespaces/{ns}/{r}" for ns in NAMES for r in RESOURCES[:3]] + [f"/orders/{i}" for i in range(5)]
    shuffled = list(paths)
    rnd.shuffle(shuffled)
    assert learned(paths).templates("svc") == learned(shuffled).templates("svc")


def test_templating_after_learning_takes_microseconds() -> None:
    paths = [f"/api/v1/namespaces/{ns}/{r}/{ns}-{i}" for ns in NAMES for r in RESOURCES for i in range(3)]
    templater = learned(paths)
    start = time.perf_counter()
    for path in paths:
        templater.template("svc", "GET", path)
    per_call = (time.perf_counter() - start) / len(paths)
    assert per_call < 500e-6, per_call  # a trie walk; generous for a shared CI machine
