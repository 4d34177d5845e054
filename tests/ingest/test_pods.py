"""PodDirectory: pod IP -> workload identity from plain-dict list/watch events."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import IngestError
from ingest.pods import PodDirectory, PodEventError, PodIdentity, workload_of

PodFactory = Callable[..., dict[str, Any]]
_uids = itertools.count(1)


@pytest.fixture
def pod_factory() -> PodFactory:
    """Raw-JSON pods (camelCase, as the API server sends them); only what a test names differs."""

    def make(name: str = "web-0", namespace: str = "shop", *, ips: tuple[str, ...] = (), owner: tuple[str, str] | None = None,
             labels: dict[str, str] | None = None, uid: str | None = None, created: str = "2026-01-01T10:00:00Z",
             host_network: bool = False, account: str | None = None, phase: str = "Running", rv: str = "100",
             deleting: bool = False, extra_owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid or f"uid-{next(_uids)}",
                                "creationTimestamp": created, "resourceVersion": rv, "labels": labels or {}}
        if owner is not None:
            meta["ownerReferences"] = [*(extra_owners or []), {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                                               "uid": "owner-uid", "controller": True}]
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T11:00:00Z"
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}], "hostNetwork": host_network}
        if account is not None:
            spec["serviceAccountName"] = account
        status: dict[str, Any] = {"phase": phase}
        if ips:
            status["podIP"] = ips[0]
            status["podIPs"] = [{"ip": ip} for ip in ips]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}

    return make


def event(kind: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": pod}


# ------------------------------------------------------------------ workload naming


@pytest.mark.parametrize(("owner", "labels", "expected"), [
    (("ReplicaSet", "orders-7d9f8c6b5"), {}, "shop/orders"),
    (("ReplicaSet", "orders-7d9f8c6b5"), {"pod-template-hash": "7d9f8c6b5"}, "shop/orders"),
    (("ReplicaSet", "my-api-v2-5c4b7f9d8x"), {"pod-template-hash": "5c4b7f9d8x"}, "shop/my-api-v2"),
    (("ReplicaSet", "cache"), {}, "shop/cache"),  # a bare ReplicaSet, no hash suffix
    (("ReplicaSet", "api-v2"), {}, "shop/api-v2"),  # too short to be a hash
    (("StatefulSet", "db"), {}, "shop/db"),
    (("DaemonSet", "node-agent"), {}, "shop/node-agent"),
    (("ReplicationController", "legacy"), {}, "shop/legacy"),
    (("Job", "migrate"), {}, "shop/migrate"),
    (("Job", "nightly-report-29436480"), {}, "shop/nightly-report"),  # a CronJob's Job
    (("Node", "node-1"), {"app": "kube-proxy"}, "shop/kube-proxy"),  # a static pod: the node is no workload
    (None, {"app.kubernetes.io/name": "checkout", "app": "other"}, "shop/checkout"),
    (None, {"app": "cart"}, "shop/cart"),
    (None, {}, "shop/web-0"),
])
def test_workload_is_derived_from_owner_then_labels_then_pod_name(
        pod_factory: PodFactory, owner: tuple[str, str] | None, labels: dict[str, str], expected: str) -> None:
    assert workload_of(pod_factory(owner=owner, labels=labels)) == expected


def test_the_controller_owner_is_preferred_over_other_owners(pod_factory: PodFactory) -> None:
    other = {"apiVersion": "v1", "kind": "StatefulSet", "name": "not-me", "uid": "x", "controller": False}
    pod = pod_factory(owner=("ReplicaSet", "orders-7d9f8c6b5"), extra_owners=[other])
    assert workload_of(pod) == "shop/orders"


def test_identity_carries_namespace_pod_workload_and_service_account(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory("orders-7d9f8c6b5-abcde", ips=("10.0.0.7",), account="orders-sa",
                                               owner=("ReplicaSet", "orders-7d9f8c6b5"))))
    assert directory.lookup("10.0.0.7") == PodIdentity("shop", "orders-7d9f8c6b5-abcde", "shop/orders", "orders-sa")


def test_service_account_defaults_to_default(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory(ips=("10.0.0.8",))))
    identity = directory.lookup("10.0.0.8")
    assert identity is not None and identity.service_account == "default"


# ------------------------------------------------------------------ events


def test_pod_without_ip_is_known_but_maps_nothing_until_it_gets_one(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    pending = pod_factory(uid="u1", rv="5")
    directory.apply(event("ADDED", pending))
    assert (directory.pod_count, len(directory), directory.resource_version) == (1, 0, "5")
    directory.apply(event("MODIFIED", pod_factory(uid="u1", ips=("10.0.0.9",), rv="6")))
    assert directory.lookup("10.0.0.9") is not None and directory.resource_version == "6"
    directory.apply(event("DELETED", pod_factory(uid="u1", ips=("10.0.0.9",), rv="7")))
    assert (directory.lookup("10.0.0.9"), directory.pod_count, len(directory)) == (None, 0, 0)


def test_every_address_of_a_dual_stack_pod_is_mapped_in_canonical_form(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory(ips=("10.0.0.10", "fd00:0:0:0:0:0:0:a"), owner=("StatefulSet", "db"))))
    v4, v6 = directory.lookup("10.0.0.10"), directory.lookup("fd00::a")
    assert v4 is not None and v4 == v6 and v4.workload == "shop/db"
    assert directory.lookup("fd00:0:0:0:0:0:0:a") is None  # lookup is a plain dict get: callers pass canonical text


def test_invalid_addresses_in_status_are_skipped(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory(ips=("not-an-ip", "10.0.0.11"))))
    assert set(directory.snapshot()) == {"10.0.0.11"}


def test_an_ip_change_releases_the_old_ip(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory(uid="u1", ips=("10.0.0.12",))))
    directory.apply(event("MODIFIED", pod_factory(uid="u1", ips=("10.0.0.13",))))
    assert directory.lookup("10.0.0.12") is None and directory.lookup("10.0.0.13") is not None


def test_reused_ip_goes_to_the_newer_pod_and_a_late_delete_of_the_old_pod_keeps_it(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    old = pod_factory("orders-1", uid="old", ips=("10.0.0.20",), owner=("ReplicaSet", "orders-7d9f8c6b5"),
                      created="2026-01-01T10:00:00Z")
    new = pod_factory("payments-1", uid="new", ips=("10.0.0.20",), owner=("ReplicaSet", "payments-5b6c7d8f9"),
                      created="2026-01-01T10:05:00Z")
    directory.apply(event("ADDED", old))
    directory.apply(event("ADDED", new))
    assert directory.lookup("10.0.0.20") == PodIdentity("shop", "payments-1", "shop/payments", "default")
    directory.apply(event("MODIFIED", pod_factory("orders-1", uid="old", ips=("10.0.0.20",), deleting=True,
                                                  owner=("ReplicaSet", "orders-7d9f8c6b5"), created="2026-01-01T10:00:00Z")))
    directory.apply(event("DELETED", old))
    identity = directory.lookup("10.0.0.20")
    assert identity is not None and identity.workload == "shop/payments"


def test_newer_pod_wins_even_when_the_older_pods_event_arrives_last(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory("b", uid="b", ips=("10.0.0.21",), created="2026-01-01T10:05:00Z")))
    directory.apply(event("MODIFIED", pod_factory("a", uid="a", ips=("10.0.0.21",), created="2026-01-01T10:00:00Z")))
    identity = directory.lookup("10.0.0.21")
    assert identity is not None and identity.pod == "b"


def test_same_creation_second_the_later_seen_pod_wins_and_keeps_winning_after_the_older_is_modified(
        pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory("a", uid="a", ips=("10.0.0.22",))))
    directory.apply(event("ADDED", pod_factory("b", uid="b", ips=("10.0.0.22",))))
    directory.apply(event("MODIFIED", pod_factory("a", uid="a", ips=("10.0.0.22",))))
    identity = directory.lookup("10.0.0.22")
    assert identity is not None and identity.pod == "b"


def test_a_running_pod_outranks_a_finished_one_on_the_same_ip(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory("runner", uid="r", ips=("10.0.0.23",), created="2026-01-01T09:00:00Z")))
    directory.apply(event("ADDED", pod_factory("done", uid="d", ips=("10.0.0.23",), phase="Succeeded",
                                               owner=("Job", "batch"), created="2026-01-01T10:00:00Z")))
    identity = directory.lookup("10.0.0.23")
    assert identity is not None and identity.pod == "runner"


def test_a_pod_recreated_under_the_same_name_survives_the_late_delete_of_its_predecessor(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    first = pod_factory("db-0", uid="first", ips=("10.0.0.24",), owner=("StatefulSet", "db"))
    second = pod_factory("db-0", uid="second", ips=("10.0.0.25",), owner=("StatefulSet", "db"), created="2026-01-01T10:01:00Z")
    directory.apply(event("ADDED", first))
    directory.apply(event("ADDED", second))
    directory.apply(event("DELETED", first))
    assert directory.lookup("10.0.0.24") is None
    assert directory.lookup("10.0.0.25") == PodIdentity("shop", "db-0", "shop/db", "default")


def test_delete_of_an_unknown_pod_is_a_no_op(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory(uid="kept", ips=("10.0.0.26",))))
    directory.apply(event("DELETED", pod_factory(uid="never-seen", ips=("10.0.0.26",))))
    assert directory.lookup("10.0.0.26") is not None


def test_host_network_pods_make_the_node_ip_ambiguous(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    agent = pod_factory("agent", uid="agent", ips=("192.168.1.5",), host_network=True, owner=("DaemonSet", "agent"))
    proxy = pod_factory("proxy", uid="proxy", ips=("192.168.1.5",), host_network=True, owner=("DaemonSet", "proxy"))
    directory.apply(event("ADDED", agent))
    assert directory.lookup("192.168.1.5") is None and directory.is_ambiguous("192.168.1.5")
    directory.apply(event("ADDED", proxy))
    directory.apply(event("DELETED", agent))
    assert directory.lookup("192.168.1.5") is None and directory.is_ambiguous("192.168.1.5")
    directory.apply(event("DELETED", proxy))
    assert not directory.is_ambiguous("192.168.1.5") and directory.pod_count == 0


def test_bookmark_only_advances_the_resource_version(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory(ips=("10.0.0.27",), rv="10")))
    directory.apply({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "42"}}})
    assert directory.resource_version == "42" and len(directory) == 1


@pytest.mark.parametrize("bad", [
    {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
    {"type": "RENAMED", "object": {"metadata": {}}},
    {"type": "ADDED", "object": None},
    {"type": "ADDED"},
])
def test_events_that_cannot_be_applied_raise_a_pod_event_error_naming_the_type(bad: dict[str, Any]) -> None:
    with pytest.raises(PodEventError, match=repr(bad["type"])) as caught:
        PodDirectory().apply(bad)
    assert isinstance(caught.value, IngestError)


@pytest.mark.parametrize(("kind", "pod", "field"), [  # shapes the API server never sends (found by the fuzz campaign)
    ("ADDED", {"metadata": 1}, "metadata"),
    ("ADDED", {"metadata": "x"}, "metadata"),
    ("ADDED", {"spec": []}, "spec"),
    ("ADDED", {"metadata": {"uid": {"a": 1}}}, "metadata.uid"),
    ("DELETED", {"metadata": {"namespace": ["shop"]}}, "metadata.namespace"),
    ("ADDED", {"metadata": {"ownerReferences": 1}}, "metadata.ownerReferences"),
    ("ADDED", {"metadata": {"ownerReferences": ["rs"]}}, "metadata.ownerReferences"),
    ("ADDED", {"metadata": {"ownerReferences": [{"kind": ["x"], "name": "7", "controller": True}]}}, "metadata.ownerReferences[].kind"),
    ("ADDED", {"metadata": {"labels": [{"a": "b"}], "ownerReferences": [{"kind": "ReplicaSet", "name": "o", "controller": True}]}},
     "metadata.labels"),
    ("ADDED", {"spec": {"serviceAccountName": 7}}, "spec.serviceAccountName"),
    ("ADDED", {"spec": {"hostNetwork": "false"}}, "spec.hostNetwork"),
    ("ADDED", {"status": {"podIPs": 5}}, "status.podIPs"),
    ("ADDED", {"status": {"podIPs": [{"ip": ["10.0.0.1"]}]}}, "status.podIPs[].ip"),
    ("ADDED", {"status": {"phase": ["Running"]}}, "status.phase"),
    ("BOOKMARK", {"metadata": 1}, "metadata"),
    ("MODIFIED", {"metadata": {"resourceVersion": {"v": 1}}}, "metadata.resourceVersion"),
])
def test_a_pod_field_of_the_wrong_type_is_a_pod_event_error_naming_it(kind: str, pod: dict[str, Any], field: str) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", {"metadata": {"uid": "u", "resourceVersion": "1"}, "status": {"podIP": "10.0.0.50"}}))
    with pytest.raises(PodEventError, match=f"pod field {re.escape(field)}="):
        directory.apply(event(kind, pod))
    assert (directory.resource_version, directory.pod_count, directory.lookup("10.0.0.50") is not None) == ("1", 1, True)


def test_a_relist_with_a_malformed_pod_is_a_pod_event_error_and_changes_nothing(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory(ips=("10.0.0.51",), rv="3")))
    for bad in ("pod", {"metadata": {"labels": "app=web"}}):
        with pytest.raises(PodEventError):
            directory.replace_all([pod_factory(ips=("10.0.0.52",)), bad], "9")  # type: ignore[list-item]
    assert (set(directory.snapshot()), directory.resource_version) == ({"10.0.0.51"}, "3")


# ------------------------------------------------------------------ resync


def test_replace_all_drops_what_the_watch_missed_and_adds_what_it_missed(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory("gone", uid="gone", ips=("10.0.0.30",))))
    directory.apply(event("ADDED", pod_factory("stays", uid="stays", ips=("10.0.0.31",))))
    before = directory.snapshot()
    listed = [pod_factory("stays", uid="stays", ips=("10.0.0.31",)),
              pod_factory("reuser", uid="reuser", ips=("10.0.0.30",), owner=("ReplicaSet", "cart-6f7d8c9b4"))]
    directory.replace_all(listed, "900")
    assert directory.resource_version == "900" and directory.pod_count == 2
    new_owner = directory.lookup("10.0.0.30")
    assert new_owner is not None and new_owner.workload == "shop/cart"
    assert "10.0.0.30" in before and before["10.0.0.30"].pod == "gone"  # a snapshot is a copy
    directory.apply(event("DELETED", pod_factory("gone", uid="gone", ips=("10.0.0.30",))))  # late, pre-relist
    assert directory.lookup("10.0.0.30") == new_owner


def test_replace_all_with_nothing_empties_the_directory(pod_factory: PodFactory) -> None:
    directory = PodDirectory()
    directory.apply(event("ADDED", pod_factory(ips=("10.0.0.32",), host_network=True)))
    directory.replace_all([], "1000")
    assert (len(directory), directory.pod_count, directory.is_ambiguous("10.0.0.32")) == (0, 0, False)


def test_kubernetes_client_to_dict_shape_is_read_too() -> None:
    from kubernetes import client

    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="orders-7d9f8c6b5-x1", namespace="shop", uid="u-td", resource_version="77",
                                     creation_timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc),
                                     owner_references=[client.V1OwnerReference(api_version="apps/v1", kind="ReplicaSet",
                                                                               name="orders-7d9f8c6b5", uid="rs", controller=True)]),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c")], service_account_name="orders-sa"),
        status=client.V1PodStatus(pod_ip="10.0.0.40", pod_ips=[client.V1PodIP(ip="10.0.0.40"), client.V1PodIP(ip="fd00::28")]),
    ).to_dict()
    directory = PodDirectory()
    directory.apply({"type": "ADDED", "object": pod})
    expected = PodIdentity("shop", "orders-7d9f8c6b5-x1", "shop/orders", "orders-sa")
    assert directory.lookup("10.0.0.40") == expected == directory.lookup("fd00::28")
    assert directory.resource_version == "77"


# ------------------------------------------------------------------ invariant

_ops = st.lists(st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), st.integers(0, 5),
                          st.lists(st.sampled_from(["10.1.0.1", "10.1.0.2", "10.1.0.3", "fd00::1"]), max_size=2),
                          st.booleans(), st.booleans()), max_size=40)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_watching_any_event_sequence_ends_where_a_relist_of_the_survivors_does(ops: list[tuple[str, int, list[str], bool, bool]]) -> None:
    def pod(index: int, ips: list[str], host_network: bool, finished: bool) -> dict[str, Any]:
        status: dict[str, Any] = {"phase": "Succeeded" if finished else "Running", "podIPs": [{"ip": ip} for ip in ips]}
        return {"metadata": {"name": f"p{index}", "namespace": "ns", "uid": f"u{index}",
                             "creationTimestamp": f"2026-01-01T10:0{index}:00Z"},
                "spec": {"hostNetwork": host_network}, "status": status}

    watched, alive = PodDirectory(), {}
    for kind, index, ips, host_network, finished in ops:
        current = pod(index, ips, host_network, finished)
        watched.apply({"type": kind, "object": current})
        if kind == "DELETED":
            alive.pop(index, None)
        else:
            alive[index] = current
    relisted = PodDirectory()
    relisted.replace_all(alive.values(), None)
    assert dict(watched.snapshot()) == dict(relisted.snapshot())
    assert all(watched.is_ambiguous(ip) == relisted.is_ambiguous(ip) for ip in ["10.1.0.1", "10.1.0.2", "10.1.0.3", "fd00::1"])
    assert watched.pod_count == relisted.pod_count
