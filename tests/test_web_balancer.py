"""Connections handed to the workers in turn (`usage_stats.web.balancer`): the balancer on
real sockets in process, then `usage-stats serve --workers 2` as a deployment runs it."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.browser_support import free_port
from usage_stats.admin import db
from usage_stats.web.balancer import ConnectionBalancer

ROOT = Path(__file__).resolve().parent.parent


def _wait(condition, seconds: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def balancer(tmp_path):
    """A balancer on 127.0.0.1 expecting two workers, and a way to register a worker."""
    listener = socket.create_server(("127.0.0.1", 0))
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    path = str(tmp_path / "handoff")
    channel.bind(path)
    channel.listen(8)
    running = ConnectionBalancer(listener, channel, workers=2, startup_seconds=30)
    running.start()
    workers: list[socket.socket] = []

    def register() -> socket.socket:
        worker = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        worker.connect(path)
        worker.settimeout(5)
        workers.append(worker)
        return worker

    yield running, listener.getsockname()[1], register
    running.stop()
    for sock in (*workers, channel, listener):
        sock.close()


def _receive(worker: socket.socket) -> socket.socket:
    message, fds, _, _ = socket.recv_fds(worker, 1, 1)
    assert message == b"c" and len(fds) == 1
    return socket.socket(fileno=fds[0])


def test_connections_wait_for_every_worker_then_alternate(balancer):
    running, port, register = balancer
    first = register()
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    time.sleep(0.3)
    assert running.handed() == [0]  # one of two workers up: nothing handed yet
    second = register()
    clients += [socket.create_connection(("127.0.0.1", port)) for _ in range(13)]
    _wait(lambda: sum(running.handed()) == 16, what="16 connections handed")
    assert running.handed() == [8, 8]
    # Each descriptor handed over is the client's connection itself, bytes untouched.
    served = {}
    for worker in (first, second):
        for _ in range(8):
            conn = _receive(worker)
            served[conn.getpeername()] = conn
    for n, client in enumerate(clients):
        client.sendall(f"request {n}".encode())
        conn = served[client.getsockname()]
        assert conn.recv(64) == f"request {n}".encode()
        conn.sendall(b"answer")
        assert client.recv(64) == b"answer"
    for sock in (*clients, *served.values()):
        sock.close()


def test_a_worker_gone_gets_no_more_connections(balancer):
    running, port, register = balancer
    first, second = register(), register()
    _wait(lambda: len(running.handed()) == 2, what="two workers registered")
    second.close()
    _wait(lambda: running.handed() == [0], what="the closed worker dropped")
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    _wait(lambda: running.handed() == [4], what="4 connections to the one left")
    conns = [_receive(first) for _ in range(4)]
    for sock in (*clients, *conns):
        sock.close()


def _get(conn: http.client.HTTPConnection, path: str = "/health") -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    """The worker processes (not multiprocessing's resource tracker, not a dead one)."""
    found = []
    for child in parent.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def _connections_per_worker(parent: psutil.Process, port: int) -> dict[int, int]:
    counts = {}
    for child in _workers(parent):
        counts[child.pid] = sum(
            1
            for c in child.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        )
    return counts


def test_served_by_two_workers_in_turn_and_a_killed_worker_replaced(tmp_path):
    """Eight kept-alive connections opened at once split 4:4 between two workers (uvicorn's
    shared socket gives all eight to whichever worker wakes first, often); a worker killed
    is replaced by uvicorn's supervisor and connections keep being served."""
    port = free_port()
    admin_db = f"sqlite:///{tmp_path / 'admin.db'}"
    db.upgrade(admin_db)  # `/health` answers 200 with both stores there
    env = {
        **os.environ,
        "USAGE_STATS_DUCKDB_PATH": str(tmp_path / "stats.duckdb"),
        "USAGE_STATS_ADMIN_DB_URL": admin_db,
        "USAGE_STATS_RATE_LIMIT_API": "",
        "USAGE_STATS_RATE_LIMIT_WIDGETS": "",
    }
    env.pop("USAGE_STATS_WEB_BALANCE", None)  # the default: handed in turn
    server = subprocess.Popen(
        [sys.executable, "-m", "usage_stats.cli", "serve", "--workers", "2", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        parent = psutil.Process(server.pid)

        def answers() -> bool:
            try:
                return _get(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) == 200
            except OSError:
                return False

        _wait(answers, seconds=90, what="the server to answer")
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(8)]
        for conn in conns:
            conn.connect()
        assert [_get(conn) for conn in conns] == [200] * 8
        assert sorted(_connections_per_worker(parent, port).values()) == [4, 4]

        victim = _workers(parent)[0].pid
        os.kill(victim, signal.SIGKILL)
        _wait(
            lambda: len([c for c in _workers(parent) if c.pid != victim]) == 2,
            seconds=90,
            what="a replacement worker",
        )
        fresh = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(4)]
        assert [_get(conn) for conn in fresh] == [200] * 4
        for conn in (*conns, *fresh):
            conn.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output = server.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0].decode(errors="replace")
    assert server.returncode == 0, output[-3000:]
    assert "Stopping parent process" in output
