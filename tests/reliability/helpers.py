"""Helpers of the reliability suite: the CLI in a subprocess, trees, a hang guard."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from xfer_core.testing import cli

if TYPE_CHECKING:
    from xfer_core.testing.services import SshServer

#: Shell-looking names; every one must arrive byte-identical and run nothing.
INJECTION_NAMES = [
    "$(touch CANARY).txt",
    "`touch CANARY`.txt",
    "a;touch CANARY;b.txt",
    "q'$(touch CANARY)'.txt",
    'dq"$(touch CANARY)".txt',
    "pipe|touch CANARY.txt",
    "amp&&touch CANARY.txt",
    "nl\ntouch CANARY.txt",
    "-e touch CANARY.txt",
    "sub dir $(touch CANARY)/inner `touch CANARY`.txt",
]


class Hang(Exception):
    """Raised by :func:`bounded` when the guarded code runs too long."""


@contextlib.contextmanager
def bounded(seconds: int = 10) -> Iterator[None]:
    """Fail (raise :class:`Hang`) if the body does not finish within ``seconds``."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"did not finish within {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def xfer(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """The xfer CLI in a subprocess, plain output (``XFER_PLAIN=1``)."""
    return cli.xfer(*args, env={"XFER_PLAIN": "1", **(env or {})}, cwd=cwd, timeout=timeout)


def popen_xfer(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return cli.popen_xfer(*args, env={"XFER_PLAIN": "1", **(env or {})})


def write_tree(root: Path, names: list[str], size: int = 0) -> dict[str, bytes]:
    """Files named ``names`` under ``root`` with distinct contents (``size`` pads them)."""
    files = {}
    for i, name in enumerate(names):
        data = (f"{i}:{name}\n".encode() * (1 + size // max(1, len(name) + 8)))[: max(size, 1)]
        if not size:
            data = f"{i}:{name}\n".encode()
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[name] = data
    return files


def files_holding(root: Path, secret: bytes) -> dict[Path, int]:
    """Every file under ``root`` whose bytes contain ``secret``, with its permission bits."""
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                found[path] = path.stat().st_mode & 0o777
    return found


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` by relative name (symlinks not followed)."""
    return cli.read_tree(root, symlinks=False)


def canaries(*roots: Path) -> list[Path]:
    """Every file named CANARY under ``roots`` and in the current directory."""
    found = [p for root in roots if root.exists() for p in root.rglob("CANARY")]
    if Path("CANARY").exists():
        found.append(Path("CANARY").resolve())
    return found


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class PeakMonitor:
    """Samples a process tree every ``interval`` s: peak RSS (the xfer process alone and
    the whole tree, in MiB), peak open fds (xfer alone and the tree), peak process count."""

    def __init__(self, pid: int, interval: float = 0.2):
        import threading

        self.pid = pid
        self.interval = interval
        self.rss_mib = 0.0
        self.tree_rss_mib = 0.0
        self.fds = 0
        self.tree_fds = 0
        self.procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            children = _children_map()
            tree, todo = [], [self.pid]
            while todo:
                pid = todo.pop()
                tree.append(pid)
                todo.extend(children.get(pid, []))
            self.rss_mib = max(self.rss_mib, _rss_kib(self.pid) / 1024)
            self.tree_rss_mib = max(self.tree_rss_mib, sum(_rss_kib(p) for p in tree) / 1024)
            self.fds = max(self.fds, _fds(self.pid))
            self.tree_fds = max(self.tree_fds, sum(_fds(p) for p in tree))
            self.procs = max(self.procs, len(tree))
            self._stop.wait(self.interval)

    def figures(self) -> dict[str, float]:
        return {
            "peak_rss_mib": round(self.rss_mib, 1),
            "peak_tree_rss_mib": round(self.tree_rss_mib, 1),
            "peak_fds": self.fds,
            "peak_tree_fds": self.tree_fds,
            "peak_procs": self.procs,
        }


def ssh_env(sshd: SshServer, tmp: Path, known_hosts: Path | str | None = None) -> dict[str, str]:
    """Environment for xfer with an ssh config trusting only ``known_hosts``
    (default: the test sshd's key)."""
    path = tmp / "ssh_config"
    path.write_text(
        f"Host *\n  UserKnownHostsFile {known_hosts or sshd.known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n"
    )
    return {"XFER_SSH_CONFIG": str(path)}


def cluster_config(path: Path, sshd: SshServer, **fields: Any) -> Path:
    """Write a remotes.toml at ``path`` with one cluster "c" on the test sshd; ``fields``
    override or add keys (sync_dirs=[...], host=..., ...)."""
    import tomlkit

    cluster = {
        "name": "c",
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "key_path": str(sshd.key_path),
        **fields,
    }
    path.write_text(tomlkit.dumps({"clusters": [cluster]}))
    return path


def local_run(
    run: Path, source: Path | str, dest: Path | str, shards: int, *extra: str
) -> list[str]:
    """argv of ``xfer run`` on the local scheduler with --submit."""
    return [
        *["run", "--run-dir", str(run), "--source", str(source), "--dest", str(dest)],
        *["--num-shards", str(shards), "--scheduler", "local", *extra, "--submit"],
    ]
