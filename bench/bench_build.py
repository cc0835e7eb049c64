"""Benchmark: ``xfer manifest build`` (posix lister) vs ``find -printf`` and ``rclone lsjson -R``.

Generates a tree of N empty-or-small files under /tmp (reused when present:
generation takes minutes), lists it with each tool (page cache warm: one
untimed ``find`` first), and prints a markdown table with wall time, peak RSS
and the ratio to ``find``. Peak RSS is measured at two tree sizes to show it
does not grow with the number of files.

    uv run python bench/bench_build.py                # 1,000,000 and 200,000 files
    uv run python bench/bench_build.py --files 200000 --small 50000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES_PER_DIR = 100
SUBDIRS_PER_TOP = 100


def generate(root: Path, files: int) -> Path:
    """A tree of ``files`` files (100 per directory, two directory levels); reused if complete."""
    tree = root / f"tree-{files}"
    marker = tree / ".complete"
    if marker.exists():
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    t0 = time.monotonic()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    payload = b"x" * 100
    made = 0
    d = 0
    while made < files:
        top, sub = divmod(d, SUBDIRS_PER_TOP)
        directory = tree / f"top{top:04d}" / f"dir{sub:04d}"
        directory.mkdir(parents=True)
        base = os.fsencode(directory) + b"/f"
        for i in range(min(FILES_PER_DIR, files - made)):
            fd = os.open(base + str(i).encode(), flags, 0o644)
            if i % 10 == 0:
                os.write(fd, payload[: 1 + (made % 100)])
            os.close(fd)
            made += 1
        d += 1
        if d % 500 == 0:
            print(f"  generated {made:,} files ...", file=sys.stderr, flush=True)
    marker.touch()
    print(f"  generated {files:,} files in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return tree


def timed(argv: list[str], stdout_path: str) -> tuple[float, float, int]:
    """Run ``argv`` with stdout to a file: (wall s, CPU s, peak RSS MiB), children included."""
    with open(stdout_path, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{argv[0]} failed: {err}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def count_lines(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def measure(tree: Path, work: str, nice: int) -> dict[str, tuple[float, float, int, int]]:
    xfer = [sys.executable, "-m", "xfer_core.cli"]
    rclone = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    out = f"{work}/out"
    # warm the page cache and dentry cache the same way for everyone
    subprocess.run(["find", str(tree), "-type", "f"], stdout=subprocess.DEVNULL, check=True)
    runs = {
        "find -printf": ["find", str(tree), "-type", "f", "-printf", "%s %T@ %p\n"],
        "xfer manifest build": [
            *xfer,
            "-q",
            "manifest",
            "build",
            "--source",
            str(tree),
            "--dest",
            "/dest",
            "--out",
            f"{work}/manifest.jsonl",
        ],
        "rclone lsjson -R": [
            rclone,
            "--config",
            "/dev/null",
            "lsjson",
            "-R",
            "--files-only",
            str(tree),
        ],
    }
    results = {}
    for label, argv in runs.items():
        best: tuple[float, float, int] | None = None
        if nice:
            argv = ["nice", "-n", str(nice), *argv]
        for _ in range(3):
            run = timed(argv, out)
            best = run if best is None or run[0] < best[0] else best
        assert best is not None
        produced = out if label != "xfer manifest build" else f"{work}/manifest.jsonl"
        # rclone's array adds 2 lines ("[" and "]"); the tree has one marker file
        results[label] = (*best, count_lines(produced))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=200_000, help="second size for the RSS check")
    parser.add_argument("--root", default="/tmp/xfer-bench-build")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every measured tool at this niceness (e.g. -20 on a busy shared machine)",
    )
    args = parser.parse_args()
    root = Path(args.root)
    big = generate(root, args.files)
    small = generate(root, args.small)
    with tempfile.TemporaryDirectory(prefix="xfer-bench-") as work:
        big_res = measure(big, work, args.nice)
        small_res = measure(small, work, args.nice)
    base_wall, base_cpu = big_res["find -printf"][:2]
    print(
        f"\nTree: {args.files:,} files (100 per directory), page cache warm, best of 3 "
        f"by wall time; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
        f"niceness {args.nice}.\n"
    )
    print(
        "| tool | files | wall s | wall vs find | CPU s | CPU vs find | peak RSS MiB | "
        f"peak RSS MiB at {args.small:,} files |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, (wall, cpu, rss, lines) in big_res.items():
        print(
            f"| {label} | {lines:,} | {wall:.2f} | {wall / base_wall:.2f}x | {cpu:.2f} | "
            f"{cpu / base_cpu:.2f}x | {rss} | {small_res[label][2]} |"
        )


if __name__ == "__main__":
    main()
