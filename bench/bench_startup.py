"""Benchmark: CLI start-up of ``xfer`` next to ``rclone version`` and a bare interpreter.

Installs xfer the way a user gets it (a built wheel, bytecode compiled) into a
temp venv with uv, then times each command N times and prints a markdown table
(min and median wall time, min CPU time, CPU ratio to ``python -c pass``). ``xfer --version`` must
stay far below 0.25 s: it answers before Typer is imported.

    uv run python bench/bench_startup.py            # 20 runs each
    uv run python bench/bench_startup.py --runs 50
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install(venv: Path) -> Path:
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    subprocess.run(["uv", "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env)
    subprocess.run(
        [
            "uv",
            "pip",
            "install",
            "-q",
            "--compile-bytecode",
            "--python",
            str(venv / "bin" / "python"),
            str(ROOT),
        ],
        check=True,
        env=env,
    )
    return venv / "bin"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], runs: int) -> tuple[float, float, float]:
    """(min wall, median wall, min CPU) seconds; CPU time is what a busy machine distorts least."""
    walls, cpus = [], []
    for _ in range(runs):
        cpu0, start = _children_cpu(), time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - cpu0)
    return min(walls), statistics.median(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xfer-bench-startup-") as tmp:
        bin_dir = install(Path(tmp) / "venv")
        cases = [
            ("python -c pass", [str(bin_dir / "python"), "-c", "pass"]),
            ("xfer --version", [str(bin_dir / "xfer"), "--version"]),
            ("rclone version", [str(bin_dir / "rclone"), "version"]),
            ("xfer --help", [str(bin_dir / "xfer"), "--help"]),
            ("xfer plugins", [str(bin_dir / "xfer"), "plugins"]),
            ("xfer plugins --json", [str(bin_dir / "xfer"), "plugins", "--json"]),
        ]
        rows = [(name, *timed(argv, args.runs)) for name, argv in cases if Path(argv[0]).exists()]
    load = os.getloadavg()[0]
    print(f"\n{args.runs} runs each, load average {load:.1f} on {os.cpu_count()} CPUs.\n")
    base_cpu = rows[0][3]
    print("| command | wall min s | wall median s | CPU min s | CPU ratio to python -c pass |")
    print("|---|---:|---:|---:|---:|")
    for name, best, median, cpu in rows:
        print(f"| `{name}` | {best:.3f} | {median:.3f} | {cpu:.3f} | {cpu / base_cpu:.1f}x |")


if __name__ == "__main__":
    main()
