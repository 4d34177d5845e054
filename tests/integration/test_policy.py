"""One switch to enforce, on real parts: the session's Kafka broker, a `kubeward worker` and a `kubeward shim` process.

Both start in observe mode (their settings' policy). `kubeward policy set --mode
enforce --namespace <ns>` publishes a snapshot on enforcement.policy.v1 and,
without a restart,
(a) the shim's inline signature hit in that namespace turns from 200 with
    ``x-kubeward-would: deny`` into 403, while another namespace stays observed;
(b) the worker's next verdict for that namespace carries ``mode=enforce`` and the
    snapshot's version;
(c) a snapshot that fails validation is rejected by both and counted; the
    applied policy stays;
(d) `kubeward policy apply -f policy.yaml` (configuration as a file) reaches the
    shim the same way, and `kubeward policy show` prints what is in force.

The processes follow a policy name and a namespace unique to this run, so
nothing else on the shared broker follows or matches what this test publishes.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from kafka import KafkaConsumer, KafkaProducer

import deploy.policy as policy_cli
from deploy.runtime.process import free_port, start_shim, start_worker, stop_process
from ingest import POLICY, VERDICTS, Policy, Verdict, summary_row
from ingest.publish import SummaryPublisher

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
NAME = f"it-policy-{RUN}"
NS = f"pol-{RUN}"
OTHER_NS = f"other-{RUN}"
INJECTION = "/search?q=1%27%20OR%20%271%27%3D%271"

T = TypeVar("T")


@dataclass
class Parts:
    """The running worker and shim and how to reach them."""

    bootstrap: str
    shim_port: int
    shim_admin: int
    worker_web: int


@pytest.fixture(scope="module")
def parts(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parts]:
    logs = tmp_path_factory.mktemp("policy")
    running = Parts(kafka_bootstrap, free_port(), free_port(), free_port())
    settings_policy = Policy(name=NAME).model_dump()  # observe everywhere until the topic says otherwise
    worker_settings = {
        "bootstrap": kafka_bootstrap, "web_port": running.worker_web, "app_id": f"kubeward-it-policy-{RUN}",
        "window_s": 30, "learn_windows": 3, "state_flush_s": 0.5, "policy": settings_policy,
    }
    shim_settings = {"bootstrap": kafka_bootstrap, "port": running.shim_port, "admin_port": running.shim_admin, "report": "none", "policy": settings_policy}
    worker = shim = None
    try:
        worker = start_worker(logs / "worker.log", worker_settings)
        shim = start_shim(logs / "shim.log", shim_settings)
        yield running
    finally:
        stop_process(shim)
        stop_process(worker)


def _poll(probe: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0, every: float = 0.1) -> T:
    """Call ``probe`` until ``done`` says yes or ``timeout`` passes; returns the last answer either way."""
    deadline = time.monotonic() + timeout
    got = probe()
    while not done(got) and time.monotonic() < deadline:
        time.sleep(every)
        got = probe()
    return got


def _check(parts: Parts, namespace: str) -> tuple[int, str | None]:
    """Status and ``x-kubeward-would`` of an injection attempt against service orders in ``namespace``."""
    headers = {"x-kubeward-source-workload": f"{namespace}/web", "x-kubeward-principal": "probe", "x-kubeward-namespace": namespace, "host": "orders"}
    req = urllib.request.Request(f"http://127.0.0.1:{parts.shim_port}{INJECTION}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status), resp.headers.get("x-kubeward-would")
    except urllib.error.HTTPError as err:
        return int(err.code), err.headers.get("x-kubeward-would")


def _metric(port: int, name: str, labels: dict[str, str]) -> float | None:
    """One sample from a /metrics page (``None`` when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    wanted = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(name + wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _theft(principal: str, count: int = 40) -> list[dict[str, Any]]:
    """``count`` customers create an order each, then ``principal`` reads all of them (BOLA by ownership)."""
    now = time.time()
    ids = [f"{principal}-{i:06d}" for i in range(count)]

    def row(who: str, **shape: Any) -> dict[str, Any]:
        return summary_row(id=uuid.uuid4().hex, time=now, reporter="test", principal=who, auth_type="jwt",
                           source={"workload": f"{NS}/frontend", "namespace": NS, "ip": "10.0.0.7"},
                           destination={"service": "orders", "namespace": NS}, **shape)

    made = [row(f"customer-{oid}", method="POST", path_template="/orders", status=201, object_ids_created=[oid]) for oid in ids]
    return made + [row(principal, method="GET", path_template="/orders/{id}", status=200, object_ids=[oid]) for oid in ids]


def _verdict_for(parts: Parts, principal: str, timeout: float = 40.0) -> Verdict | None:
    """Publish a theft of objects by ``principal`` into NS and return the worker's verdict for it."""
    with SummaryPublisher(parts.bootstrap, envelope_rows=500, linger_ms=1.0) as pub:
        pub.publish_rows(_theft(principal))
        pub.flush()
    subject = f"{NS}/frontend|{principal}"
    consumer = KafkaConsumer(VERDICTS.name, bootstrap_servers=parts.bootstrap, auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=1000)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    verdict = Verdict.model_validate_json(rec.value) if rec.value else None
                    if verdict is not None and verdict.subject.value == subject:
                        return verdict
    finally:
        consumer.close()
    return None


def _set(parts: Parts, *argv: str) -> Policy:
    """Run ``kubeward policy set`` in-process and return what it published."""
    assert policy_cli.main(["policy", "set", "--bootstrap", parts.bootstrap, "--name", NAME, *argv]) == 0
    current = policy_cli.read_policy(parts.bootstrap, NAME)
    assert current is not None
    return current


def test_one_set_flips_the_shim_and_the_worker_to_enforce_without_a_restart(parts: Parts) -> None:
    assert _check(parts, NS) == (200, "deny")  # observe: answers as if it would deny
    before = _verdict_for(parts, "before")
    assert before is not None and before.mode == "observe"

    published = _set(parts, "--mode", "enforce", "--namespace", NS)
    set_at = time.monotonic()
    assert published.modes == {NS: "enforce"} and published.version == "2"

    assert _poll(lambda: _check(parts, NS), lambda got: got[0] == 403, every=0.01) == (403, None)
    shim_s = time.monotonic() - set_at
    assert _check(parts, OTHER_NS) == (200, "deny")
    assert _metric(parts.shim_admin, "kubeward_shim_policy_version", {"name": NAME}) == 2.0

    # "after it arrives": the worker reports the version in force, then decides the next verdict under it
    assert _poll(lambda: _metric(parts.worker_web, "kubeward_worker_policy_version", {"name": NAME}), lambda v: v == 2.0, every=0.01) == 2.0
    worker_s = time.monotonic() - set_at
    after = _verdict_for(parts, "after")
    assert after is not None and (after.mode, after.policy_version) == ("enforce", "2")
    print(f"after policy set returned (publish + read-back): shim enforcing within {shim_s * 1000:.0f} ms, worker on the new version within {worker_s * 1000:.0f} ms")


def test_a_snapshot_failing_validation_is_rejected_and_the_applied_policy_stays(parts: Parts) -> None:
    applied = _set(parts, "--mode", "enforce", "--namespace", NS)
    version = float(applied.version)
    worker_invalid = _metric(parts.worker_web, "kubeward_worker_policy_updates_total", {"result": "invalid"}) or 0.0
    shim_invalid = _metric(parts.shim_admin, "kubeward_shim_policy_updates_total", {"result": "invalid"}) or 0.0
    # a typo that must not silently mean observe, at a version above the applied one
    bad = Policy(name=NAME, version=str(int(version) + 1)).model_dump(mode="json") | {"modes": {NS: "enforced"}}
    producer = KafkaProducer(bootstrap_servers=parts.bootstrap, acks="all")
    try:
        producer.send(POLICY.name, key=NAME.encode(), value=json.dumps(bad).encode()).get(timeout=10)
    finally:
        producer.close()

    def rejected() -> tuple[float | None, float | None]:
        return (_metric(parts.shim_admin, "kubeward_shim_policy_updates_total", {"result": "invalid"}),
                _metric(parts.worker_web, "kubeward_worker_policy_updates_total", {"result": "invalid"}))

    assert _poll(rejected, lambda got: got == (shim_invalid + 1, worker_invalid + 1)) == (shim_invalid + 1, worker_invalid + 1)
    assert _check(parts, NS) == (403, None)
    assert _metric(parts.shim_admin, "kubeward_shim_policy_version", {"name": NAME}) == version
    assert _metric(parts.worker_web, "kubeward_worker_policy_version", {"name": NAME}) == version
    assert policy_cli.read_policy(parts.bootstrap, NAME) == applied  # the CLI skips it too


def test_a_policy_file_applied_from_configuration_reaches_the_shim(parts: Parts, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path_factory.mktemp("policyfile") / "policy.yaml"
    path.write_text(f"name: {NAME}\ndefault_mode: enforce\nmodes:\n  {NS}: observe\n")
    assert policy_cli.main(["policy", "apply", "-f", str(path), "--bootstrap", parts.bootstrap]) == 0
    applied = Policy.model_validate_json(capsys.readouterr().out)
    assert policy_cli.main(["policy", "show", "--name", NAME, "--bootstrap", parts.bootstrap]) == 0
    shown = Policy.model_validate_json(capsys.readouterr().out)
    assert shown == applied
    assert (shown.default_mode, shown.modes) == ("enforce", {NS: "observe"})
    assert _poll(lambda: _check(parts, OTHER_NS), lambda got: got[0] == 403) == (403, None)
    assert _check(parts, NS) == (200, "deny")
    assert _metric(parts.shim_admin, "kubeward_shim_policy_version", {"name": NAME}) == float(shown.version)
