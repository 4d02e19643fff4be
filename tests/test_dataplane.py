"""The data plane: large results stay on their worker and travel worker to worker,
over authenticated connections, and are made again when their worker dies.

Real popen workers, real sockets on 127.0.0.1. Differential where it can be:
each schedule function is also run plainly and the values compared.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import time

import pytest

import dphelpers as D
import pydron
from pydron.remote import dataplane
from pydron.remote import pool as pool_module

MB = D.MB


@pytest.fixture(autouse=True)
def pool(monkeypatch):
    """A fresh process-wide pool of 2 popen workers for each test."""
    monkeypatch.setenv("PYDRON_TX", "2*popen")
    monkeypatch.delenv("PYDRON_CONF", raising=False)
    monkeypatch.setattr(pool_module, "_pool", None)
    yield pool_module.get_pool()
    pydron.shutdown()


@pydron.schedule
def pipeline(n, size):
    out = []
    for i in range(n):
        out.append(D.digest(D.transform(D.transform(D.make(i, size)))))
    return out


def test_pipeline_values_stay_on_the_workers(pool):
    n, size = 6, 2 * MB
    before = pool.bytes_through_master
    assert pipeline(n, size) == pipeline.__wrapped__(n, size)
    moved = pool.bytes_through_master - before
    produced = n * 3 * size
    assert moved < produced / 100, f"{moved} bytes through the master for {produced} produced"


@pydron.schedule
def cross(size):
    a = D.make(1, size)
    b = D.make(2, size)
    # Issued together on two idle workers, they land one on each: combine runs
    # on one of them and fetches the other's value from it.
    return D.digest(D.combine(a, b))


def test_values_travel_worker_to_worker(pool):
    before = pool.bytes_through_master
    assert cross(4 * MB) == cross.__wrapped__(4 * MB)
    moved = pool.bytes_through_master - before
    assert moved < 100_000, moved
    assert pool._client.received == 0  # the master fetched nothing
    assert pool.bytes_between_workers == 4 * MB


@pydron.schedule
def big_result(size):
    return D.make(7, size)


def test_a_large_result_reaches_the_master(pool):
    value = big_result(20 * MB)
    assert value == bytes([7]) * (20 * MB)
    assert pool._client.received >= 20 * MB


@pydron.schedule
def loop(n, size, record):
    total = 0
    for i in range(n):
        data = D.make(i, size)
        total += D.size(data)
        record(sum(pool_module.get_pool().held_bytes().values()))
    return total


def test_workers_release_values_the_program_dropped(pool):
    held = []
    n, size = 12, 2 * MB
    assert loop(n, size, held.append) == n * size
    # Each iteration rebinds data: at most the current value and the one just dropped.
    assert max(held) <= 2 * size, held
    deadline = time.monotonic() + 5
    while sum(pool.held_bytes().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(pool.held_bytes().values()) == 0


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pydron.schedule
def churn(n, size, record):
    total = 0
    for i in range(n):
        data = D.transform(D.make(i, size))
        total += D.size(data)
        record()
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_worker_memory_stays_flat_and_is_given_back_when_idle(pool):
    pids = [info.pid for info in pydron.workers()]
    before = {pid: _rss_mb(pid) for pid in pids}
    samples = []
    n, size = 24, 40 * MB  # above glibc's 32 MB mmap threshold: kept freed memory is reused
    assert churn(n, size, lambda: samples.append(max(_rss_mb(pid) for pid in pids))) == n * size
    early, late = max(samples[: n // 2]), max(samples[n // 2:])
    assert late <= early + size / MB, samples
    # Idle for IDLE_TRIM_SECONDS: the memory the tasks freed goes back to the kernel.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = {pid: _rss_mb(pid) for pid in pids}
        if all(now[pid] < before[pid] + size / MB for pid in pids):
            break
        time.sleep(0.2)
    assert all(now[pid] < before[pid] + size / MB for pid in pids), (before, now)


def _killer():
    """(the pids killed, a function that SIGKILLs a pid and records it)."""
    killed = []

    def kill(pid):
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)

    return killed, kill


@pydron.schedule
def survives_death(size, marker_dir, kill):
    a = D.make(3, size, marker_dir)
    holder = D.pid_of(a)
    kill(holder)  # an ordinary call: a sync point, so a exists by now
    return D.digest(D.transform(a))


def test_a_value_lost_with_its_worker_is_made_again(pool, tmp_path):
    killed, kill = _killer()
    got = survives_death(2 * MB, str(tmp_path), kill)
    assert got == survives_death.__wrapped__(2 * MB, None, lambda pid: None)
    assert len(killed) == 1
    made = sorted(os.listdir(tmp_path))
    assert len(made) == 2, made  # once before the death, once again after it
    assert all(w.info["pid"] != killed[0] for w in pool.workers if w.alive)


@pydron.schedule
def chain_survives_death(size, marker_dir, kill):
    b = D.transform(D.make(4, size, marker_dir))  # make's value is dropped once transform ran
    kill(D.pid_of(b))  # a sync point: b exists, make's future is gone
    return D.digest(D.transform(b))


@pytest.mark.timeout(60)
def test_a_lost_value_whose_input_was_dropped_is_made_again_from_the_start(pool, tmp_path):
    """Lineage through a value the program no longer holds: both are made again."""
    killed, kill = _killer()
    got = chain_survives_death(2 * MB, str(tmp_path), kill)
    assert got == chain_survives_death.__wrapped__(2 * MB, None, lambda pid: None)
    assert len(killed) == 1
    assert len(os.listdir(tmp_path)) == 2  # make ran once, and once again after the death


# ------------------------------------------------------------ authentication


def _hello(address):
    sock = socket.create_connection(address, timeout=5)
    hello = dataplane._recv_exactly(sock, len(dataplane.MAGIC) + dataplane.NONCE)
    assert bytes(hello[:len(dataplane.MAGIC)]) == dataplane.MAGIC
    return sock


class _Marker:
    """Unpickling this creates a file: proof that someone unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("how", ["garbage", "pickle-first", "request-without-handshake"])
def test_a_peer_without_the_secret_gets_nothing_and_nothing_is_unpickled(pool, tmp_path, how):
    # A value on the worker that the intruder would like to read.
    assert big_result(1 * MB) == bytes([7]) * MB
    worker = pool.workers[0]
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Marker(str(marker)))
    sock = _hello(worker.data_address)
    if how == "garbage":
        sock.sendall(os.urandom(dataplane.DIGEST + dataplane.NONCE) + payload)
    elif how == "pickle-first":
        sock.sendall(payload * 4)
    else:
        sock.sendall(b"G" + (1).to_bytes(8, "big") + payload)
    sock.settimeout(5)
    try:
        answer = sock.recv(1024)
    except ConnectionResetError:
        answer = b""
    assert answer == b"", answer  # closed without a word
    sock.close()
    time.sleep(0.2)
    assert not marker.exists()
    # The worker is unharmed.
    assert big_result(1 * MB) == bytes([7]) * MB


def test_a_client_with_the_wrong_secret_is_refused(pool):
    assert big_result(1 * MB) == bytes([7]) * MB
    intruder = dataplane.Client(b"x" * 32)
    with pytest.raises(dataplane.AuthenticationFailed):
        intruder.fetch(pool.workers[0].data_address, 1)
    intruder.close()


def test_a_server_without_the_secret_is_not_believed():
    """The client checks the server too, before it unpickles anything it sends."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    import threading

    def fake():
        conn, _ = listener.accept()
        conn.sendall(dataplane.MAGIC + os.urandom(dataplane.NONCE))
        dataplane._recv_exactly(conn, dataplane.DIGEST + dataplane.NONCE)
        conn.sendall(os.urandom(dataplane.DIGEST))
        conn.close()

    threading.Thread(target=fake, daemon=True).start()
    client = dataplane.Client(b"s" * 32)
    with pytest.raises(dataplane.AuthenticationFailed):
        client.fetch(listener.getsockname(), 1)
    listener.close()


def test_the_secret_is_not_on_a_command_line_or_in_the_environment(pool):
    secret = pool._secret
    for worker in pool.workers:
        pid = worker.info["pid"]
        for name in ("cmdline", "environ"):
            with open(f"/proc/{pid}/{name}", "rb") as handle:
                text = handle.read()
            assert secret not in text and secret.hex().encode() not in text
