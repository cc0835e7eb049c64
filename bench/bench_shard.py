"""Benchmark: ``xfer manifest shard`` against ``cp`` (the I/O floor) and a naive LPT.

1. A generated manifest of N records (default 10,000,000; lognormal sizes) is
   sharded into 1,024 shards by the real CLI: wall time, CPU time and peak RSS,
   next to ``cp`` of the same file (page cache warm).
2. M records (default 1,000,000) into 1,024 shards, side by side with the
   common naive LPT: sort by size, then put each object on the least-loaded
   shard found by a linear scan (``min(range(n), key=loads.__getitem__)``).
   Both are timed end to end (read, assign, write every shard) and for the
   assignment alone; both report the imbalance (max shard weight / lower bound)
   with the same weights.

Prints a markdown table and, with ``--write``, puts it in docs/bench-shard.md.
Manifests are generated under /tmp and deleted afterwards unless ``--keep``.

    uv run python bench/bench_shard.py --write
    uv run python bench/bench_shard.py --records 2000000 --small 200000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 1024
OVERHEAD = 1 << 20


def generate(path: Path, records: int, seed: int = 1) -> None:
    """A realistic manifest: seed-004 fields, lognormal sizes (median ~160 KiB, sigma 1.5)."""
    rnd = random.Random(seed)
    enc = msgspec.json.Encoder()
    src, dst = "s3src:bucket/data", "s3dst:bucket/data"
    t0 = time.monotonic()
    with open(path, "wb") as fh:
        buf = bytearray()
        for i in range(records):
            name = f"d{i % 997:04d}/sub{i % 31}/file_{i:09d}.bin"
            rec = {
                "schema": "xfer.manifest.v1",
                "run_id": "bench",
                "source_root": src,
                "dest_root": dst,
                "source": f"{src}/{name}",
                "dest": f"{dst}/{name}",
                "path": name,
                "size": int(rnd.lognormvariate(12, 1.5)),
                "mtime": "2024-05-01T12:00:00Z",
                "hashes": {"md5": f"{rnd.getrandbits(128):032x}"},
            }
            buf += enc.encode(rec)
            buf += b"\n"
            if len(buf) >= 1 << 22:
                fh.write(buf)
                buf.clear()
        fh.write(buf)
    print(f"  generated {records:,} records in {time.monotonic() - t0:.0f} s", file=sys.stderr)


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Run ``argv``: (wall s, CPU s, peak RSS MiB)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{argv} failed: {err}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def xfer_shard(manifest: Path, outdir: Path) -> list[str]:
    return [
        sys.executable, "-m", "xfer_core.cli", "manifest", "shard",
        "--in", str(manifest), "--outdir", str(outdir),
        "--num-shards", str(SHARDS), "--object-overhead", str(OVERHEAD),
    ]  # fmt: skip


def naive_main(manifest: str, outdir: str, stats: str) -> None:
    """The naive LPT end to end (run as a child process by this script)."""
    decode = msgspec.json.Decoder().decode
    with open(manifest, "rb") as fh:
        lines = [ln for ln in fh if ln.strip()]
    sizes = [decode(ln)["size"] for ln in lines]
    t0 = time.process_time()
    order = sorted(range(len(lines)), key=lambda i: -sizes[i])
    loads = [0] * SHARDS
    assign = [0] * len(lines)
    for i in order:
        j = min(range(SHARDS), key=loads.__getitem__)
        assign[i] = j
        loads[j] += sizes[i] + OVERHEAD
    assign_s = time.process_time() - t0
    buckets: list[list[bytes]] = [[] for _ in range(SHARDS)]
    for i, ln in enumerate(lines):
        buckets[assign[i]].append(ln)
    os.makedirs(outdir, exist_ok=True)
    for j, bucket in enumerate(buckets):
        with open(os.path.join(outdir, f"shard_{j:06d}.jsonl"), "wb") as out:
            out.writelines(bucket)
    total = sum(loads)
    lower = max(-(-total // SHARDS), max(sizes) + OVERHEAD)
    Path(stats).write_bytes(
        msgspec.json.encode({"assign_s": assign_s, "imbalance": max(loads) / lower})
    )


def xfer_assign_seconds(manifest: Path) -> float:
    """CPU seconds of xfer's assignment step alone (sort + heap LPT), same input."""
    from xfer_core.manifest import shard

    keys: list[int] = []
    with open(manifest, "rb") as fh, tempfile.TemporaryFile() as spool:
        records = shard._scan(str(manifest), fh, spool, keys)[0]
    t0 = time.process_time()
    keys.sort()
    shard._lpt(keys, records, SHARDS, OVERHEAD)
    return time.process_time() - t0


def run(records: int, small: int, work: Path) -> list[str]:
    big = work / f"manifest-{records}.jsonl"
    little = work / f"manifest-{small}.jsonl"
    for path, n in ((big, records), (little, small)):
        if not path.exists():
            generate(path, n)
    rows = []
    size_gib = big.stat().st_size / (1 << 30)
    subprocess.run(["cat", str(big)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    cp = timed(["cp", str(big), str(work / "copy.jsonl")])
    (work / "copy.jsonl").unlink()
    ours = timed(xfer_shard(big, work / "out-big"))
    from xfer_core.manifest.shard import load_shard_meta

    meta = load_shard_meta(work / "out-big")
    shutil.rmtree(work / "out-big")
    rows.append(
        f"| shard {records:,} records ({size_gib:.1f} GiB) into {SHARDS} | "
        f"{ours[0]:.1f} s | {ours[1]:.1f} s | {ours[2]:,} MiB | "
        f"cp: {cp[0]:.1f} s wall, {cp[1]:.1f} s CPU | {ours[0] / cp[0]:.1f}× cp wall, {ours[1] / max(cp[1], 0.01):.0f}× cp CPU | "
        f"imbalance {meta.imbalance:.6f} |"
    )
    ours_small = timed(xfer_shard(little, work / "out-small"))
    meta_small = load_shard_meta(work / "out-small")
    shutil.rmtree(work / "out-small")
    stats = work / "naive.json"
    naive = timed(
        [sys.executable, __file__, "--naive", str(little), str(work / "out-naive"), str(stats)]
    )
    shutil.rmtree(work / "out-naive")
    naive_stats = msgspec.json.decode(stats.read_bytes())
    ours_assign = xfer_assign_seconds(little)
    rows.append(
        f"| shard {small:,} records into {SHARDS}, end to end | {ours_small[0]:.1f} s | "
        f"{ours_small[1]:.1f} s | {ours_small[2]:,} MiB | naive LPT: {naive[0]:.1f} s wall, "
        f"{naive[1]:.1f} s CPU | {naive[1] / ours_small[1]:.1f}× less CPU | "
        f"imbalance {meta_small.imbalance:.6f} "
        f"(naive {naive_stats['imbalance']:.6f}) |"
    )
    rows.append(
        f"| … assignment step only (sort + place) | | {ours_assign:.2f} s | | "
        f"naive LPT: {naive_stats['assign_s']:.1f} s CPU | "
        f"{naive_stats['assign_s'] / ours_assign:.0f}× less CPU | |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the generated manifests")
    parser.add_argument("--write", action="store_true", help="write docs/bench-shard.md")
    parser.add_argument(
        "--naive", nargs=3, metavar=("MANIFEST", "OUTDIR", "STATS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.naive:
        naive_main(*args.naive)
        return
    work = Path(tempfile.gettempdir()) / "xfer-bench-shard"
    work.mkdir(exist_ok=True)
    try:
        rows = run(args.records, args.small, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = "\n".join(
        [
            "| case | xfer wall | xfer CPU | xfer peak RSS | alternative | ratio | balance |",
            "|---|---:|---:|---:|---|---:|---|",
            *rows,
        ]
    )
    print(table)
    if args.write:
        page = ROOT / "docs" / "bench-shard.md"
        text = page.read_text(encoding="utf-8") if page.exists() else ""
        marker = "<!-- bench_shard.py table -->"
        head = text.split(marker)[0] if marker in text else text
        page.write_text(f"{head}{marker}\n{table}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
