"""The data plane: values kept where they were computed, moved over authenticated sockets.

A worker keeps each large result in its ``Store`` and serves it to the master
and to other workers from a ``Server`` on its data port; a ``Client`` fetches
it. Values travel as pickle protocol 5 frames, so buffers (numpy arrays,
bytes) go out of band: no pickle copy on the sender, one receive buffer per
frame on the receiver.

Every connection is authenticated both ways before anything else, with the
run's secret (made by the master, handed to workers over their execnet
channel, never on a command line or in a file):

    server -> client   MAGIC + server nonce (32 bytes)
    client -> server   HMAC-SHA256(secret, b"client" + server nonce) + client nonce
                       (a wrong digest: the server closes the connection)
    server -> client   HMAC-SHA256(secret, b"server" + client nonce)
                       (a wrong digest: the client closes the connection)
    then, any number of times:
    client -> server   b"G" + key (8 bytes, big-endian)
    server -> client   status (1 byte: 0 found, 1 missing, 2 cannot pickle),
                       frame count (4 bytes), each frame's length (8 bytes each),
                       the frames

The server never unpickles anything (requests are fixed-size structs); the
client unpickles only what an authenticated server sent.

Self-contained (standard library, plus cloudpickle to pickle values): the
master sends this file's source to every worker, local or remote.
"""
import hashlib
import hmac
import os
import pickle
import socket
import struct
import threading

MAGIC = b"PYDRON-DATA1"
NONCE = 32
DIGEST = 32
FOUND, MISSING, UNPICKLABLE = 0, 1, 2
# Seconds a peer may take to answer the handshake, and to send the next piece of a value.
HANDSHAKE_TIMEOUT = 10.0
IO_TIMEOUT = 120.0
_HEADER = struct.Struct(">BI")
_LENGTH = struct.Struct(">Q")
_REQUEST = struct.Struct(">cQ")


class LostValue(Exception):
    """A value could not be fetched: its holder is gone, or no longer has it."""

    def __init__(self, key, address, reason):
        super().__init__(f"value {key} is not available from {address[0]}:{address[1]}: {reason}")
        self.key = key
        self.address = address


class AuthenticationFailed(ConnectionError):
    """The peer does not know the run's secret."""


def dump_frames(value):
    """``value`` as pickle protocol 5 frames: the pickle, then its out-of-band buffers."""
    import cloudpickle

    buffers = []
    head = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return [head] + [buffer.raw() for buffer in buffers]


def load_frames(frames):
    return pickle.loads(frames[0], buffers=frames[1:])


def frames_size(frames):
    return sum(memoryview(frame).nbytes for frame in frames)


def _recv_exactly(sock, size):
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        count = sock.recv_into(view[got:], min(size - got, 1 << 24))
        if not count:
            raise ConnectionError("the peer closed the connection")
        got += count
    return buffer


def _digest(secret, label, nonce):
    return hmac.new(secret, label + nonce, hashlib.sha256).digest()


class Store:
    """The values a worker keeps, by key, until the master releases them."""

    def __init__(self):
        self._values = {}
        self._lock = threading.Lock()

    def put(self, key, value):
        with self._lock:
            self._values[key] = value

    def get(self, key):
        with self._lock:
            return self._values[key]

    def __contains__(self, key):
        with self._lock:
            return key in self._values

    def release(self, keys):
        with self._lock:
            for key in keys:
                self._values.pop(key, None)

    def __len__(self):
        with self._lock:
            return len(self._values)


class Server:
    """Serves a ``Store`` on ``host``, on the first free port of ``ports`` (0: any)."""

    def __init__(self, store, secret, host="127.0.0.1", ports=(0, 0)):
        self.store = store
        self._secret = secret
        self._sock = None
        first, last = ports
        errors = []
        for port in range(first, last + 1):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                if port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                errors.append(f"{port}: {exc.strerror or exc}")
                continue
            self._sock = sock
            break
        if self._sock is None:
            raise OSError(f"no free data port on {host} in {first}-{last} ({'; '.join(errors[-3:])})")
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        thread = threading.Thread(target=self._accept, name="pydron-data-server", daemon=True)
        thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="pydron-data-conn",
                             daemon=True).start()

    def _serve(self, conn):
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(HANDSHAKE_TIMEOUT)
            nonce = os.urandom(NONCE)
            conn.sendall(MAGIC + nonce)
            answer = _recv_exactly(conn, DIGEST + NONCE)
            if not hmac.compare_digest(bytes(answer[:DIGEST]), _digest(self._secret, b"client", nonce)):
                return  # not one of ours: close, having read 64 bytes and unpickled nothing
            conn.sendall(_digest(self._secret, b"server", bytes(answer[DIGEST:])))
            while True:
                conn.settimeout(None)
                request = _recv_exactly(conn, _REQUEST.size)
                conn.settimeout(IO_TIMEOUT)
                op, key = _REQUEST.unpack(request)
                if op != b"G":
                    return
                self._send_value(conn, key)
        except (OSError, ConnectionError):
            pass
        finally:
            conn.close()

    def _send_value(self, conn, key):
        try:
            value = self.store.get(key)
        except KeyError:
            conn.sendall(_HEADER.pack(MISSING, 0))
            return
        try:
            frames = dump_frames(value)
        except Exception as exc:  # noqa: BLE001 - told to the client, which raises it
            frames = [f"{type(exc).__name__}: {exc}".encode()]
            status = UNPICKLABLE
        else:
            status = FOUND
        lengths = b"".join(_LENGTH.pack(memoryview(frame).nbytes) for frame in frames)
        conn.sendall(_HEADER.pack(status, len(frames)) + lengths)
        for frame in frames:
            conn.sendall(frame)

    def close(self):
        try:
            self._sock.close()
        except OSError:
            pass


class Client:
    """Fetches values from data servers, one authenticated connection per server.

    ``received`` counts the bytes of values fetched (for the benchmarks).
    """

    def __init__(self, secret):
        self._secret = secret
        self._connections = {}
        self._lock = threading.Lock()
        self.received = 0

    def fetch(self, address, key):
        """The value ``key`` held by the server at ``address`` (host, port)."""
        address = tuple(address)
        with self._lock:
            idle = self._connections.setdefault(address, [])
            conn = idle.pop() if idle else None
        try:
            if conn is None:
                conn = self._connect(address)
            conn.sendall(_REQUEST.pack(b"G", key))
            status, count = _HEADER.unpack(_recv_exactly(conn, _HEADER.size))
            lengths = [_LENGTH.unpack(_recv_exactly(conn, _LENGTH.size))[0] for _ in range(count)]
            frames = [_recv_exactly(conn, length) for length in lengths]
        except (OSError, ConnectionError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, AuthenticationFailed):
                raise
            raise LostValue(key, address, f"{type(exc).__name__}: {exc}") from None
        with self._lock:
            self._connections[address].append(conn)
        if status == MISSING:
            raise LostValue(key, address, "it no longer holds it")
        if status == UNPICKLABLE:
            raise pickle.PicklingError(bytes(frames[0]).decode(errors="replace"))
        self.received += sum(lengths)
        return load_frames(frames)

    def _connect(self, address):
        conn = socket.create_connection(address, timeout=HANDSHAKE_TIMEOUT)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = _recv_exactly(conn, len(MAGIC) + NONCE)
            if bytes(hello[:len(MAGIC)]) != MAGIC:
                raise AuthenticationFailed(f"{address[0]}:{address[1]} is not a pydron data port")
            nonce = os.urandom(NONCE)
            conn.sendall(_digest(self._secret, b"client", bytes(hello[len(MAGIC):])) + nonce)
            try:
                proof = _recv_exactly(conn, DIGEST)
            except ConnectionError:
                raise AuthenticationFailed(f"{address[0]}:{address[1]} refused this run's secret") from None
            if not hmac.compare_digest(bytes(proof), _digest(self._secret, b"server", nonce)):
                raise AuthenticationFailed(f"{address[0]}:{address[1]} does not know this run's secret")
            conn.settimeout(IO_TIMEOUT)
            return conn
        except BaseException:
            conn.close()
            raise

    def forget(self, address):
        """Close the connections to a server that is gone."""
        with self._lock:
            for conn in self._connections.pop(tuple(address), []):
                conn.close()

    def close(self):
        with self._lock:
            connections, self._connections = self._connections, {}
        for idle in connections.values():
            for conn in idle:
                conn.close()
