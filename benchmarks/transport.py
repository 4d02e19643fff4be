"""Loopback TCP (pydron's data plane) against POSIX shared memory, for one large numpy array.

    python3 benchmarks/transport.py

Why local workers use a loopback socket, not shared memory: a worker's result
is an ordinary object, so shared memory needs a copy in (into the segment,
fresh pages) and a copy out (the reader must own its array once the segment
goes away); the socket needs one receive into a buffer the reader keeps.
"""
import time

import numpy as np
from multiprocessing import shared_memory

from pydron.remote import dataplane

MB = 1 << 20
SECRET = b"k" * 32


def over_tcp(array: np.ndarray) -> float:
    """Best of 3: fetch ``array`` from a data server on 127.0.0.1."""
    store = dataplane.Store()
    store.put(1, array)
    server = dataplane.Server(store, SECRET)
    client = dataplane.Client(SECRET)
    address = ("127.0.0.1", server.port)
    client.fetch(address, 1)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        got = client.fetch(address, 1)
        times.append(time.perf_counter() - start)
    assert (got == array).all()
    server.close()
    client.close()
    return min(times)


def over_shared_memory(array: np.ndarray) -> float:
    """Best of 3: copy ``array`` into a new segment, and out into an array of the reader's."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        segment = shared_memory.SharedMemory(create=True, size=array.nbytes)
        view = np.ndarray(array.shape, array.dtype, buffer=segment.buf)
        view[:] = array
        got = np.array(np.ndarray(array.shape, array.dtype, buffer=segment.buf))
        del view
        segment.close()
        segment.unlink()
        times.append(time.perf_counter() - start)
    assert (got == array).all()
    return min(times)


def main() -> None:
    for size_mb in (50, 200):
        array = np.random.default_rng(0).random(size_mb * MB // 8)
        tcp, shm = over_tcp(array), over_shared_memory(array)
        print(f"{size_mb} MB: loopback TCP {tcp * 1000:.0f} ms ({size_mb / tcp:.0f} MB/s), "
              f"shared memory {shm * 1000:.0f} ms ({size_mb / shm:.0f} MB/s)")


if __name__ == "__main__":
    main()
