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

``sbatchman`` (``sbatchman==2.0.3``) is benchmarked when ``--sbatchman BIN`` points
at its console script (e.g. installed with ``uv venv /tmp/sbm && uv pip install
--python /tmp/sbm sbatchman==2.0.3``).
"""

from __future__ import annotations

import argparse
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

from xfer_core.testing.services import SshServer

ROOT = Path(__file__).resolve().parents[1]
XFER = str(Path(sys.executable).with_name("xfer"))


PHASES = ("initial", "no-op", "1% changed")


@dataclass
class Measure:
    seconds: float
    bytes_sent: int | None


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


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Tools:
    """How each contender pushes ``src`` into ``dest`` on the server, returning bytes sent."""

    def __init__(self, sshd: SshServer, work: Path, sbatchman: str | None):
        self.sshd = sshd
        self.work = work
        self.sbatchman = sbatchman
        self.ssh_config = work / "ssh_config"
        self.ssh_config.write_text(
            f"Host *\n  UserKnownHostsFile {sshd.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        )

    def available(self) -> dict[str, Callable[[Path, Path], int | None]]:
        tools: dict[str, Callable[[Path, Path], int | None]] = {
            "xfer-rsync": lambda s, d: self.xfer(s, d, "rsync"),
            "xfer-sftp": lambda s, d: self.xfer(s, d, "sftp"),
            "rsync": self.rsync,
            "sftp": self.sftp,
        }
        if self.sbatchman:
            tools["sbatchman-rsync"] = lambda s, d: self.sbatchman_sync(s, d, "rsync")
            tools["sbatchman-sftp"] = lambda s, d: self.sbatchman_sync(s, d, "sftp")
        return tools

    def config(self, src: Path, dest: Path, backend: str) -> Path:
        sshd = self.sshd
        path = self.work / f"remotes-{backend}.toml"
        path.write_text(
            f'[global]\ntransfer_backend = "{backend}"\n\n'
            f'[[clusters]]\nname = "bench"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
            f'user = "{sshd.user}"\nkey_path = "{sshd.key_path}"\n\n'
            f'[[clusters.sync_dirs]]\nalias = "tree"\nlocal = "{src}"\nremote = "{dest}"\n'
        )
        return path

    def xfer(self, src: Path, dest: Path, backend: str) -> int | None:
        cfg = self.config(src, dest, backend)
        res = subprocess.run(
            [XFER, "sync", "--config", str(cfg), "-b", backend, "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "XFER_SSH_CONFIG": str(self.ssh_config)},
        )
        if res.returncode != 0:
            raise RuntimeError(f"xfer-{backend} failed: {res.stderr[-2000:]}")
        summary = json.loads(res.stdout.splitlines()[-1])
        return int(summary["bytes_sent"])

    def rsync(self, src: Path, dest: Path) -> int | None:
        res = subprocess.run(
            [
                "rsync",
                "-a",
                "--stats",
                "-e",
                shlex.join(["ssh", *self.sshd.ssh_args()]),
                f"{src}/",
                f"{self.sshd.destination}:{dest}/",
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise RuntimeError(f"rsync failed: {res.stderr[-2000:]}")
        m = re.search(r"Total transferred file size: ([\d,]+)", res.stdout)
        return int(m.group(1).replace(",", "")) if m else None

    def sftp(self, src: Path, dest: Path) -> int | None:
        batch = self.work / "sftp.batch"
        batch.write_text(f'put -r "{src}" "{dest}"\n')
        res = subprocess.run(
            ["sftp", *self.sshd.sftp_args(), "-b", str(batch), self.sshd.destination],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise RuntimeError(f"sftp failed: {res.stderr[-2000:]}")
        return tree_bytes(src)  # put -r has no skip: every run sends the whole tree

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


def startup_seconds(tools: Tools, src: Path) -> float:
    """Median wall time of an ``xfer sync`` that loads the config and stops (unknown alias)."""
    cfg = tools.config(src, src, "rsync")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(
            [XFER, "sync", "--config", str(cfg), "-a", "no-such-alias"], capture_output=True
        )
        times.append(time.perf_counter() - started)
    return sorted(times)[1]


def measure(fn: Callable[[Path, Path], int | None], src: Path, dest: Path) -> Measure:
    started = time.perf_counter()
    sent = fn(src, dest)
    return Measure(time.perf_counter() - started, sent)


def run(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="xfer-bench-"))
    rows: list[tuple[str, str, str, Measure | str]] = []
    try:
        with SshServer() as sshd:
            contenders = Tools(sshd, work, args.sbatchman)
            startup = startup_seconds(contenders, work)
            tools = contenders.available()
            wanted = [t for t in args.tools.split(",") if t] if args.tools else list(tools)
            scenarios = {
                f"small: {args.small:,} x 4 KiB": lambda p: make_small(p, args.small),
                f"large: {args.large} x {args.large_mib} MiB": lambda p: make_large(
                    p, args.large, args.large_mib
                ),
            }
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
        f"xfer CLI start-up (process, imports, config; no transfer): {startup:.2f} s. "
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
        for ref in ("rsync", "sftp"):
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
    args = parser.parse_args(argv)
    text = run(args)
    print(text)
    if args.out:
        from xfer_core.atomic import atomic_write_text

        atomic_write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
