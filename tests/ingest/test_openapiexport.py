"""ingest.openapiexport: what traffic can hold and OpenAPI 3.1 cannot still gives a valid document, nothing dropped."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from ingest.openapiexport import openapi_documents, openapi_for
from ingest.schema import EndpointRecord

T0 = 1.8e9


def ep(template: str, method: str = "GET", service: str = "api", namespace: str | None = "shop", **kw: Any) -> EndpointRecord:
    base: dict[str, Any] = {"calls": 10, "callers": 2, "auth_types": ["jwt"], "statuses": {"200": 10}, "first_seen": T0, "last_seen": T0 + 5}
    return EndpointRecord(service=service, namespace=namespace, method=method, path_template=template, **{**base, **kw})


def _shapes_are_distinct(doc: dict[str, Any]) -> bool:
    """OpenAPI: paths equal but for their parameter names are one path and MUST NOT both exist (the validator does
    not check it, so the tests do)."""
    shapes = [re.sub(r"\{[^{}/]+\}", "{}", path) for path in doc["paths"]]
    return len(shapes) == len(set(shapes))


def _operation_ids(doc: dict[str, Any]) -> list[str]:
    return [op["operationId"] for item in doc["paths"].values() for key, op in item.items() if key in ("get", "post", "put", "delete", "patch")]


def test_one_service_name_in_two_namespaces_gives_two_documents() -> None:
    docs = openapi_documents([ep("/x", namespace="shop", calls=3), ep("/y", namespace="billing", calls=7), ep("/z", namespace=None)])
    assert list(docs) == [(None, "api"), ("billing", "api"), ("shop", "api")]
    for doc in docs.values():
        validate(doc)
    shop, billing = docs[("shop", "api")], docs[("billing", "api")]
    assert list(shop["paths"]) == ["/x"] and list(billing["paths"]) == ["/y"]
    assert shop["servers"] == [{"url": "http://api.shop.svc.cluster.local"}]
    assert billing["servers"] == [{"url": "http://api.billing.svc.cluster.local"}]
    assert docs[(None, "api")]["servers"] == [{"url": "https://api"}]
    assert shop["info"]["title"] == "shop/api" and shop["x-kubeward"]["namespace"] == "shop"


def test_openapi_for_takes_one_namespace() -> None:
    records = [ep("/x", namespace="shop"), ep("/y", namespace="billing")]
    assert list(openapi_for("api", records, namespace="billing")["paths"]) == ["/y"]
    assert openapi_for("api", records, namespace=None)["paths"] == {}


def test_a_nonstandard_method_goes_to_an_extension_and_is_counted() -> None:
    doc = openapi_for("dav", [ep("/files/{id}", "PROPFIND", service="dav"), ep("/files/{id}", "GET", service="dav"),
                              ep("/files/{id}", "X-PURGE", service="dav")], namespace="shop")
    validate(doc)
    item = doc["paths"]["/files/{id}"]
    assert "propfind" not in item and set(item["x-kubeward-methods"]) == {"PROPFIND", "X-PURGE"}
    assert item["x-kubeward-methods"]["PROPFIND"]["x-kubeward"]["calls"] == 10 and "get" in item
    assert doc["x-kubeward"]["nonstandard_methods"] == 2 and doc["x-kubeward"]["endpoints"] == 3


def test_a_path_with_only_nonstandard_methods_is_still_valid() -> None:
    validate(openapi_for("dav", [ep("/", "MKCOL", service="dav"), ep("/a b", "CONNECT", service="dav")], namespace=None))


def test_colliding_operation_ids_are_made_unique() -> None:
    doc = openapi_for("api", [ep("/a-b"), ep("/a_b"), ep("/a.b"), ep("/a_b_2")], namespace="shop")
    validate(doc)
    ids = _operation_ids(doc)
    assert len(ids) == len(set(ids)) == 4
    assert sorted(ids) == ["get_a_b", "get_a_b_2", "get_a_b_3", "get_a_b_4"]  # get_a_b_2 is the natural id of /a_b_2


def test_operation_ids_are_unique_with_nonstandard_methods_too() -> None:
    doc = openapi_for("api", [ep("/a", "get"), ep("/a", "GET"), ep("/a", "Get2"), ep("/a2", "GET")], namespace="shop")
    validate(doc)
    item = doc["paths"]["/a"]
    assert item["get"]["x-kubeward"]["calls"] == 20  # one method in two spellings: one operation
    all_ids = [*_operation_ids(doc), *(op["operationId"] for op in item["x-kubeward-methods"].values())]
    assert len(all_ids) == len(set(all_ids))


def test_templates_differing_only_in_parameter_names_are_merged() -> None:
    records = [ep("/x/{name}", calls=5, callers=1, spec_status="shadow", data_types=["email"]),
               ep("/x/{id}", calls=7, callers=2, spec_status="declared", statuses={"404": 2}),
               ep("/x/{id}", "DELETE", spec_status="deprecated"), ep("/x/{name}/y")]
    doc = openapi_for("api", records, namespace="shop")
    validate(doc)
    assert sorted(doc["paths"]) == ["/x/{id}", "/x/{name}/y"] and _shapes_are_distinct(doc)
    item = doc["paths"]["/x/{id}"]
    assert item["parameters"] == [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    assert item["x-kubeward"]["merged_templates"] == ["/x/{id}", "/x/{name}"]
    get = item["get"]["x-kubeward"]
    assert (get["calls"], get["callers"], get["data_types"], get["spec_status"]) == (12, 3, ["email"], "shadow")
    assert [t["template"] for t in get["templates"]] == ["/x/{id}", "/x/{name}"]
    assert set(item["get"]["responses"]) == {"200", "404"} and "deprecated" not in item["get"]
    assert item["delete"]["deprecated"] is True
    assert doc["x-kubeward"]["merged_templates"] == 1


def test_an_opaque_bearer_token_is_a_plain_bearer_scheme() -> None:
    doc = openapi_for("api", [ep("/o", auth_types=["bearer"]), ep("/j", auth_types=["jwt", "bearer", "none"])], namespace="shop")
    validate(doc)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schemes["bearerJwt"]["bearerFormat"] == "JWT"
    assert doc["paths"]["/o"]["get"]["security"] == [{"bearer": []}]
    assert doc["paths"]["/j"]["get"]["security"] == [{"bearer": []}, {"bearerJwt": []}, {}]


_METHOD = st.sampled_from(["GET", "get", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "CONNECT", "X-Y", "b GET"])
_SEGMENT = st.sampled_from(["a", "a-b", "a_b", "a.b", "{id}", "{name}", "{id}", "x y", "é"])
_TEMPLATE = st.lists(_SEGMENT, max_size=4).map(lambda s: "/".join(s)) | st.lists(_SEGMENT, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))
_AUTH = st.lists(st.sampled_from(["jwt", "jwt-unverified", "jwt-invalid", "jwt-anonymous", "bearer", "basic", "api_key", "session",
                                  "mtls", "none", "-", "other"]), max_size=3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_TEMPLATE, _METHOD, st.sampled_from(["shop", "billing", None, ""]), _AUTH,
                          st.sampled_from(["declared", "shadow", "undeclared", "deprecated", "dormant"])), min_size=1, max_size=12))
def test_every_document_is_valid_and_keeps_every_record(rows: list[tuple[str, str, str | None, list[str], str]]) -> None:
    records = [ep(t, m, namespace=ns, auth_types=auth, spec_status=status) for t, m, ns, auth, status in rows]
    docs = openapi_documents(records)
    assert set(docs) == {(ns or None, "api") for _, _, ns, _, _ in rows}
    for doc in docs.values():
        validate(doc)
        assert _shapes_are_distinct(doc)
        ops = [op for item in doc["paths"].values() for key, op in item.items()
               if key in ("get", "put", "post", "delete", "options", "head", "patch", "trace")]
        ops += [op for item in doc["paths"].values() for op in item.get("x-kubeward-methods", {}).values()]
        ids = [op["operationId"] for op in ops]
        assert len(ids) == len(set(ids))
        assert sum(op["x-kubeward"]["calls"] for op in ops) == 10 * doc["x-kubeward"]["endpoints"]  # no record dropped


def test_probed_paths_are_left_out_and_counted() -> None:
    """Traversal probes and never-answered paths (``probed``) and answered traversals are no endpoints of the service:
    not in its document; a service with nothing else gets none. Real undocumented endpoints (shadow, answered 200 or
    422) stay in."""
    records = [ep("/documents/{id}"), ep("/internal/debug", spec_status="shadow"),
               ep("/internal/exec", spec_status="shadow", statuses={"422": 3, "500": 1}),
               ep("/documents/..%2F..%2Fetc%2Fshadow", spec_status="shadow", statuses={"400": 3}, probed=True),
               ep("/documents/..%2F..%2Fproc%2Fself%2Fenviron", spec_status="shadow", statuses={"200": 1}, traversal_answered=True),
               ep("/etc/passwd", spec_status="shadow", statuses={"404": 2}, probed=True),
               ep("/wp-login.php", service="ghost", spec_status="undeclared", statuses={"404": 1}, probed=True),
               ep("/x/..%2F..%2Fetc%2Fhosts", service="files", spec_status="undeclared", statuses={"200": 1}, traversal_answered=True)]
    docs = openapi_documents(records)
    assert list(docs) == [("shop", "api")]
    doc = docs[("shop", "api")]
    validate(doc)
    assert list(doc["paths"]) == ["/documents/{id}", "/internal/debug", "/internal/exec"]
    assert doc["x-kubeward"]["endpoints"] == 3 and doc["x-kubeward"]["probed_left_out"] == 2
    assert doc["x-kubeward"]["traversals_left_out"] == 1
