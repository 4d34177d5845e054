"""The whole loop on one machine: a fresh Kafka broker, a worker and a shim.

``LocalStack`` starts them in order (broker, topics, worker, shim), each as a
real process, and stops them in reverse. Settings for the worker and shim are
dictionaries of their settings fields; the demo, benchmarks and integration
tests differ only in those.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.runtime import broker
from deploy.runtime.process import free_port, start_shim, start_worker, stop_process

__all__ = ["LocalStack"]


@dataclass
class LocalStack:
    """Broker + worker + shim, started by ``start`` and stopped by ``stop`` (also a context manager)."""

    workdir: Path
    worker_settings: dict[str, Any] = field(default_factory=dict)
    shim_settings: dict[str, Any] = field(default_factory=dict)
    with_worker: bool = True
    with_shim: bool = True
    broker_handle: broker.Broker | None = None
    worker: subprocess.Popen[bytes] | None = None
    shim: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """The broker's bootstrap address."""
        assert self.broker_handle is not None, "stack not started"
        return self.broker_handle.bootstrap

    def start_broker(self) -> None:
        """Start a broker on a fresh data dir and create the topics."""
        data = self.workdir / "kafka"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        broker.fetch_jars()
        self.broker_handle = broker.start(data, port=free_port(), controller_port=free_port())
        broker.ensure_topics(self.bootstrap)

    def start_worker(self, **overrides: Any) -> None:
        """Start (or restart) the worker process."""
        self.ports.setdefault("worker_web", free_port())
        settings = {"bootstrap": self.bootstrap, "web_port": self.ports["worker_web"], **self.worker_settings, **overrides}
        self.worker = start_worker(self.workdir / "worker.log", settings)

    def start_shim(self, **overrides: Any) -> None:
        """Start (or restart) the shim process; returns when its cache has synced."""
        self.ports.setdefault("shim", free_port())
        self.ports.setdefault("shim_admin", free_port())
        settings = {"bootstrap": self.bootstrap, "port": self.ports["shim"], "admin_port": self.ports["shim_admin"], **self.shim_settings, **overrides}
        self.shim = start_shim(self.workdir / "shim.log", settings)

    def start(self) -> LocalStack:
        """Broker, then worker, then shim."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_broker()
            if self.with_worker:
                self.start_worker()
            if self.with_shim:
                self.start_shim()
        except BaseException:
            self.stop()  # a half-started stack must not leave a broker or worker behind
            raise
        return self

    def stop(self) -> None:
        """Stop shim, worker and broker (each at most once)."""
        stop_process(self.shim)
        stop_process(self.worker)
        if self.broker_handle is not None:
            broker.stop(Path(self.broker_handle.data_dir))
            self.broker_handle = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
