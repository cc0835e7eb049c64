"""Benchmark: xfer's exclude matcher vs rsync's own filter on the same tree and patterns.

Builds a tree of N empty files (100 per directory, names like a project's:
``.py``/``.pyc``/``.o``/``.tmp`` files, ``__pycache__`` and ``build`` dirs), then decides the
sent set three ways, page cache warm:

- ``rsync -a --dry-run --out-format=%n --exclude=...`` (rsync walks and filters);
- xfer, walk + ``ExcludeMatcher.matches`` with pruning (what the sftp backend does);
- xfer, ``ExcludeMatcher.excluded`` on every path of a flat list (no walk: matcher cost only).

It checks the three agree and prints a markdown table (wall time, per-path cost, ratio to rsync).

    uv run python bench/bench_excludes.py              # 100,000 files
    uv run python bench/bench_excludes.py --files 20000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from xfer_core.sync.excludes import ExcludeMatcher

PATTERNS = [
    ".git",
    ".venv",
    "__pycache__",
    "build/",
    "*.pyc",
    "*.o",
    "/results",
    "data/**/*.tmp",
    "**/checkpoints",
    "[Tt]mp",
    "cache/***",
    "logs/*.log",
]
SUFFIXES = [".py", ".pyc", ".o", ".tmp", ".txt", ".log"]


def generate(root: Path, files: int) -> None:
    made = 0
    d = 0
    dirs = ["src", "data", "build", "__pycache__", "logs", "cache", "tmp", "results", "lib"]
    while made < files:
        directory = (
            root / dirs[d % len(dirs)] / f"m{d // len(dirs):04d}" / dirs[(d // 3) % len(dirs)]
        )
        directory.mkdir(parents=True, exist_ok=True)
        for i in range(min(100, files - made)):
            (directory / f"f{i}{SUFFIXES[i % len(SUFFIXES)]}").touch()
        made += 100
        d += 1


def rsync_set(root: Path, matcher: ExcludeMatcher) -> set[str]:
    rsync = shutil.which("rsync")
    assert rsync, "rsync is needed"
    out = subprocess.run(
        [
            rsync,
            "-a",
            "--dry-run",
            "--out-format=%n",
            *matcher.rsync_args(),
            f"{root}/",
            f"{root}.x/",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return {os.fsdecode(n.rstrip(b"/")) for n in out.split(b"\n") if n and n != b"./"}


def walk_set(root: Path, matcher: ExcludeMatcher) -> set[str]:
    kept: set[str] = set()
    stack = [(os.fspath(root), "")]
    while stack:
        path, rel = stack.pop()
        with os.scandir(path) as it:
            for entry in it:
                r = rel + entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                if matcher.matches(r, is_dir):
                    continue
                kept.add(r)
                if is_dir:
                    stack.append((entry.path, r + "/"))
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-excl-") as tmp:
        root = Path(tmp) / "tree"
        generate(root, args.files)
        entries = [
            (os.path.relpath(os.path.join(d, n), root), n in dn)
            for d, dn, fn in os.walk(root)
            for n in dn + fn
        ]
        matcher = ExcludeMatcher(PATTERNS)
        rsync_set(root, matcher)  # warm the page cache
        rows = []
        t0 = time.perf_counter()
        by_rsync = rsync_set(root, matcher)
        rows.append(("rsync --dry-run (walk + filter, 1 process)", time.perf_counter() - t0))
        t0 = time.perf_counter()
        by_walk = walk_set(root, matcher)
        rows.append(("xfer walk + ExcludeMatcher.matches (pruning)", time.perf_counter() - t0))
        fresh = ExcludeMatcher(PATTERNS)
        t0 = time.perf_counter()
        by_list = {p for p, is_dir in entries if not fresh.excluded(p, is_dir)}
        rows.append(("xfer ExcludeMatcher.excluded on every path", time.perf_counter() - t0))
        assert by_rsync == by_walk == by_list, "matcher and rsync disagree"
        base = rows[0][1]
        print(f"{len(entries):,} entries, {len(PATTERNS)} patterns, {len(by_rsync):,} sent\n")
        print("| method | wall s | µs / entry | vs rsync |")
        print("|---|---:|---:|---:|")
        for name, secs in rows:
            print(f"| {name} | {secs:.3f} | {secs / len(entries) * 1e6:.2f} | {secs / base:.2f}× |")


if __name__ == "__main__":
    main()
