"""Hosting Kubeward's grpc.aio servers, on a running event loop or on a loop of their own (edge code).

Kubeward's gRPC endpoints for Envoy (the ext_authz adapter, the access-log
service, the ext_proc tap) are ``grpc.aio`` servers: one event loop serves any
number of long-lived Envoy streams without a thread per stream, and handlers
run on that loop's thread, so the state they touch needs no locks.

* Inside a process that already runs an event loop (the shim on uvloop), build
  the server there: ``server, port = await start_server(register, host, port)``.
* Everywhere else (collectors, tests) ``BackgroundServer`` runs the server on a
  private event loop in a daemon thread: ``port = BackgroundServer(register, name).start(host, port)``.

``register`` adds the servicers or generic handlers to the ``grpc.aio.Server``.
``HostedService`` is the base of an endpoint that offers both ways
(``start_async``/``stop_async`` and ``start``/``stop``): the ext_authz gRPC
and ext_proc redaction adapters.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc

__all__ = ["BackgroundServer", "HostedService", "Register", "ServedSource", "start_server"]

Register = Callable[[Any], None]


async def start_server(register: Register, host: str, port: int, options: Sequence[tuple[str, Any]] = ()) -> tuple[Any, int]:
    """Build, bind and start a ``grpc.aio.Server`` on the running loop; return it and the bound port.

    ``port=0`` binds a free port. Raises ``OSError`` naming the address when it cannot bind.
    gRPC's default ``SO_REUSEPORT`` is turned off unless ``options`` say otherwise, so
    a second server on a busy port fails instead of silently sharing it (pass
    ``("grpc.so_reuseport", 1)`` to spread Envoy's streams over several processes).
    """
    chosen = dict(options)
    chosen.setdefault("grpc.so_reuseport", 0)
    server = grpc.aio.server(options=list(chosen.items()))
    register(server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot bind gRPC server to {host}:{port}: {exc}") from exc
    if not bound:
        raise OSError(f"cannot bind gRPC server to {host}:{port}")
    await server.start()
    return server, int(bound)


class BackgroundServer:
    """A ``grpc.aio`` server on a private event loop in a daemon thread; ``start`` and ``stop`` block."""

    def __init__(self, register: Register, name: str, options: Sequence[tuple[str, Any]] = ()):
        self.register = register
        self.name = name
        self.options = tuple(options)
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> int:
        """Start serving on ``host:port`` (0 = any free port); return the bound port."""
        if self._loop is not None:
            raise RuntimeError(f"{self.name} is already started on port {self.port}")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name=self.name, daemon=True)
        thread.start()
        future = asyncio.run_coroutine_threadsafe(start_server(self.register, host, port, self.options), loop)
        try:
            self._server, self.port = future.result(timeout)
        except BaseException:
            _close_loop(loop, thread)
            raise
        self._loop, self._thread = loop, thread
        return self.port

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (open streams get ``grace`` seconds) and end the loop thread; idempotent."""
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None:
            return
        self._loop = self._thread = self._server = None
        try:
            asyncio.run_coroutine_threadsafe(server.stop(grace), loop).result(grace + 5.0)
        finally:
            _close_loop(loop, thread)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _close_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    if not thread.is_alive():
        loop.close()


class ServedSource:
    """``start``/``stop``/``run`` of a collector source that a gRPC server feeds (the ``Source`` protocol).

    Subclasses set ``host``, ``port``, ``options``, ``thread_name`` and ``_server = None``
    and define ``register(server, emit)``, which adds their handlers.
    """

    host: str
    port: int
    options: tuple[tuple[str, Any], ...]
    thread_name: str = "kubeward-grpc"
    _server: BackgroundServer | None

    def register(self, server: Any, emit: Any) -> None:
        """Add this source's handlers to ``server``; ``emit`` takes batches of observations."""
        raise NotImplementedError

    def start(self, emit: Any) -> int:
        """Serve on a private event loop in a daemon thread; return the bound port."""
        self._server = BackgroundServer(lambda server: self.register(server, emit), self.thread_name, self.options)
        self.port = self._server.start(self.host, self.port)
        return self.port

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving; idempotent."""
        if self._server is not None:
            self._server.stop(grace)
            self._server = None

    def run(self, emit: Any, stop: Any) -> None:
        """Serve until ``stop`` (a ``threading.Event``) is set."""
        self.start(emit)
        try:
            stop.wait()
        finally:
            self.stop()


class HostedService:
    """An endpoint served on the running loop (``start_async``/``stop_async``) or on a loop of its own (``start``/``stop``).

    Subclasses implement ``_register`` (add the handlers to a server) and may
    override ``_closed`` (release what stopping leaves, called after either
    stop); ``thread_name`` names the private loop's thread.
    """

    thread_name = "kubeward-grpc"

    def __init__(self, options: Sequence[tuple[str, Any]] = ()):
        self._options = tuple(options)
        self._aio_server: Any = None
        self._background: BackgroundServer | None = None
        self.port: int | None = None

    def _register(self, server: Any) -> None:
        raise NotImplementedError

    def _closed(self) -> None:
        """Called after the server stopped (either way); nothing by default."""

    async def start_async(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start on the running event loop; return the bound port (``port=0`` picks one)."""
        self._aio_server, self.port = await start_server(self._register, host, port, self._options)
        return self.port

    async def stop_async(self, grace: float = 1.0) -> None:
        """Stop the server started by ``start_async``; in-flight calls get ``grace`` seconds."""
        if self._aio_server is not None:
            await self._aio_server.stop(grace)
            self._aio_server = None
        self._closed()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start on a private event loop in a daemon thread; return the bound port."""
        self._background = BackgroundServer(self._register, self.thread_name, self._options)
        self.port = self._background.start(host, port)
        return self.port

    def stop(self, grace: float = 1.0) -> None:
        """Stop the server started by ``start``; idempotent."""
        if self._background is not None:
            self._background.stop(grace)
            self._background = None
        self._closed()
