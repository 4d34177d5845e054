"""PodWatcher without a cluster: configuration errors and how stream lines are applied.

The loop against a real kube-apiserver is in tests/integration/test_podwatch.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.errors import IngestError
from ingest.podwatch import PodWatcher, PodWatchError, _Expired
from ingest.pods import PodDirectory


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig for a server nobody listens on (nothing here connects)."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    return path


def _line(kind: str, name: str, ip: str | None, rv: str) -> str:
    status = {"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {}
    return json.dumps({"type": kind, "object": {"kind": "Pod", "metadata": {
        "name": name, "namespace": "shop", "uid": name, "resourceVersion": rv}, "spec": {}, "status": status}})


@pytest.mark.parametrize("path", [None, "missing/kubeconfig"])
def test_a_configuration_that_cannot_load_is_an_ingest_error_naming_it(path: str | None, tmp_path: Path) -> None:
    with pytest.raises(PodWatchError, match="kubeconfig=") as caught:
        PodWatcher(PodDirectory(), None if path is None else tmp_path / path)
    assert isinstance(caught.value, IngestError)


def test_stream_lines_are_applied_and_counted_bookmarks_advance_only_the_version(kubeconfig: Path) -> None:
    directory = PodDirectory()
    watcher = PodWatcher(directory, kubeconfig)
    bookmark = json.dumps({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "9"}}})
    watcher._consume([_line("ADDED", "a", None, "7"), "", _line("MODIFIED", "a", "10.0.0.1", "8"), bookmark])
    identity = directory.lookup("10.0.0.1")
    assert identity is not None and identity.pod == "a"
    assert (watcher.events, directory.resource_version) == (2, "9")


def test_an_error_event_410_means_relist_and_other_errors_are_failures(kubeconfig: Path) -> None:
    watcher = PodWatcher(PodDirectory(), kubeconfig)
    gone = json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}})
    with pytest.raises(_Expired, match="410"):
        watcher._consume([gone])
    broken = json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 500, "reason": "InternalError"}})
    with pytest.raises(PodWatchError, match="InternalError"):
        watcher._consume([broken])


def test_stop_without_start_returns_and_stats_name_every_counter(kubeconfig: Path) -> None:
    watcher = PodWatcher(PodDirectory(), kubeconfig)
    watcher.stop(timeout=1)
    assert watcher.stats() == {"events": 0, "lists": 0, "resyncs": 0, "errors": 0, "pods": 0, "ips": 0}
    assert not watcher.synced.is_set()
