"""A fault-injecting HTTP proxy for S3 endpoints: slow, erroring, rate-limited, resetting.

:class:`FaultProxy` listens on 127.0.0.1 and forwards every HTTP/1.1 request to an
upstream endpoint (for instance the ``s3`` fixture, ``rclone serve s3``) unchanged:
the ``Host`` header is passed through, so AWS SigV4 signatures made for the proxy's
address stay valid and clients keep their usual keys. On the way it injects, per
request:

- ``latency`` seconds of delay (plus up to ``jitter`` more);
- with probability ``error_rate``, an S3 error instead of the answer: ``503 SlowDown``
  or ``500 InternalError`` (the mix is ``errors``) with a proper S3 XML error body;
- with probability ``reset_rate``, a connection reset mid-body: a request with a
  body (an upload) is forwarded with only half of its body and both connections are
  then reset (the server sees a short body); otherwise the answer is sent half-way
  and the client connection is reset (the client sees a truncated body);
- ``rate_limit`` requests per second at most, the rest answered ``503 SlowDown``;
- on a schedule, independent of chance: ``every=N`` faults the N-th, 2N-th, ...
  matching request, ``at=(1, 4)`` the first and the fourth (counted from the last
  :meth:`~FaultProxy.configure` that set a schedule); ``fault`` names what they get:
  ``"reset"`` or an S3 error code, or a sequence of them used in turn.

``methods`` limits the faults to some HTTP methods (``{"PUT"}``...), ``target`` to
request targets matching a regular expression (``r"^/bucket/[^?]+$"``: object
requests, not listings); requests that pass both filters are *matching* (counted in
``matched``). Rate decisions for the n-th matching request come from
``random.Random(f"{seed}/{n}")``: how many of the first n matching requests are
faulted does not depend on the requests in between or on timing. Modes can be
changed at any time with :meth:`FaultProxy.configure` (e.g. ``configure(error_rate=0)``
heals the endpoint). :attr:`FaultProxy.counters` counts what was done (``requests``,
``matched``, ``forwarded``, ``slowdown``, ``internal_error``, ``rate_limited``,
``reset_request``, ``reset_response``, ``delayed``) and ``retries``: faulted
requests that the client sent again (same method and target; counted once per fault).
:attr:`FaultProxy.kinds` counts the requests by S3 operation (:func:`request_kind`:
``LIST``, ``HEAD``, ``GET``, ``PUT``, ``COPY``, ``POST``, ``DELETE``), faulted ones included;
:attr:`FaultProxy.ok` counts, by the same kinds, only the requests whose answer (status
below 400; a 404 to a HEAD or GET is an answer too) reached the client whole. ``kinds - ok``
are the requests a client had to send again (a fault, a server error, a dropped link):
request-count tests bound the work with ``ok`` and the retries with ``kinds - ok``.

A test must not pass because its faults never fired: :meth:`FaultProxy.require_fired`
fails (AssertionError naming the counters) unless they did; call it after the faulted
run and before judging its outcome.

Bodies are buffered in memory (test-sized objects); chunked transfer encoding, ``Expect:
100-continue`` and keep-alive are handled. Standard library only, one thread per client
connection.

Plugin authors can put it in front of the ``s3`` fixture to check that an engine or
lister retries and never reports a partial copy as done::

    from xfer_core.testing.faultproxy import FaultProxy

    def test_my_engine_retries(s3, tmp_path):
        with FaultProxy(s3.endpoint, error_rate=0.2, reset_rate=0.05, seed=1) as proxy:
            conf = proxy.rclone_config(s3.rclone_config, tmp_path / "rclone.conf")
            # run the tool with --rclone-config conf (remote "s3", same keys), then:
            proxy.require_fired("slowdown", "internal_error")
            ...  # judge the outcome
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

#: S3 error answers the proxy can inject: code -> (HTTP status, reason, message).
S3_ERRORS: dict[str, tuple[int, str, str]] = {
    "SlowDown": (503, "Slow Down", "Please reduce your request rate."),
    "InternalError": (
        500,
        "Internal Server Error",
        "We encountered an internal error. Please try again.",
    ),
    "ServiceUnavailable": (503, "Service Unavailable", "Service is unable to handle request."),
}

#: Counters of injected faults (their sum is :attr:`FaultProxy.faults`).
FAULT_COUNTERS = (
    "slowdown",
    "internal_error",
    "service_unavailable",
    "rate_limited",
    "reset_request",
    "reset_response",
)
#: Counter names; every one is present (0) from the start.
COUNTERS = ("requests", "matched", "forwarded", "delayed", *FAULT_COUNTERS, "retries")
#: What a scheduled fault can be: a connection reset or one of :data:`S3_ERRORS`.
SCHEDULED_FAULTS = ("reset", *S3_ERRORS)

_COUNTER_OF = {
    "SlowDown": "slowdown",
    "InternalError": "internal_error",
    "ServiceUnavailable": "service_unavailable",
}
_MAX_LINE = 65536
#: Seconds to wait for the upstream server; a silent upstream resets the client.
UPSTREAM_TIMEOUT = 60.0


def request_kind(method: str, target: str, headers: _Message | None = None) -> str:
    """The S3 operation of a request: ``LIST`` (a GET of a bucket with a listing
    query), ``COPY`` (a PUT with ``x-amz-copy-source``), else the HTTP method."""
    path, _, query = target.partition("?")
    if method == "GET" and (
        "list-type=" in query
        or "delimiter=" in query
        or "prefix=" in query
        or path.rstrip("/").count("/") <= 1
    ):
        return "LIST"
    if method == "PUT" and headers is not None and headers.header("x-amz-copy-source"):
        return "COPY"
    return method


class _Closed(Exception):
    """The peer closed the connection (between requests or mid-message)."""


class _Message:
    """One HTTP/1.1 message head plus its (raw, still framed) body."""

    def __init__(self, start: bytes, headers: list[tuple[bytes, bytes]], body: bytes):
        self.start = start
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        want = name.lower().encode()
        for key, value in self.headers:
            if key.strip().lower() == want:
                return value.strip().decode("latin-1")
        return None

    def head_bytes(self) -> bytes:
        lines = [self.start] + [k + b":" + v for k, v in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def wire(self) -> bytes:
        return self.head_bytes() + self.body


def _read_head(fh: IO[bytes]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    start = fh.readline(_MAX_LINE)
    while start in (b"\r\n", b"\n"):  # tolerate stray blank lines between messages
        start = fh.readline(_MAX_LINE)
    if not start:
        raise _Closed
    headers: list[tuple[bytes, bytes]] = []
    while True:
        line = fh.readline(_MAX_LINE)
        if not line:
            raise _Closed
        if line in (b"\r\n", b"\n"):
            break
        key, _, value = line.rstrip(b"\r\n").partition(b":")
        headers.append((key, value))
    return start.rstrip(b"\r\n"), headers


def _read_exact(fh: IO[bytes], n: int) -> bytes:
    data = fh.read(n)
    if data is None or len(data) != n:
        raise _Closed
    return data


def _read_chunked(fh: IO[bytes]) -> bytes:
    """A chunked body, framing included (forwarded as is)."""
    out = bytearray()
    while True:
        line = fh.readline(_MAX_LINE)
        if not line:
            raise _Closed
        out += line
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = fh.readline(_MAX_LINE)
                if not trailer:
                    raise _Closed
                out += trailer
                if trailer in (b"\r\n", b"\n"):
                    return bytes(out)
        out += _read_exact(fh, size + 2)


def _read_body(fh: IO[bytes], msg: _Message, *, until_close: bool) -> bool:
    """Read ``msg``'s body; returns False when the body ran to the end of the connection."""
    if (msg.header("Transfer-Encoding") or "").lower().endswith("chunked"):
        msg.body = _read_chunked(fh)
    elif msg.header("Content-Length") is not None:
        msg.body = _read_exact(fh, int(msg.header("Content-Length") or 0))
    elif until_close:
        msg.body = fh.read() or b""
        return False
    return True


def _reset(sock: socket.socket | None) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER 0), as a dropped link looks to a peer."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def s3_error_response(code: str, resource: str, *, head: bool = False) -> bytes:
    """A complete HTTP response carrying the S3 error ``code`` (a key of :data:`S3_ERRORS`)."""
    status, reason, message = S3_ERRORS[code]
    request_id = uuid.uuid4().hex[:16].upper()
    resource_xml = resource.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource_xml}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()
    head_lines = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/xml",
        f"Content-Length: {len(body)}",
        f"x-amz-request-id: {request_id}",
        "Server: xfer-faultproxy",
    ]
    return ("\r\n".join(head_lines) + "\r\n\r\n").encode() + (b"" if head else body)


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` that injects S3 faults.

    See the module docstring. Use as a context manager (or :meth:`start` /
    :meth:`stop`); :attr:`endpoint` is the address clients should use.
    """

    def __init__(
        self,
        upstream: str,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        error_rate: float = 0.0,
        errors: Iterable[str] = ("SlowDown", "InternalError"),
        reset_rate: float = 0.0,
        rate_limit: float | None = None,
        methods: Iterable[str] | None = None,
        target: str | None = None,
        every: int | None = None,
        at: Iterable[int] = (),
        fault: str | Iterable[str] = "reset",
        seed: int = 0,
    ):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://HOST:PORT, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self._lock = threading.Lock()
        self.seed = seed
        self._random = random.Random(seed)  # jitter only
        self.latency = latency
        self.jitter = jitter
        self.error_rate = error_rate
        self.errors: tuple[str, ...] = ()
        self.reset_rate = reset_rate
        self.rate_limit = rate_limit
        self.methods: frozenset[str] | None = None
        self.target: re.Pattern[str] | None = None
        self.every: int | None = None
        self.at: frozenset[int] = frozenset()
        self.fault: tuple[str, ...] = ("reset",)
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        #: Requests by S3 operation (:func:`request_kind`).
        self.kinds: collections.Counter[str] = collections.Counter()
        #: Requests by S3 operation whose answer reached the client (see the module docstring).
        self.ok: collections.Counter[str] = collections.Counter()
        self._schedule_base = 0  # ``matched`` when the schedule was set
        self._scheduled = 0  # scheduled faults injected (picks the next ``fault``)
        self.checked = False  # require_fired() was called
        self.configure(errors=errors, methods=methods, target=target)
        self.configure(every=every, at=at, fault=fault)
        self._faulted: set[tuple[str, str]] = set()
        self._recent: collections.deque[float] = collections.deque()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- control ---------------------------------------------------------------

    def configure(self, **modes: Any) -> None:
        """Change fault modes now (keywords of the constructor, except ``upstream``/``seed``)."""
        with self._lock:
            for key, value in modes.items():
                if key == "errors":
                    value = tuple(value)
                    unknown = [e for e in value if e not in S3_ERRORS]
                    if unknown or not value:
                        raise ValueError(f"unknown S3 errors {unknown} (known: {list(S3_ERRORS)})")
                elif key == "methods":
                    value = None if value is None else frozenset(m.upper() for m in value)
                elif key == "target":
                    value = None if value is None else re.compile(value)
                elif key == "fault":
                    value = (value,) if isinstance(value, str) else tuple(value)
                    unknown = [f for f in value if f not in SCHEDULED_FAULTS]
                    if unknown or not value:
                        raise ValueError(f"unknown faults {unknown} (known: {SCHEDULED_FAULTS})")
                elif key in ("every", "at"):
                    if key == "every" and value is not None and value < 1:
                        raise ValueError(f"every must be >= 1, not {value}")
                    if key == "at":
                        value = frozenset(value)
                    self._schedule_base = self.counters["matched"]
                elif key not in ("latency", "jitter", "error_rate", "reset_rate", "rate_limit"):
                    raise TypeError(f"unknown fault mode {key!r}")
                setattr(self, key, value)

    def reset_counts(self) -> None:
        """Clear :attr:`kinds` and :attr:`ok` (to count one command's requests)."""
        with self._lock:
            self.kinds.clear()
            self.ok.clear()

    def heal(self) -> None:
        """No more faults (latency, errors, resets, schedules and the rate limit all off)."""
        self.configure(
            latency=0.0,
            jitter=0.0,
            error_rate=0.0,
            reset_rate=0.0,
            rate_limit=None,
            every=None,
            at=(),
        )

    def require_fired(self, *counters: str, at_least: int = 1) -> None:
        """Fail unless the counters named (default: every fault counter) add up to
        ``at_least``: a test whose faults never fired proves nothing."""
        names = counters or FAULT_COUNTERS
        unknown = [n for n in names if n not in COUNTERS]
        if unknown:
            raise ValueError(f"unknown counters {unknown} (known: {COUNTERS})")
        self.checked = True
        fired = sum(self.counters[n] for n in names)
        if fired < at_least:
            raise AssertionError(
                f"faults did not fire: {' + '.join(names)} = {fired} < {at_least} "
                f"({self.counters['matched']} of {self.counters['requests']} requests "
                f"matched the filters); counters {self.counters}"
            )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> int:
        """Requests that were answered with an error or reset (not counting latency)."""
        return sum(self.counters[k] for k in FAULT_COUNTERS)

    def rclone_config(
        self,
        config: str | os.PathLike[str],
        dest: str | os.PathLike[str],
        remote: str | None = None,
    ) -> Path:
        """Copy the rclone config ``config`` to ``dest`` (mode 0600) with the ``endpoint``
        of ``remote`` (default: every remote that has one) pointing at this proxy. Keys,
        remote names and every other option stay as they were."""
        out: list[str] = []
        section = None
        for line in Path(config).read_text().splitlines():
            match = re.match(r"\s*\[(.*)\]\s*$", line)
            if match:
                section = match.group(1)
            elif re.match(r"\s*endpoint\s*=", line) and remote in (None, section):
                line = f"endpoint = {self.endpoint}"
            out.append(line)
        path = Path(dest)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(out) + "\n")
        return path

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, name="faultproxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and drop every open connection (the port is kept for :meth:`start`)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            conns, self._conns = set(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving -----------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and self._listener is listener:
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._listener is not listener:
                    return  # stopped
                time.sleep(0.05)  # a client gone before accept, or out of fds: go on
                continue
            self._track(conn, True)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _decide(self, method: str, target: str) -> tuple[float, str | None]:
        """(delay, fault) for one request; fault is an S3 error code, ``rate``,
        ``reset`` or None."""
        with self._lock:
            self.counters["requests"] += 1
            key = (method, target)
            if key in self._faulted:  # counted once per fault
                self._faulted.discard(key)
                self.counters["retries"] += 1
            delay = self.latency + (self._random.random() * self.jitter if self.jitter else 0.0)
            fault: str | None = None
            if (self.methods is None or method in self.methods) and (
                self.target is None or self.target.search(target)
            ):
                self.counters["matched"] += 1
                n = self.counters["matched"] - self._schedule_base
                now = time.monotonic()
                if self.rate_limit is not None:
                    while self._recent and now - self._recent[0] >= 1.0:
                        self._recent.popleft()
                    if len(self._recent) >= self.rate_limit:
                        fault = "rate"
                    else:
                        self._recent.append(now)
                if fault is None and (n in self.at or (self.every and n % self.every == 0)):
                    fault = self.fault[self._scheduled % len(self.fault)]
                    self._scheduled += 1
                if fault is None and (self.error_rate or self.reset_rate):
                    draw = random.Random(f"{self.seed}/{self.counters['matched']}")
                    if self.error_rate and draw.random() < self.error_rate:
                        fault = draw.choice(self.errors)
                    elif self.reset_rate and draw.random() < self.reset_rate:
                        fault = "reset"
            if fault is not None:
                self._faulted.add(key)
            if delay > 0:
                self.counters["delayed"] += 1
            return delay, fault

    def _serve(self, conn: socket.socket) -> None:
        upstream: socket.socket | None = None
        up_fh: IO[bytes] | None = None
        fh = conn.makefile("rb")
        try:
            while True:
                start, headers = _read_head(fh)
                request = _Message(start, headers, b"")
                method, target = [*start.decode("latin-1").split(" "), "", ""][:2]
                if (request.header("Expect") or "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                _read_body(fh, request, until_close=False)
                kind = request_kind(method, target, request)
                with self._lock:
                    self.kinds[kind] += 1
                delay, fault = self._decide(method, target)
                if delay > 0:
                    time.sleep(delay)
                if fault in S3_ERRORS or fault == "rate":
                    code = "SlowDown" if fault == "rate" else str(fault)
                    self._count("rate_limited" if fault == "rate" else _COUNTER_OF[code])
                    conn.sendall(s3_error_response(code, target, head=method == "HEAD"))
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self.upstream, timeout=UPSTREAM_TIMEOUT)
                    up_fh = upstream.makefile("rb")
                assert up_fh is not None
                if fault == "reset" and request.body:
                    # the server gets half the body, then both links drop
                    self._count("reset_request")
                    wire = request.wire()
                    upstream.sendall(wire[: len(wire) - len(request.body) // 2])
                    _reset(upstream)
                    _reset(conn)
                    return
                upstream.sendall(request.wire())
                self._count("forwarded")
                response = _Message(*_read_head(up_fh), b"")
                while response.start.split(b" ")[1:2] and response.start.split(b" ")[1].startswith(
                    b"1"
                ):  # interim answers (100 Continue): already given to the client
                    response = _Message(*_read_head(up_fh), b"")
                status = response.start.split(b" ")[1:2]
                keep = True
                if method != "HEAD" and status not in ([b"204"], [b"304"]):
                    keep = _read_body(up_fh, response, until_close=True)
                if fault == "reset":
                    self._count("reset_response")
                    wire = response.wire()
                    conn.sendall(wire[: max(1, len(wire) - max(1, len(response.body)) // 2 - 1)])
                    _reset(conn)
                    return
                conn.sendall(response.wire())
                http = (status or [b"0"])[0]
                if http < b"400" or (http == b"404" and method in ("HEAD", "GET")):
                    with self._lock:
                        self.ok[kind] += 1
                if not keep or (response.header("Connection") or "").lower() == "close":
                    return
                if (request.header("Connection") or "").lower() == "close":
                    return
        except TimeoutError:
            _reset(conn)
        except (_Closed, OSError, ValueError, IndexError):
            return
        finally:
            with contextlib.suppress(OSError):
                fh.close()
            if up_fh is not None:
                with contextlib.suppress(OSError):
                    up_fh.close()
            if upstream is not None:
                with contextlib.suppress(OSError):
                    upstream.close()
            self._track(conn, False)
            with contextlib.suppress(OSError):
                conn.close()


__all__ = [
    "COUNTERS",
    "FAULT_COUNTERS",
    "S3_ERRORS",
    "SCHEDULED_FAULTS",
    "FaultProxy",
    "request_kind",
    "s3_error_response",
]
