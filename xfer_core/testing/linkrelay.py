"""A TCP relay that emulates a network link: round-trip delay and a bandwidth cap.

:class:`LinkRelay` listens on 127.0.0.1 and forwards every connection to an upstream
``host:port`` (for instance the ``sshd`` fixture), byte for byte, in both directions. On
the way each direction is a *delay line*: a chunk read at time ``t`` is written at
``t + rtt/2`` (not one sleep per read, which would serialise throughput: many chunks are
in flight at once, as on a real link). With ``rate`` (bytes per second, per direction)
the chunks also leave one after another at that rate, before their propagation delay,
like a bottleneck link: departure = max(arrival, previous departure) + size / rate.

Memory is bounded: each direction holds at most ``buffer`` bytes in flight (default
16 MiB); when it is full the relay stops reading that side and TCP's own flow control
pushes back on the sender, as a full router queue would. So the largest throughput the
relay can carry without ``rate`` is about ``buffer / (rtt/2)`` per direction.

A half-close (EOF) is forwarded after the same delay as the data before it (``shutdown``
of the write side); a reset or error on either side closes both connections. The kernel
here has no ``netem``, so this is how tests and benchmarks see a 20 or 80 ms link::

    from xfer_core.testing.linkrelay import LinkRelay

    with LinkRelay(sshd.host, sshd.port, rtt=0.08, rate=50 * 2**20) as link:
        ssh -p link.port ...   # every round trip takes >= 80 ms

``connections`` counts the accepted connections. Standard library only: two threads per
direction of each connection (a reader and a delayed writer) plus one accepting thread.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from types import TracebackType

_CHUNK = 64 * 1024


class _Direction:
    """One direction of one connection: read from ``src``, write to ``dst`` later."""

    def __init__(self, conn: _Connection, src: socket.socket, dst: socket.socket) -> None:
        self.conn = conn
        self.src = src
        self.dst = dst
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.link_free = 0.0  # when the bottleneck has sent everything queued so far
        self.cond = threading.Condition()

    def start(self) -> None:
        for target in (self._read, self._write):
            threading.Thread(target=target, daemon=True, name="linkrelay").start()

    def _read(self) -> None:
        relay = self.conn.relay
        chunk = _CHUNK if relay.rate is None else max(1024, min(_CHUNK, int(relay.rate / 100)))
        while True:
            with self.cond:
                while self.queued >= relay.buffer and not self.conn.closed:
                    self.cond.wait()
                if self.conn.closed:
                    return
            try:
                data = self.src.recv(chunk)
            except OSError:
                self.conn.close()
                return
            self._put(data)
            if not data:
                return

    def _put(self, data: bytes) -> None:
        relay = self.conn.relay
        now = time.monotonic()
        if relay.rate is not None:
            self.link_free = max(now, self.link_free) + len(data) / relay.rate
            now = self.link_free
        with self.cond:
            self.queue.append((now + relay.rtt / 2, data))
            self.queued += len(data)
            self.cond.notify_all()

    def _write(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.conn.closed:
                    self.cond.wait()
                if self.conn.closed:
                    return
                due, data = self.queue[0]
            # Due times never decrease, so the head cannot change while we sleep.
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                if data:
                    self.dst.sendall(data)
                else:
                    self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                self.conn.close()
                return
            with self.cond:
                self.queue.popleft()
                self.queued -= len(data)
                self.cond.notify_all()
            if not data:
                self.conn.half_closed()
                return


class _Connection:
    def __init__(self, relay: LinkRelay, client: socket.socket, upstream: socket.socket) -> None:
        self.relay = relay
        self.client = client
        self.upstream = upstream
        self.closed = False
        self._eofs = 0
        self._lock = threading.Lock()
        self.directions = (_Direction(self, client, upstream), _Direction(self, upstream, client))

    def start(self) -> None:
        for direction in self.directions:
            direction.start()

    def half_closed(self) -> None:
        with self._lock:
            self._eofs += 1
            done = self._eofs == 2
        if done:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for direction in self.directions:
            with direction.cond:
                direction.cond.notify_all()
        self.relay._forget(self)


class LinkRelay:
    """Relay 127.0.0.1:``port`` to ``upstream_host:upstream_port`` with ``rtt`` seconds of
    round-trip delay and at most ``rate`` bytes/s per direction (``None``: no cap)."""

    host = "127.0.0.1"

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        rtt: float = 0.0,
        rate: float | None = None,
        buffer: int = 16 * 2**20,
    ) -> None:
        if rtt < 0:
            raise ValueError(f"rtt must be >= 0, not {rtt}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 bytes/s, not {rate}")
        if buffer < _CHUNK:
            raise ValueError(f"buffer must be >= {_CHUNK} bytes, not {buffer}")
        self.upstream = (upstream_host, upstream_port)
        self.rtt = float(rtt)
        self.rate = None if rate is None else float(rate)
        self.buffer = buffer
        self.connections = 0
        self._live: set[_Connection] = set()
        self._lock = threading.Lock()
        self._stopping = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name="linkrelay")
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, client, upstream)
            with self._lock:
                if self._stopping:
                    conn.closed = True
                    client.close()
                    upstream.close()
                    return
                self.connections += 1
                self._live.add(conn)
            conn.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._live.discard(conn)

    @property
    def live(self) -> int:
        """Connections open right now."""
        with self._lock:
            return len(self._live)

    def close(self) -> None:
        """Stop listening and close every relayed connection."""
        with self._lock:
            self._stopping = True
            live = list(self._live)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in live:
            conn.close()
        self._acceptor.join(timeout=5)

    def __enter__(self) -> LinkRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"LinkRelay({self.host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}, "
            f"rtt={self.rtt}, rate={self.rate})"
        )
