"""A network namespace joined to the test's own by a veth pair: a link that can be cut.

:class:`NetLink` creates a namespace and a veth pair (one end on each side, a
private /30 between them) and can take the link down and up again, like a cable
pulled mid-transfer. :func:`netns_sshd` runs a real :class:`SshServer` inside the
namespace, reachable only through that link.

Needs root and iproute2 (``ip``, and ``tc`` for :meth:`NetLink.throttle`). Names and subnets are unique per instance, so
several test sessions can run at once; ``close()`` deletes the namespace and the
veth pair even after a failed test (and the sshd is stopped first, since a
process inside keeps a namespace alive).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from types import TracebackType

from xfer_core.testing.services import ServiceError, SshServer, machine_lock, missing_programs

#: Subnets are /30s taken from here (one per link, chosen free).
POOL = ipaddress.ip_network("10.231.0.0/16")
#: A port nothing in the namespace listens on: :meth:`NetLink.up` is answered with a refusal.
_PROBE_PORT = 9


def ip(
    *args: str, netns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (inside ``netns`` when given); failures raise ServiceError."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and res.returncode != 0:
        raise ServiceError(f"{' '.join(argv)}: {res.stderr.strip() or f'exit {res.returncode}'}")
    return res


def netns_problem() -> str:
    """Why a namespace cannot be made here ('' when it can): not root, no ``ip``."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = missing_programs("ip", "tc")
    if missing:
        return f"{', '.join(missing)} (iproute2) not found"
    return ""


def _used_subnets() -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    res = ip("-4", "-o", "addr", "show", check=False)
    used = set()
    for line in res.stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            used.add(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    return used


class NetLink:
    """Namespace ``self.netns`` with ``self.inner_ip``; the test side has ``self.host_ip``
    on ``self.veth``. ``down()`` / ``up()`` cut and restore the link."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.netns = f"xfer-{tag}"
        self.veth = f"xv{tag}h"  # interface names: at most 15 bytes
        self._peer = f"xv{tag}n"
        self._made = False
        try:
            with machine_lock():
                used = _used_subnets()
                free = [
                    net
                    for net in POOL.subnets(new_prefix=30)
                    if not any(net.overlaps(u) for u in used)
                ]
                if not free:
                    raise ServiceError(f"no free /30 left in {POOL}")
                net = random.choice(free)
                first, second = list(net.hosts())
                self.host_ip, self.inner_ip = str(first), str(second)
                self._made = True
                ip("netns", "add", self.netns)
                ip("link", "add", self.veth, "type", "veth", "peer", "name", self._peer)
                ip("link", "set", self._peer, "netns", self.netns)
                ip("addr", "add", f"{self.host_ip}/30", "dev", self.veth)
            ip("addr", "add", f"{self.inner_ip}/30", "dev", self._peer, netns=self.netns)
            ip("link", "set", "lo", "up", netns=self.netns)
            self.up()
        except BaseException:
            self.close()
            raise

    def down(self) -> None:
        """Cut the link: the namespace's end goes down, so the test side loses carrier and
        packets sent to the namespace vanish without an answer (a pulled cable). Taking the
        test side's own end down instead would drop its route, and packets would leave by
        the default route, where something may answer them with a reset."""
        ip("link", "set", self._peer, "down", netns=self.netns)

    def up(self) -> None:
        """Bring the link back, and return once the namespace answers through it.

        Setting the ends up is not enough: carrier comes back a moment later, and the
        neighbour (ARP) entries that failed while the link was down answer a new
        connection at once with "No route to host" until they are resolved again. So
        the failed entries are flushed, and a TCP connection to a port nothing listens
        on (refused: the namespace answered) is tried until it gets through."""
        ip("link", "set", self._peer, "up", netns=self.netns)
        ip("link", "set", self.veth, "up")
        ip("neigh", "flush", "dev", self.veth, check=False)
        ip("neigh", "flush", "dev", self._peer, netns=self.netns, check=False)
        self._wait_reachable()

    def _wait_reachable(self, timeout: float = 30.0) -> None:
        import errno
        import socket
        import time

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                code = probe.connect_ex((self.inner_ip, _PROBE_PORT))
            if code in (0, errno.ECONNREFUSED):
                return
            last = errno.errorcode.get(code, str(code))
            time.sleep(0.05)
        raise ServiceError(f"{self.inner_ip} not reachable through {self.veth} after up: {last}")

    def throttle(self, rate: str = "50mbit") -> None:
        """Limit both directions of the link to ``rate`` (tc tbf), so transfers last a while."""
        for dev, netns in ((self.veth, None), (self._peer, self.netns)):
            argv = ["tc", *(["-n", netns] if netns else []), "qdisc", "replace", "dev", dev]
            argv += ["root", "tbf", "rate", rate, "burst", "64kb", "latency", "200ms"]
            res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
            if res.returncode != 0:
                raise ServiceError(f"{' '.join(argv)}: {res.stderr.strip()}")

    def unthrottle(self) -> None:
        """Remove the limit of :meth:`throttle` (no error when there is none)."""
        for dev, netns in ((self.veth, None), (self._peer, self.netns)):
            argv = ["tc", *(["-n", netns] if netns else []), "qdisc", "del", "dev", dev, "root"]
            subprocess.run(argv, capture_output=True, check=False, timeout=30)

    def exec_prefix(self) -> list[str]:
        """argv prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.netns]

    def close(self) -> None:
        """Delete the veth pair and the namespace (idempotent)."""
        if not self._made:
            return
        ip("link", "del", self.veth, check=False)  # deletes the peer with it
        ip("netns", "del", self.netns, check=False)
        self._made = False

    def __enter__(self) -> NetLink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def netns_sshd() -> Iterator[tuple[NetLink, SshServer]]:
    """A :class:`NetLink` and a real sshd listening on its inner address, inside it."""
    with NetLink() as link:
        server = SshServer(host=link.inner_ip, exec_prefix=link.exec_prefix())
        try:
            yield link, server
        finally:
            try:
                link.up()  # so close() can reach nothing stale; sshd is stopped by pid anyway
            finally:
                server.close()
