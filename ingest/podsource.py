"""Where a node's components learn which workload a client address belongs to.

``pod_lookup`` returns the ``(workload, namespace, pod)`` function that
``ingest.identity.IdentityResolver`` takes: from a static JSON map (hosts
without a Kubernetes API, the demo) or from a pod watch (``ingest.podwatch``,
imported only then, so the static case never loads the Kubernetes client).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.errors import SettingsError

__all__ = ["pod_lookup"]


def pod_lookup(pods_file: str | Path | None = None, watch: bool = False, kubeconfig: str | None = None) -> tuple[Callable[[str], tuple[str, str, str] | None] | None, Any]:
    """The client-address -> (workload, namespace, pod) function an ``IdentityResolver`` takes, and the watcher behind it.

    ``pods_file`` is a static JSON map ``{"10.244.1.5": "shop/orders"}`` for hosts
    without a Kubernetes API (and the demo); ``watch`` lists and watches pods
    (in-cluster, or ``kubeconfig``). Neither: no lookup.
    """
    if pods_file is not None:
        try:
            raw = json.loads(Path(pods_file).read_text())
        except (OSError, ValueError) as exc:
            raise SettingsError(f"pods_file={str(pods_file)!r}: {exc}") from exc
        if not isinstance(raw, dict) or not all(isinstance(v, str) and "/" in v for v in raw.values()):
            raise SettingsError(f"pods_file={str(pods_file)!r}: expected a JSON object of address -> 'namespace/workload'")
        table = {str(ip): (w, w.split("/", 1)[0], "") for ip, w in raw.items()}
        return table.get, None
    if not watch:
        return None, None
    from ingest.pods import PodDirectory
    from ingest.podwatch import PodWatcher

    directory = PodDirectory()
    watcher = PodWatcher(directory, kubeconfig=kubeconfig)
    watcher.start()

    def lookup(ip: str) -> tuple[str, str, str] | None:
        found = directory.lookup(ip)
        return None if found is None else (found.workload, found.namespace, found.pod)

    return lookup, watcher
