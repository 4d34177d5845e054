"""ingest.openapi: declared endpoints from OpenAPI 3 / Swagger 2 documents, and matching paths to them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ingest.errors import IngestError
from ingest.openapi import DeclaredEndpoint, SpecError, SpecIndex, load_spec, parse_spec, structural


def oas3(paths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "servers": [{"url": "https://api.example.com/v2"}], "paths": paths, **extra}


PETS = oas3(
    {
        "/pets": {"get": {"operationId": "listPets"}, "post": {}},
        "/pets/{petId}": {
            "parameters": [{"$ref": "#/components/parameters/PetId"}],
            "get": {"parameters": [{"name": "expand", "in": "query", "schema": {"type": "boolean"}}]},
            "delete": {"deprecated": True, "parameters": [{"name": "petId", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}]},
        },
        "/pets/mine": {"get": {}},
        "/pets/{petId}/photos/{photo}.json": {"get": {}},
        "/files/{id}#update": {"put": {}},
        "/files/{id}": {"get": {}},
    },
    components={"parameters": {"PetId": {"name": "petId", "in": "path", "required": True, "schema": {"type": "integer", "format": "int64", "minimum": 1}}}},
)


def by_key(endpoints: list[DeclaredEndpoint]) -> dict[tuple[str, str], DeclaredEndpoint]:
    return {(ep.method, ep.path): ep for ep in endpoints}


def test_oas3_operations_carry_the_server_base_path() -> None:
    eps = by_key(parse_spec(PETS))
    assert eps[("GET", "/pets")].template == "/v2/pets"
    assert eps[("GET", "/pets")].base_path == "/v2"
    assert eps[("GET", "/pets")].operation_id == "listPets"
    assert len(eps) == 8


def test_path_level_parameters_are_inherited_and_resolved_through_ref() -> None:
    get = by_key(parse_spec(PETS))[("GET", "/pets/{petId}")]
    pet = get.params["petId"]
    assert (pet.location, pet.type, pet.format, pet.minimum, pet.required) == ("path", "integer", "int64", 1.0, True)
    assert get.params["expand"].location == "query"


def test_an_operation_parameter_overrides_the_path_level_one() -> None:
    delete = by_key(parse_spec(PETS))[("DELETE", "/pets/{petId}")]
    assert delete.params["petId"].format == "uuid"
    assert delete.deprecated is True
    assert by_key(parse_spec(PETS))[("GET", "/pets/{petId}")].deprecated is False


def test_a_fragment_in_the_path_key_is_not_on_the_wire() -> None:
    eps = by_key(parse_spec(PETS))
    assert eps[("PUT", "/files/{id}#update")].template == "/v2/files/{id}"


def test_swagger2_uses_base_path_and_parameter_level_schema() -> None:
    doc = {
        "swagger": "2.0",
        "basePath": "/api/v2.0/",
        "paths": {"/projects/{project_id}": {"get": {"parameters": [{"name": "project_id", "in": "path", "type": "integer", "format": "int64"}]}}},
    }
    (ep,) = parse_spec(doc)
    assert (ep.template, ep.params["project_id"].type, ep.params["project_id"].format) == ("/api/v2.0/projects/{project_id}", "integer", "int64")


def test_server_variables_and_operation_servers() -> None:
    doc = oas3(
        {"/a": {"get": {}}, "/b": {"get": {"servers": [{"url": "https://other.example.com/x/"}]}}},
        servers=[{"url": "https://{tenant}.example.com/{base}", "variables": {"tenant": {"default": "acme"}, "base": {"default": "api"}}}],
    )
    assert [ep.template for ep in parse_spec(doc)] == ["/api/a", "/x/b"]


def test_path_items_without_operations_are_skipped_unless_asked_for() -> None:
    doc = oas3({"/watch/pods": {"parameters": [{"name": "watch", "in": "query"}]}, "/pods": {"get": {}}})
    assert [ep.template for ep in parse_spec(doc)] == ["/v2/pods"]
    bare = [ep for ep in parse_spec(doc, bare_paths="GET") if ep.path == "/watch/pods"]
    assert [(ep.method, ep.template) for ep in bare] == [("GET", "/v2/watch/pods")]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"paths": {}}, "openapi/swagger=''"),
        ({"openapi": "3.0.0", "paths": []}, "paths=list"),
        (oas3({"/a": {"get": {"parameters": [{"$ref": "#/components/parameters/Nope"}]}}}), "$ref='#/components/parameters/Nope'"),
        (oas3({"/a": {"get": {"parameters": [{"$ref": "other.yaml#/P"}]}}}), "only local references"),
    ],
    ids=["no-version", "paths-not-a-mapping", "missing-ref", "external-ref"],
)
def test_bad_documents_raise_a_spec_error_naming_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert message in str(info.value) and isinstance(info.value, IngestError)


def test_load_spec_reads_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(PETS))
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(PETS))
    assert load_spec(tmp_path / "a.json") == load_spec(tmp_path / "a.yaml") == PETS
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SpecError, match="top level is list"):
        load_spec(tmp_path / "list.yaml")


def test_structural_drops_parameter_names_only() -> None:
    assert structural("/pets/{petId}") == structural("/pets/{id}") == "/pets/{}"
    assert structural("/a/{x}.json/thumbnail.{ext}") == "/a/{}.json/thumbnail.{}"
    assert structural("/pets/mine") == "/pets/mine"


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC_", min_size=1, max_size=8)
literals = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-.", min_size=1, max_size=8)


@given(st.lists(st.tuples(literals, names), min_size=1, max_size=5), st.lists(names, min_size=5, max_size=5))
def test_templates_that_differ_only_in_names_have_one_structure(parts: list[tuple[str, str]], other: list[str]) -> None:
    first = "".join(f"/{lit}/{{{name}}}" for lit, name in parts)
    second = "".join(f"/{lit}/{{{other[i]}}}" for i, (lit, _) in enumerate(parts))
    assert structural(first) == structural(second) == structural(structural(first))


INDEX = SpecIndex(parse_spec(PETS))


@pytest.mark.parametrize(
    ("path", "template", "values"),
    [
        ("/v2/pets", "/v2/pets", ()),
        ("/v2/pets/mine", "/v2/pets/mine", ()),
        ("/v2/pets/42?expand=true", "/v2/pets/{petId}", (("petId", "42"),)),
        ("/v2/pets/42/photos/p9.json", "/v2/pets/{petId}/photos/{photo}.json", (("petId", "42"), ("photo", "p9"))),
        ("/v2/files/abc", "/v2/files/{id}", (("id", "abc"),)),
    ],
    ids=["static", "literal-beats-parameter", "parameter", "mixed-segment", "fragment-key"],
)
def test_lookup_finds_the_most_specific_template(path: str, template: str, values: tuple[tuple[str, str], ...]) -> None:
    found = INDEX.lookup(path)
    assert found is not None and (found.template, found.values) == (template, values)
    assert found.ids == [v for _, v in values]


@pytest.mark.parametrize("path", ["/v2/dogs", "/v2/pets/42/photos/p9.xml", "/pets", "/v2/pets/42/photos"])
def test_lookup_of_an_undeclared_path_is_none(path: str) -> None:
    assert INDEX.lookup(path) is None


def test_match_needs_the_method_declared_on_that_path() -> None:
    assert INDEX.match("delete", "/v2/pets/7") == by_key(parse_spec(PETS))[("DELETE", "/pets/{petId}")]
    assert INDEX.match("PATCH", "/v2/pets/7") is None
    assert INDEX.match("GET", "/v2/pets/mine") is not None and INDEX.match("DELETE", "/v2/pets/mine") is None


def test_lookup_backtracks_from_a_literal_that_leads_nowhere() -> None:
    index = SpecIndex(parse_spec(oas3({"/users/me": {"get": {}}, "/users/{id}/keys": {"get": {}}})))
    found = index.lookup("/v2/users/me/keys")
    assert found is not None and found.template == "/v2/users/{id}/keys" and found.ids == ["me"]


def test_every_template_of_a_spec_matches_itself_with_placeholder_values() -> None:
    for ep in INDEX.endpoints:
        concrete = ep.template.replace("{", "x").replace("}", "")
        found = INDEX.lookup(concrete)
        assert found is not None and found.endpoints[ep.method].template == ep.template


BODY_SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "paths": {
        "/users": {"post": {"requestBody": {"$ref": "#/components/requestBodies/NewUser"}}},
        "/users/{id}": {"put": {"requestBody": {"content": {"application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/User"}}}}},
                        "get": {}},
        "/login": {"post": {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object", "properties": {"user": {"type": "string", "maxLength": 32}}}}}}}},
        "/broken": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "other.yaml#/User"}}}}}},
    },
    "components": {
        "requestBodies": {"NewUser": {"content": {"application/json": {"schema": {
            "allOf": [{"$ref": "#/components/schemas/User"}, {"type": "object", "properties": {"password": {"type": "string"}}}]}}}}},
        "schemas": {"User": {"type": "object", "additionalProperties": False, "properties": {
            "id": {"type": "string", "readOnly": True},
            "name": {"type": ["string", "null"], "maxLength": 40},
            "friends": {"type": "array", "items": {"$ref": "#/components/schemas/User"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}},
    },
}


def _bodies(doc: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(ep.method, ep.template): ep.body for ep in parse_spec(doc)}


def test_request_body_schemas_become_property_paths_with_refs_resolved() -> None:
    bodies = _bodies(BODY_SPEC)
    put = bodies[("PUT", "/users/{id}")]
    assert put.kind == "json" and put.closed >= {""}
    assert put.rule("id").read_only and put.rule("name").types == frozenset({"string", "null"}) and put.rule("name").max_length == 40
    assert put.rule("labels").free_form and put.rule("friends[]") is not None
    assert put.rule("friends[]").free_form  # a recursive schema ends in a free-form node instead of looping
    assert bodies[("GET", "/users/{id}")] is None


def test_composed_schemas_merge_properties_without_closing_the_object() -> None:
    post = _bodies(BODY_SPEC)[("POST", "/users")]
    assert {"id", "name", "password"} <= set(post.properties) and "" not in post.closed


def test_form_bodies_and_unresolvable_refs() -> None:
    bodies = _bodies(BODY_SPEC)
    assert bodies[("POST", "/login")].kind == "form" and bodies[("POST", "/login")].rule("user").max_length == 32
    assert bodies[("POST", "/broken")].rule("").free_form  # another file's $ref: the endpoint stays declared, the body accepts anything


def test_swagger2_body_and_form_data_parameters() -> None:
    doc = {"swagger": "2.0", "paths": {
        "/pets": {"post": {"parameters": [{"in": "body", "name": "pet", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}]}},
        "/upload": {"post": {"parameters": [{"in": "formData", "name": "title", "type": "string", "maxLength": 9},
                                            {"in": "formData", "name": "file", "type": "file"}]}}}}
    bodies = _bodies(doc)
    assert bodies[("POST", "/pets")].rule("name").types == frozenset({"string"})
    upload = bodies[("POST", "/upload")]
    assert upload.kind == "form" and upload.rule("title").max_length == 9 and upload.rule("file").types == frozenset()
