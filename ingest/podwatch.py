"""Edge: keep a :class:`~ingest.pods.PodDirectory` current from the Kubernetes API (list, then watch).

The only module that imports ``kubernetes``. A background thread runs the reflector loop:

1. LIST pods (paged, ``limit``) → :meth:`PodDirectory.replace_all` at the list's ``resourceVersion``;
   :attr:`PodWatcher.synced` is set after the first one.
2. WATCH from that ``resourceVersion`` with bookmarks; each event goes to :meth:`PodDirectory.apply`.
   When the server ends the watch (``timeout_seconds``), it resumes from the last version seen.
3. ``410 Gone`` (an expired ``resourceVersion`` or continue token, as an HTTP status or an
   ``ERROR`` event) → relist at once. Any other failure (dropped connection, API server down,
   a bad event) → counted in :attr:`PodWatcher.errors`, then relist after an exponential backoff
   with jitter (reset once a watch makes progress).

:meth:`PodWatcher.stop` shuts the open stream's socket, so it returns promptly even mid-watch.
Counters (:attr:`~PodWatcher.events`, :attr:`~PodWatcher.resyncs`, :attr:`~PodWatcher.errors`) are
plain ints written by the watch thread only; a collector reads them for Prometheus. Logs are
``kubeward.podwatch`` records with ``extra`` fields (``deploy.logs`` prints them as JSON).

``kubeconfig=None`` means in-cluster configuration (the pod's service account); give a path to
use a kubeconfig file. The RBAC needed: ``list`` and ``watch`` on ``pods``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from ingest.errors import IngestError
from ingest.pods import PodDirectory

__all__ = ["PodWatchError", "PodWatcher"]

log = logging.getLogger("kubeward.podwatch")


class PodWatchError(IngestError):
    """The watcher cannot be configured, or the API server sent an error it cannot recover from in place."""


class _Expired(Exception):
    """410 Gone: the resourceVersion (or continue token) is too old; only a relist helps."""


def _api_client(kubeconfig: str | Path | None, context: str | None) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), context=context,  # type: ignore[no-untyped-call]
                                    client_configuration=configuration, persist_config=False)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        where = f"kubeconfig={str(kubeconfig)!r}" if kubeconfig is not None else "kubeconfig=None (in-cluster)"
        raise PodWatchError(f"{where} cannot be loaded: {exc}") from exc
    configuration.retries = 0  # the watch loop retries, with backoff and a relist; urllib3 must not add its own
    return client.ApiClient(configuration)


def _status_error(status: Any) -> Exception:
    """The exception an ``ERROR`` watch event (a ``Status`` object) stands for."""
    code = status.get("code") if isinstance(status, dict) else None
    if code == 410:
        return _Expired(f"watch ERROR code=410 reason={status.get('reason')!r}")
    return PodWatchError(f"watch ERROR event: {status!r}")


class PodWatcher:
    """List+watch pods into ``directory`` from a background thread.

    Parameters
    ----------
    directory:
        The :class:`PodDirectory` to keep current (this watcher is its only writer).
    kubeconfig:
        Path of a kubeconfig file, or ``None`` for in-cluster configuration.
    namespace:
        Watch one namespace only; ``None`` watches all.
    context:
        kubeconfig context (default: its current context).
    watch_timeout:
        Seconds the server keeps one watch open before the watcher resumes it.
    backoff_initial, backoff_max:
        Bounds of the exponential backoff between failed attempts, in seconds.
    page_size:
        ``limit`` of each LIST page.
    resume:
        Start by watching from ``directory.resource_version`` instead of listing (a 410 relists);
        :attr:`synced` is set at once then, as the directory already holds a list.
    """

    def __init__(self, directory: PodDirectory, kubeconfig: str | Path | None = None, namespace: str | None = None, *,
                 context: str | None = None, watch_timeout: float = 240.0, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, page_size: int = 500, resume: bool = False) -> None:
        self.directory = directory
        self.namespace = namespace
        self.watch_timeout = watch_timeout
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.page_size = page_size
        self.resume = resume
        self.events = 0
        """Pod events applied (ADDED, MODIFIED, DELETED)."""
        self.lists = 0
        """Complete LISTs applied (the first one plus every resync)."""
        self.resyncs = 0
        """LISTs that replaced a watch: after 410 Gone, or to recover from an error."""
        self.errors = 0
        """Failed list or watch attempts (each followed by a backoff and a relist)."""
        self.last_error: str | None = None
        """``repr`` of the latest failure, for status pages."""
        self.synced = threading.Event()
        """Set once the first LIST has been applied."""
        self._api = client.CoreV1Api(_api_client(kubeconfig, context))
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None
        self._progressed = False
        self._resync_due = False
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- control

    def start(self) -> PodWatcher:
        """Start the background thread (once); return ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kubeward-podwatch", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching: close the open stream and wait up to ``timeout`` s for the thread to end."""
        self._stopping.set()
        with self._lock:
            response = self._response
        if response is not None:
            response.shutdown()  # unblocks the watch thread's read (urllib3 >= 2.3)
        if self._thread is not None:
            self._thread.join(timeout)
        log.info("pod watch stopped", extra=self.stats())

    def __enter__(self) -> PodWatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        """Counters and sizes, for metrics: events, lists, resyncs, errors, pods, ips."""
        return {"events": self.events, "lists": self.lists, "resyncs": self.resyncs, "errors": self.errors,
                "pods": self.directory.pod_count, "ips": len(self.directory)}

    # ---------------------------------------------------------------- the loop

    def _run(self) -> None:
        version = self.directory.resource_version if self.resume else None
        if version:
            self.synced.set()  # the directory holds a complete list already
        backoff = self.backoff_initial
        while not self._stopping.is_set():
            try:
                version = self._watch(version or self._relist())
            except _Expired as exc:
                log.info("resource version expired; relisting", extra={"reason": str(exc)})
                version, self._resync_due = None, True
            except Exception as exc:  # any failure: count, back off, relist
                if self._stopping.is_set():
                    break
                backoff, self._progressed = (self.backoff_initial if self._progressed else backoff), False
                self.errors += 1
                self.last_error = repr(exc)
                delay = backoff * (0.5 + random.random())
                log.warning("pod watch failed; relisting after backoff",
                            extra={"error": repr(exc), "backoff_s": round(delay, 2), "errors": self.errors})
                version, self._resync_due = None, True
                self._stopping.wait(delay)
                backoff = min(backoff * 2, self.backoff_max)

    def _call(self, **kwargs: Any) -> Any:
        """LIST or WATCH pods (all namespaces or one) without decoding; a 410 becomes :class:`_Expired`."""
        kwargs.update(_preload_content=False)
        try:
            if self.namespace is None:
                return self._api.list_pod_for_all_namespaces(**kwargs)
            return self._api.list_namespaced_pod(self.namespace, **kwargs)
        except ApiException as exc:
            if exc.status == 410:
                raise _Expired(f"HTTP 410: {exc.reason}") from exc
            raise

    def _relist(self) -> str:
        """LIST every page, replace the directory's content, return the list's resourceVersion."""
        pods: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            page = json.loads(self._call(limit=self.page_size, _continue=token,
                                         _request_timeout=(10, 60)).data)
            pods.extend(page.get("items") or [])
            version = version or page["metadata"]["resourceVersion"]
            token = page["metadata"].get("continue")
            if not token:
                break
        self.directory.replace_all(pods, version)
        self.resyncs += 1 if self._resync_due else 0
        self.lists, self._resync_due = self.lists + 1, False
        self.synced.set()
        log.info("pods listed", extra={"resource_version": version, **self.stats()})
        return version

    def _watch(self, version: str) -> str:
        """WATCH from ``version`` until the server ends the stream; return the last version seen."""
        self._progressed = False
        response = self._call(watch=True, resource_version=version, allow_watch_bookmarks=True,
                              timeout_seconds=int(self.watch_timeout), _request_timeout=(10, self.watch_timeout + 30))
        with self._lock:
            self._response = response
        try:
            if self._stopping.is_set():
                return version
            self._consume(iter_resp_lines(response))  # type: ignore[no-untyped-call]
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
        return self.directory.resource_version or version

    def _consume(self, lines: Iterable[str]) -> None:
        """Apply each JSON line of a watch stream; an ERROR event raises."""
        for line in lines:
            if self._stopping.is_set():
                return
            if not line:
                continue
            event = json.loads(line)
            kind = event.get("type")
            if kind == "ERROR":
                raise _status_error(event.get("object"))
            self.directory.apply(event)
            self._progressed = True
            if kind != "BOOKMARK":
                self.events += 1

