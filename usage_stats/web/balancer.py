"""New connections handed to the workers in turn (`usage-stats serve --workers N`).

uvicorn's workers share one listening socket and race to accept: the first awake takes every
connection waiting, so 16 kept-alive connections opened together split 16:0, 13:3 or 8:8
between two workers by chance. The worker with 13 answers 13 clients on one core while the
other idles between its 3's requests, and a run's throughput and p95 swing by 2×
(`bench/README.md`, "Connections handed to the least busy worker"). A reverse proxy keeping a
pool of connections to the service (nginx's `keepalive` in an upstream) meets the same
lottery once, and keeps its outcome.

So the parent process, idle otherwise, accepts every connection itself and passes its
descriptor (`SCM_RIGHTS` over a Unix socket) to the workers in turn (`ConnectionBalancer`
says why not to the one holding the fewest). Node's cluster module hands connections out
from its primary process, round-robin, for the same reason. The
workers remain uvicorn's: its supervisor starts them, answers their health pings, restarts
one that dies (its replacement registers again) and stops them on a signal; only where a
worker's connections come from changes (`HandedServer`). No request bytes pass through the
parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

logger = logging.getLogger("uvicorn.error")

# One message per connection handed over (a byte and its descriptor): datagram boundaries
# keep each descriptor with its own message.
_KIND = socket.SOCK_SEQPACKET
_SEND_TIMEOUT = 5.0  # a worker that cannot take a descriptor in this long is dropped


class ConnectionBalancer:
    """Accepts on `listener` and hands the connections to the registered workers (each a
    connection to `channel`) in turn, in a thread of its own. Connections accepted while no
    worker is registered wait for the first.

    In turn, not to the worker holding the fewest: a worker learns that a client closed a
    connection only when its event loop gets to it, after the request it is computing, so
    when clients replace all their connections at once (a pool reconnecting) the counts are
    stale exactly when they decide, and split 16 new connections 4:12 (measured). Taking
    turns splits every burst evenly, and as connections close at the rate each worker
    answers requests (two busy workers answer alike), the turns keep the shares even."""

    def __init__(
        self,
        listener: socket.socket,
        channel: socket.socket,
        workers: int = 1,
        startup_seconds: float = 60.0,
    ) -> None:
        self._listener = listener
        self._channel = channel
        # Until `workers` have registered (or `startup_seconds` have passed) connections wait:
        # a pool connecting to a service the moment it answers would otherwise put all its
        # connections on the first worker up, for good.
        self._expected = workers
        self._deadline = time.monotonic() + startup_seconds
        self._workers: list[socket.socket] = []  # in order of registration
        self._turn = 0
        self._handed: dict[socket.socket, int] = {}
        self._waiting: list[socket.socket] = []
        self._wake, self._woken = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="connection-balancer", daemon=True)

    def start(self) -> None:
        self._listener.setblocking(False)
        self._channel.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._channel, selectors.EVENT_READ, self._register)
        self._selector.register(self._woken, selectors.EVENT_READ, None)
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._wake.send(b"x")
        self._thread.join(timeout=5)

    def handed(self) -> list[int]:
        """Connections handed to each registered worker so far, in order of registration."""
        with self._lock:
            return [self._handed[worker] for worker in self._workers]

    def _run(self) -> None:
        try:
            while True:
                starting = self._expected > 0
                for key, _ in self._selector.select(timeout=0.5 if starting else None):
                    if key.data is None:
                        return
                    key.data(key.fileobj)
                if starting:
                    self._hand_out()
        finally:
            for conn in [*self._waiting, *self._workers, self._wake, self._woken]:
                conn.close()
            self._selector.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # out of descriptors, say: the kernel keeps the rest queued
                logger.error("connection balancer: accept failed: %s", exc)
                time.sleep(0.05)  # not a busy loop while it lasts
                break
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # Answers are written as they are ready; Nagle would hold a kept-alive
                # connection's next one for the client's delayed ACK.
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._waiting.append(conn)
        self._hand_out()

    def _hand_out(self) -> None:
        if self._expected:
            if len(self._workers) < self._expected and time.monotonic() < self._deadline:
                return
            self._expected = 0  # started: a worker restarting later does not hold others up
        while self._waiting and self._workers:
            self._turn %= len(self._workers)
            worker = self._workers[self._turn]
            conn = self._waiting[0]
            try:
                socket.send_fds(worker, [b"c"], [conn.fileno()])
            except OSError as exc:
                logger.warning("connection balancer: dropping a worker (%s)", exc)
                self._drop(worker)
                continue
            self._waiting.pop(0)
            conn.close()  # the worker has its own descriptor of it now
            self._turn += 1
            with self._lock:
                self._handed[worker] += 1

    def _register(self, channel: socket.socket) -> None:
        try:
            worker, _ = channel.accept()
        except (BlockingIOError, InterruptedError):
            return
        worker.settimeout(_SEND_TIMEOUT)
        with self._lock:
            self._workers.append(worker)
            self._handed[worker] = 0
        # a worker sends nothing: its channel becomes readable when the worker is gone
        self._selector.register(worker, selectors.EVENT_READ, self._drop)
        self._hand_out()

    def _drop(self, worker: socket.socket) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            self._handed.pop(worker, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker)
        worker.close()


class HandedServer(uvicorn.Server):
    """A uvicorn worker serving the connections the parent hands it instead of accepting on
    a listening socket. If the parent goes, the worker finishes its connections and exits."""

    def __init__(self, config: uvicorn.Config, channel_path: str) -> None:
        super().__init__(config)
        self._channel_path = channel_path
        self._channel: socket.socket | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config
        loop = asyncio.get_running_loop()
        channel = socket.socket(socket.AF_UNIX, _KIND)
        channel.connect(self._channel_path)
        channel.setblocking(False)
        self._channel = channel
        protocol_class = config.http_protocol_class

        def create_protocol() -> asyncio.Protocol:
            return protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        loop.add_reader(channel.fileno(), self._receive, loop, channel, create_protocol)
        self.servers = []
        self.started = True

    def _receive(
        self,
        loop: asyncio.AbstractEventLoop,
        channel: socket.socket,
        create_protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(channel, 1, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the parent is gone: no more connections
                loop.remove_reader(channel.fileno())
                self.should_exit = True
                return
            for fd in fds:
                conn = socket.socket(fileno=fd)
                conn.setblocking(False)
                task = loop.create_task(self._serve_handed(loop, conn, create_protocol))
                self.server_state.tasks.add(task)
                task.add_done_callback(self.server_state.tasks.discard)

    async def _serve_handed(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: socket.socket,
        create_protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        try:
            await loop.connect_accepted_socket(create_protocol, conn, ssl=self.config.ssl)
        except OSError as exc:  # the client left before it was served
            logger.debug("handed connection dropped: %s", exc)
            conn.close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._channel is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(self._channel.fileno())
        await super().shutdown(sockets)
        if self._channel is not None:
            self._channel.close()


class HandedProcess(multiprocess.Process):
    """uvicorn's worker process, running a `HandedServer` on the parent's channel."""

    channel_path = ""  # set by `run_balanced` in the parent, pickled with each process

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.handoff = HandedProcess.channel_path

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = HandedServer(self.config, self.handoff)
        return self._server


def supported() -> bool:
    """Descriptors pass over Unix sequenced-packet sockets here (not on Windows, nor on
    macOS, which has no such sockets: uvicorn's shared socket there)."""
    if not hasattr(socket, "send_fds") or not hasattr(socket, "AF_UNIX"):
        return False
    try:
        ends = socket.socketpair(socket.AF_UNIX, _KIND)
    except (OSError, AttributeError):
        return False
    for end in ends:
        end.close()
    return True


def run_balanced(config: uvicorn.Config) -> None:
    """`uvicorn.run` with `config.workers` processes, connections handed out by the parent."""
    listener = config.bind_socket()
    listener.listen(config.backlog)  # uvicorn's workers would, in `create_server`
    with tempfile.TemporaryDirectory(prefix="usage-stats-serve-") as folder:
        path = os.path.join(folder, "handoff")
        channel = socket.socket(socket.AF_UNIX, _KIND)
        channel.bind(path)
        channel.listen(64)
        balancer = ConnectionBalancer(
            listener, channel, config.workers, config.timeout_worker_healthcheck
        )
        balancer.start()
        HandedProcess.channel_path = path
        # uvicorn's supervisor makes its workers by this name (start, restart, SIGHUP, TTIN)
        original = multiprocess.Process
        multiprocess.Process = HandedProcess  # type: ignore[misc]
        try:
            multiprocess.Multiprocess(config, sockets=[]).run()
        finally:
            multiprocess.Process = original  # type: ignore[misc]
            balancer.stop()
            channel.close()
            listener.close()
