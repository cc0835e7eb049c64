"""LinkRelay: an emulated link (delay line, bandwidth cap) that passes bytes unchanged."""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xfer_core.testing.linkrelay import LinkRelay
from xfer_core.testing.services import SshServer


def _recv_all(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)


class _Upstream:
    """A TCP server: per connection, answer everything it reads with ``reply(data)`` once the
    client has half-closed, then close. ``seen`` collects what each connection sent."""

    def __init__(self, reply: Callable[[bytes], bytes]) -> None:
        self.reply = reply
        self.seen: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = _recv_all(conn)
            self.seen.append(data)
            conn.sendall(self.reply(data))


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream(lambda data: hashlib.sha256(data).digest() + data[::-1])
    yield server
    server.sock.close()


def _exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sender = threading.Thread(
            target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR))
        )
        sender.start()
        answer = _recv_all(sock)
        sender.join()
    return answer


def test_bytes_pass_unchanged_both_ways(upstream: _Upstream) -> None:
    payload = random.Random(17).randbytes(3 * 2**20 + 123)
    with LinkRelay("127.0.0.1", upstream.port, rtt=0.01, buffer=256 * 1024) as relay:
        answer = _exchange(relay.port, payload)
        assert relay.connections == 1
    assert upstream.seen == [payload]
    assert answer == hashlib.sha256(payload).digest() + payload[::-1]


def test_many_connections_at_once(upstream: _Upstream) -> None:
    answers: dict[int, bytes] = {}
    payloads = {i: f"connection {i} ".encode() * (100 + i) for i in range(40)}
    with LinkRelay("127.0.0.1", upstream.port, rtt=0.02) as relay:
        threads = [
            threading.Thread(
                target=lambda i=i: answers.__setitem__(i, _exchange(relay.port, payloads[i]))
            )
            for i in payloads
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert relay.connections == 40
        deadline = time.monotonic() + 30
        while relay.live and time.monotonic() < deadline:
            time.sleep(0.01)
        assert relay.live == 0  # both sides closed: the relay let go of every connection
    for i, payload in payloads.items():
        assert answers[i] == hashlib.sha256(payload).digest() + payload[::-1]


def test_closes_propagate() -> None:
    # The server closes first: the client sees EOF, and the server sees the client's close.
    server = socket.create_server(("127.0.0.1", 0))
    with server, LinkRelay("127.0.0.1", server.getsockname()[1], rtt=0.02) as relay:
        client = socket.create_connection(("127.0.0.1", relay.port))
        conn, _ = server.accept()
        with client, conn:
            conn.sendall(b"bye")
            conn.shutdown(socket.SHUT_WR)
            assert _recv_all(client) == b"bye"  # EOF reached the client
            client.sendall(b"and you")
            client.close()
            assert _recv_all(conn) == b"and you"  # the client's close reached the server

    # Closing the relay closes the connections it carries.
    server = socket.create_server(("127.0.0.1", 0))
    with server:
        relay = LinkRelay("127.0.0.1", server.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", relay.port))
        conn, _ = server.accept()
        with client, conn:
            relay.close()
            with contextlib.suppress(ConnectionResetError):
                assert client.recv(10) == b""
            with contextlib.suppress(ConnectionResetError):
                assert conn.recv(10) == b""
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", relay.port), timeout=5).close()


def test_round_trip_takes_at_least_rtt_and_rate_caps_bytes(upstream: _Upstream) -> None:
    # Lower bounds only: they are physical (nothing can arrive before it is due).
    with LinkRelay("127.0.0.1", upstream.port, rtt=0.1) as relay:
        start = time.monotonic()
        assert _exchange(relay.port, b"ping")[32:] == b"gnip"
        assert time.monotonic() - start >= 0.1
    payload = bytes(256 * 1024)
    with LinkRelay("127.0.0.1", upstream.port, rate=2**20) as relay:
        start = time.monotonic()
        _exchange(relay.port, payload)
        assert time.monotonic() - start >= len(payload) / 2**20  # 0.25 s at 1 MiB/s


def test_bad_parameters() -> None:
    for kwargs in ({"rtt": -1}, {"rate": 0}, {"buffer": 10}):
        with pytest.raises(ValueError):
            LinkRelay("127.0.0.1", 9, **kwargs)  # type: ignore[arg-type]


def test_ssh_through_the_fixture(
    sshd: SshServer, link_relay: Callable[..., LinkRelay], tmp_path: Path
) -> None:
    relay = link_relay(sshd.host, sshd.port, rtt=0.02, rate=10 * 2**20)
    # ssh takes the first -p it is given; the host key is known under the server's own
    # port: tell ssh which name to check.
    args = [
        "-p",
        str(relay.port),
        "-o",
        f"HostKeyAlias=[{sshd.host}]:{sshd.port}",
        *sshd.ssh_args(),
    ]
    out = subprocess.run(
        ["ssh", *args, sshd.destination, "echo over-the-link"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "over-the-link\n"
    assert relay.connections == 1
