"""The API inventory: endpoints from traffic, classified against declared specs."""

from __future__ import annotations

import pyarrow as pa

from ingest import RequestSummary, Source, Destination, arrow_schema, summary_to_row
from streams.inventory import Inventory


def _table(*calls: tuple[float, str, str, str, str | None, dict[str, int]]) -> pa.Table:
    rows = [summary_to_row(RequestSummary(id=str(i), time=t, source=Source(workload="shop/frontend"), principal=p,
                                          destination=Destination(service=svc, namespace="shop"), method=m, path_template=tpl,
                                          status=200, sensitive=sens, auth_type="jwt"))
            for i, (t, svc, m, tpl, p, sens) in enumerate(calls)]
    return pa.Table.from_pylist(rows, schema=arrow_schema(RequestSummary))


DECLARED = {"shop/orders": {("GET", "/orders/{id}"): False, ("GET", "/v1/orders/{id}"): True}}


def test_status_from_specs_and_traffic() -> None:
    inv = Inventory(DECLARED, dormant_after_s=100.0)
    inv.update(_table((1.0, "orders", "GET", "/orders/{id}", "a", {"email": 1}), (2.0, "orders", "GET", "/orders/{id}", "b", {}),
                      (3.0, "orders", "GET", "/v1/orders/{id}", "a", {}), (4.0, "orders", "GET", "/internal/debug", None, {}),
                      (5.0, "carts", "GET", "/carts/{id}", "a", {})))
    records = {r.key: r for r in inv.take_changed()}
    assert records["shop/orders GET /orders/{id}"].spec_status == "declared"
    assert records["shop/orders GET /orders/{id}"].callers == 2 and records["shop/orders GET /orders/{id}"].data_types == ["email"]
    assert records["shop/orders GET /v1/orders/{id}"].spec_status == "deprecated"
    assert records["shop/orders GET /internal/debug"].spec_status == "shadow"
    assert records["shop/carts GET /carts/{id}"].spec_status == "undeclared"
    assert inv.take_changed() == []
    assert "orders GET /v1/orders/{id}" in inv.zombie_keys()


def test_one_service_name_in_two_namespaces_is_two_endpoints() -> None:
    """``api`` in ``shop`` and ``api`` in ``billing``: two records, each with its own namespace, calls and callers."""
    rows = [summary_to_row(RequestSummary(id=str(i), time=float(i), source=Source(workload=who), principal="p",
                                          destination=Destination(service="api", namespace=ns), method="GET", path_template="/x",
                                          status=200))
            for i, (ns, who) in enumerate([("shop", "shop/web"), ("billing", "billing/job"), ("shop", "shop/web"), (None, "ext")])]
    inv = Inventory()
    inv.update(pa.Table.from_pylist(rows, schema=arrow_schema(RequestSummary)))
    records = {r.key: r for r in inv.take_changed()}
    assert sorted(records) == ["api GET /x", "billing/api GET /x", "shop/api GET /x"]
    assert (records["shop/api GET /x"].namespace, records["shop/api GET /x"].calls) == ("shop", 2)
    assert records["billing/api GET /x"].top_callers == ["billing/job|p"] and records["api GET /x"].namespace is None


def _calls(*calls: tuple[float, str, int | None, str | None]) -> pa.Table:
    """Calls to ``shop/orders`` GET: (time, template, status, the shim's recorded decision)."""
    rows = [summary_to_row(RequestSummary(id=str(i), time=t, source=Source(workload="shop/frontend"), principal="p",
                                          destination=Destination(service="orders", namespace="shop"), method="GET", path_template=tpl,
                                          status=status, decision=decision))
            for i, (t, tpl, status, decision) in enumerate(calls)]
    return pa.Table.from_pylist(rows, schema=arrow_schema(RequestSummary))


def test_probes_are_recorded_as_probed_and_a_real_undocumented_endpoint_stays_shadow() -> None:
    """Only "no such endpoint" (404, 405, 410, 501) and Kubeward's own refusals leave a path probed; an undocumented
    endpoint that answers 200, asks for credentials, rejects the request (400, 409, 422) or fails (500, 503) exists:
    shadow. A traversal path stays probed unless a call got a success answer; a declared endpoint is never probed."""
    inv = Inventory(DECLARED, dormant_after_s=100.0)
    inv.update(_calls((1.0, "/documents/..%2F..%2F..%2Fetc%2Fshadow", 400, None), (2.0, "/etc/passwd", 404, None),
                      (3.0, "/etc/passwd", 405, None), (4.0, "/documents/....//....//etc/hosts", 403, "deny"),
                      (4.5, "/documents/..%2F..%2Fetc%2Fhosts", 302, None), (4.6, "/documents/..%2F..%2Fetc%2Fhosts", 500, None),
                      (5.0, "/documents/..%2F..%2Fproc%2Fself%2Fenviron", 200, None),  # a traversal that worked
                      (6.0, "/internal/debug", 200, None), (7.0, "/internal/debug", 500, None),
                      (7.1, "/internal/exec", 422, None), (7.2, "/internal/exec", 400, None), (7.3, "/internal/jobs", 500, None),
                      (7.4, "/internal/lock", 409, None), (7.5, "/internal/busy", 503, None), (7.6, "/gone", 410, None),
                      (7.7, "/nope", 501, None), (7.8, "/limited", 429, "throttle"), (7.9, "/api-limited", 429, None),
                      (7.95, "/reset", 0, None),
                      (8.0, "/admin/users", 401, None), (9.0, "/admin/flags", 403, "observe:deny"), (10.0, "/admin/flags", 404, None),
                      (11.0, "/backup.zip", 404, None), (12.0, "/orders/{id}", 404, None), (13.0, "/from-a-shim", None, None)))
    records = {r.path_template: r for r in inv.take_changed()}
    probed = {t for t, r in records.items() if r.probed}
    assert probed == {"/documents/..%2F..%2F..%2Fetc%2Fshadow", "/etc/passwd", "/documents/....//....//etc/hosts", "/backup.zip",
                      "/documents/..%2F..%2Fetc%2Fhosts", "/gone", "/nope", "/limited", "/reset"}
    assert {t for t, r in records.items() if r.traversal_answered} == {"/documents/..%2F..%2Fproc%2Fself%2Fenviron"}
    assert not records["/documents/..%2F..%2Fproc%2Fself%2Fenviron"].probed  # no probe: evidence of an attack that worked
    for shadow in ("/internal/debug", "/internal/exec", "/internal/jobs", "/internal/lock", "/internal/busy", "/api-limited",
                   "/admin/users", "/admin/flags", "/from-a-shim"):
        assert records[shadow].spec_status == "shadow" and not records[shadow].probed and not records[shadow].traversal_answered, shadow
    assert records["/etc/passwd"].spec_status == "shadow"  # what the specs say stays; probed says it is no endpoint
    assert records["/orders/{id}"].spec_status == "declared" and not records["/orders/{id}"].probed
    inv.update(_calls((14.0, "/backup.zip", 422, None), (15.0, "/documents/..%2F..%2Fetc%2Fhosts", 204, None)))
    assert [(r.path_template, r.probed, r.traversal_answered) for r in inv.take_changed()] == [
        ("/backup.zip", False, False), ("/documents/..%2F..%2Fetc%2Fhosts", False, True)]  # answered once: for good
    inv.update(_calls((16.0, "/backup.zip", 404, None)))
    assert [(r.path_template, r.probed) for r in inv.take_changed()] == [("/backup.zip", False)]


def test_a_success_refused_by_kubeward_is_no_answer() -> None:
    """A row the shim refused never reached the API, whatever status it carries: no answer, no success."""
    inv = Inventory(DECLARED)
    inv.update(_calls((1.0, "/documents/..%2Fx", 200, "deny"), (2.0, "/internal/x", 200, "throttle")))
    assert [(r.path_template, r.probed, r.traversal_answered) for r in inv.take_changed()] == [
        ("/documents/..%2Fx", True, False), ("/internal/x", True, False)]


def test_a_probed_path_called_again_after_the_dormancy_period_is_no_zombie() -> None:
    inv = Inventory(DECLARED, dormant_after_s=100.0)
    inv.update(_calls((1.0, "/etc/passwd", 404, None), (1.0, "/internal/debug", 200, None), (1.0, "/d/..%2Fx", 200, None)))
    inv.update(_calls((500.0, "/etc/passwd", 404, None), (500.0, "/internal/debug", 200, None), (500.0, "/d/..%2Fx", 200, None)))
    assert "orders GET /internal/debug" in inv.zombie_keys() and "orders GET /etc/passwd" not in inv.zombie_keys()
    assert "orders GET /d/..%2Fx" not in inv.zombie_keys()  # an answered traversal is no endpoint either


def test_dormant_endpoint_called_again_is_a_zombie() -> None:
    inv = Inventory(DECLARED, dormant_after_s=100.0)
    inv.update(_table((1.0, "orders", "GET", "/orders/{id}", "a", {})))
    inv.update(_table((50.0, "orders", "GET", "/orders/{id}", "a", {})))
    assert "orders GET /orders/{id}" not in inv.zombie_keys()
    inv.update(_table((500.0, "orders", "GET", "/orders/{id}", "a", {})))
    assert "orders GET /orders/{id}" in inv.zombie_keys()
    assert inv.take_changed()[0].spec_status == "dormant"


def test_pipeline_publishes_inventory_and_counts_deprecated_calls_as_retired(summary_factory: object) -> None:
    from ingest import encode_envelope
    from streams import Pipeline, WorkerSettings
    from tests.conftest import T0

    make = summary_factory  # type: ignore[assignment]
    rows = [make(id=f"z{i}", principal="p", time=T0 + i, path_template="/v1/orders/{id}") for i in range(3)]  # type: ignore[operator]
    pipeline = Pipeline(WorkerSettings(inventory_interval_s=1.0), "t", declared=DECLARED)
    out = pipeline.handle(0, encode_envelope(rows), 0, T0 + 5)
    assert [r.spec_status for r in out.inventory] == ["deprecated"]
    assert [d.attack_class for d in out.detections] == ["retired_api"]


# --- the vectorised update against the per-row algorithm ------------------------------------------------------

from typing import Any  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ingest import EndpointRecord, actor_key  # noqa: E402
from streams import inventory as inventory_module  # noqa: E402

_NAMES = st.sampled_from([None, "", "-", "a", "b", "a b", "x", "x|y", "y|-"])


def _rows(narrow: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Summaries as dicts; ``narrow``: one endpoint and a few callers, so caps, tops and ties are reached often."""
    services = ["orders"] if narrow else [None, "", "-", "orders", "carts", "a b"]
    return st.fixed_dictionaries({
        "time": st.integers(0, 120).map(float),
        "source": st.fixed_dictionaries({"workload": st.sampled_from(["a", "x", "x|y"]) if narrow else _NAMES, "ip": _NAMES}),
        "principal": st.sampled_from(["p", "q", "r", "y|-", "-", None]) if narrow else _NAMES,
        "destination": st.fixed_dictionaries({"service": st.sampled_from(services), "namespace": st.sampled_from([None, "", "shop", "ops"])}),
        "method": st.sampled_from(["GET"] if narrow else ["GET", "POST", "b GET"]),
        "path_template": st.sampled_from(["/a"] if narrow else ["/a", "/b c", "/{id}", "/d/..%2Fetc"]),
        "status": st.sampled_from([None, 0, 200, 204, 302, 400, 401, 403, 404, 405, 410, 422, 429, 500, 501, 503, 70_000, -3]),
        "decision": st.sampled_from([None, "allow", "deny", "throttle", "observe:deny"]),
        "auth_type": st.sampled_from([None, "", "jwt", "mtls"]),
        "sensitive": st.one_of(st.none(), st.lists(st.tuples(st.sampled_from(["email", "card", "ssn"]), st.sampled_from([None, 0, 1, 3])), max_size=3)),
    })


def _batches(narrow: bool) -> st.SearchStrategy[list[tuple[list[dict[str, Any]], int, bool]]]:
    """Batches: rows, where each is cut into two record batches (chunks), and whether a leading row is sliced off."""
    return st.lists(st.tuples(st.lists(_rows(narrow), min_size=1, max_size=12), st.integers(0, 12), st.booleans()), min_size=1, max_size=6)


def _arrow(rows: list[dict[str, Any]], cut: int, sliced: bool) -> pa.Table:
    """The rows as a table of up to two chunks, optionally a slice (non-zero offsets), as decoded envelopes can be."""
    schema = arrow_schema(RequestSummary)
    rows = ([dict(rows[0], sensitive=[("lead", 9)], principal="lead", status=None)] if sliced else []) + rows
    cut = min(cut, len(rows))
    table = pa.concat_tables([pa.Table.from_pylist(part, schema=schema) for part in (rows[:cut], rows[cut:]) if part])
    return table.slice(1) if sliced else table


def _oracle(batches: list[list[dict[str, Any]]], dormant_after_s: float, cap: int) -> dict[str, dict[str, Any]]:
    """The inventory row by row: callers admitted while fewer than ``cap``, in order of arrival (dicts keep it)."""
    eps: dict[str, dict[str, Any]] = {}
    for rows in batches:
        for row in rows:
            dest, src = row["destination"] or {}, row["source"] or {}
            service = dest.get("service") or "-"
            key, t = EndpointRecord.key_of(dest.get("namespace") or None, service, row["method"], row["path_template"]), float(row["time"])
            ep = eps.get(key)
            if ep is None:
                ep = eps[key] = {"service": service, "namespace": dest.get("namespace"), "method": row["method"], "template": row["path_template"],
                                 "first_seen": t, "last_seen": t, "calls": 0, "callers": {}, "auth_types": set(), "data_types": set(),
                                 "statuses": {}, "woke_from_dormancy": False, "answered": False, "succeeded": False}
            elif t - ep["last_seen"] >= dormant_after_s:
                ep["woke_from_dormancy"] = True
            ep["calls"] += 1
            ep["first_seen"], ep["last_seen"] = min(ep["first_seen"], t), max(ep["last_seen"], t)
            actor = actor_key(src.get("workload") or src.get("ip"), row["principal"])
            if actor in ep["callers"] or len(ep["callers"]) < cap:
                ep["callers"][actor] = ep["callers"].get(actor, 0) + 1
            if row["auth_type"]:
                ep["auth_types"].add(row["auth_type"])
            ep["data_types"].update(k for k, v in (row["sensitive"] or []) if v)
            status = str(row["status"]) if row["status"] is not None else "none"
            ep["statuses"][status] = ep["statuses"].get(status, 0) + 1
            code, kubeward = row["status"], row["decision"] in ("deny", "throttle")
            ep["answered"] |= not kubeward and (code is None or 100 <= code < 600 and code not in (404, 405, 410, 501))
            ep["succeeded"] |= not kubeward and code is not None and 200 <= code < 300
    return eps


def _oracle_record(ep: dict[str, Any], top: int) -> EndpointRecord:
    """The published record: the ``top`` callers with the most calls, the earlier arrival first among equals."""
    spec = DECLARED.get(ep["service"]) or DECLARED.get(f"{ep['namespace']}/{ep['service']}")
    status = "undeclared" if spec is None else "shadow" if (ep["method"], ep["template"]) not in spec else "deprecated" if spec[(ep["method"], ep["template"])] else "declared"
    traversal, no_spec = ".." in ep["template"], status in ("shadow", "undeclared")
    probed = no_spec and (not ep["succeeded"] if traversal else not ep["answered"])
    traversal_answered = no_spec and traversal and ep["succeeded"]
    if ep["woke_from_dormancy"] and status != "deprecated":
        status = "dormant"
    ranked = sorted(ep["callers"].items(), key=lambda kv: -kv[1])  # stable: arrival order among equals
    return EndpointRecord(service=ep["service"], namespace=ep["namespace"], method=ep["method"], path_template=ep["template"], calls=ep["calls"],
                          callers=len(ep["callers"]), top_callers=[a for a, _ in ranked[:top]], auth_types=sorted(ep["auth_types"]),
                          data_types=sorted(ep["data_types"]), statuses=ep["statuses"], first_seen=ep["first_seen"], last_seen=ep["last_seen"],
                          spec_status=status, probed=probed, traversal_answered=traversal_answered)


@pytest.mark.parametrize("narrow", [False, True], ids=["many-endpoints", "one-endpoint"])
@settings(max_examples=200, deadline=None)
@given(data=st.data(), dormant_after_s=st.sampled_from([10.0, 50.0, 1e9]), cap=st.integers(1, 6), top=st.integers(1, 3), publish_every=st.integers(1, 3))
def test_update_equals_the_per_row_algorithm(narrow: bool, data: st.DataObject, dormant_after_s: float, cap: int, top: int, publish_every: int) -> None:
    batches = data.draw(_batches(narrow))
    published: dict[str, EndpointRecord] = {}
    with pytest.MonkeyPatch.context() as mp:  # the caller cap and the top lowered so small batches reach them
        mp.setattr(inventory_module, "_CALLER_CAP", cap)
        mp.setattr(inventory_module, "_TOP_CALLERS", top)
        inv = Inventory(DECLARED, dormant_after_s=dormant_after_s)
        for i, (rows, cut, sliced) in enumerate(batches):
            inv.update(_arrow(rows, cut, sliced))
            if i % publish_every == 0:
                published.update((r.key, r) for r in inv.take_changed())
        published.update((r.key, r) for r in inv.take_changed())
        assert inv.take_changed() == []
    expected = _oracle([rows for rows, _, _ in batches], dormant_after_s, cap)
    assert published == {k: _oracle_record(ep, top) for k, ep in expected.items()}
    woke = {f"{ep['service']} {ep['method']} {ep['template']}" for k, ep in expected.items() if ep["woke_from_dormancy"]
            and not published[k].probed and not published[k].traversal_answered}
    assert inv.zombie_keys() == woke | {"orders GET /v1/orders/{id}"}  # without the namespace: matched against calls


def test_statuses_are_published_in_text_order() -> None:
    inv = Inventory()
    inv.update(_table(*[(float(i), "orders", "GET", "/orders/{id}", "a", {}) for i in range(3)]))
    rows = [dict(r, status=s) for r, s in zip(_table(*[(float(i), "orders", "GET", "/orders/{id}", "a", {}) for i in range(3)]).to_pylist(), (500, None, 404))]
    inv.update(pa.Table.from_pylist(rows, schema=arrow_schema(RequestSummary)))
    assert list(inv.take_changed()[0].statuses) == ["200", "404", "500", "none"]


def test_a_caller_is_its_text() -> None:
    """``x|y`` with no principal and ``x`` with principal ``y|-`` are both ``x|y|-``: one caller, in one batch or two."""
    def rows(*who_principal: tuple[str | None, str | None]) -> pa.Table:
        table = _table(*[(float(i), "orders", "GET", "/orders/{id}", p, {}) for i, (_, p) in enumerate(who_principal)])
        source = pa.array([{"workload": w} for w, _ in who_principal], table.schema.field("source").type)
        return table.set_column(table.schema.get_field_index("source"), "source", source)

    for batches in ([rows(("x|y", None), ("x", "y|-"), ("x", "-"), ("x", ""))], [rows(("x|y", "")), rows(("x", "y|-"), ("x", None))]):
        inv = Inventory()
        for batch in batches:
            inv.update(batch)
        record = inv.take_changed()[0]
        assert (record.callers, record.top_callers, record.calls) == (2, ["x|y|-", "x|-"], 4 if len(batches) == 1 else 3)
