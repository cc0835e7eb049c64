"""``xfer manifest analyze`` and ``xfer manifest shard``: size profile and byte-balanced shards."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xfer_core.errors import XferError
from xfer_core.output import current

if TYPE_CHECKING:
    from xfer_core.manifest.analyze import Analysis

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)\s*\Z", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_size(text: str, option: str) -> int:
    """``1048576``, ``64GiB``, ``64G`` (binary, like rclone) or ``64GB`` (decimal) -> bytes."""
    m = _SIZE.match(text)
    if not m:
        raise XferError(
            f"{option}: cannot read {text!r} as a size",
            hint="use bytes or a unit: 512K, 64MiB, 64G (binary), 64GB (decimal)",
        )
    number, prefix, suffix = m.group(1), m.group(2).upper(), m.group(3)
    base = 1000 if suffix.upper() == "B" and prefix else 1024
    return int(float(number) * base ** _POWERS[prefix])


def analyze(
    in_path: Annotated[
        Path, typer.Option("--in", help="Manifest (xfer.manifest.v1 JSONL) to analyze.")
    ],
    json: Annotated[
        bool, typer.Option("--json", help="Print the analysis as one JSON object.")
    ] = False,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Also write the analysis JSON to this file.")
    ] = None,
) -> None:
    """Size histogram, percentiles, workload profile and suggestions for a manifest.

    Streams the manifest once (memory stays flat for any size). Prints a log2 size
    histogram, counts, total bytes, p50/p90/p99/max, the workload profile
    (small-files / large-files / mixed) with suggested rclone flags, the
    per-object overhead (bytes-equivalent cost of one object, the default weight
    for `shard`) and a shard count that accounts for both bytes and objects,
    and the request plan at that count (requests, bytes, time at a few rates).
    The rules are in docs/manifest.md and docs/run.md.

    Examples:

        xfer manifest analyze --in run/manifest.jsonl

        xfer manifest analyze --in run/manifest.jsonl --out run/analyze.json

        xfer manifest analyze --in run/manifest.jsonl --json | jq .suggested_shards
    """
    import msgspec

    from xfer_core.atomic import atomic_write_bytes
    from xfer_core.manifest.analyze import analyze_manifest

    out = current()
    result = analyze_manifest(in_path)
    if out_path is not None:
        atomic_write_bytes(out_path, msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    if json or out.json:
        out.emit_json(result)
        return
    _print_analysis(result)


def _print_analysis(a: Analysis) -> None:
    from rich.table import Table

    from xfer_core.output import human_bytes

    console = current().stdout
    console.print(f"[bold]{a.manifest}[/]: {a.records:,} objects, {human_bytes(a.total_bytes)}")
    if a.records == 0:
        console.print("empty manifest: nothing to transfer, no shards suggested")
        return
    console.print(
        f"sizes: min {human_bytes(a.min_size)} · p50 {human_bytes(a.p50)} · "
        f"p90 {human_bytes(a.p90)} · p99 {human_bytes(a.p99)} · max {human_bytes(a.max_size)} · "
        f"mean {human_bytes(a.mean_size)}; {a.zero_size:,} empty"
    )
    table = Table(title="object sizes (log2 buckets: low <= size < high)", title_justify="left")
    for col, just in (("size", "left"), ("objects", "right"), ("", "left"), ("bytes", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    peak = max(b.count for b in a.histogram)
    for b in a.histogram:
        label = "0 B" if b.high == 1 else f"{_pow2(b.low)} – {_pow2(b.high)}"
        bar = "█" * max(1, round(20 * b.count / peak))
        share = b.bytes / a.total_bytes if a.total_bytes else 0.0
        table.add_row(
            label, f"{b.count:,}", f"[cyan]{bar}[/]", f"{human_bytes(b.bytes)} ({share:.0%})"
        )
    console.print(table)
    console.print(f"profile: [bold]{a.profile}[/] ({a.profile_reason})")
    console.print(f"suggested rclone flags: {a.rclone_flags_text}", soft_wrap=True)
    console.print(
        f"per-object overhead: {human_bytes(a.object_overhead)} ({a.object_overhead:,} bytes-equivalent)"
    )
    console.print(
        f"suggested shards: [bold]{a.suggested_shards}[/] "
        f"(weight {human_bytes(a.total_weight)} = bytes + objects × overhead)"
    )
    from xfer_core.bulk.plan import plan_from_analysis, plan_lines

    for line in plan_lines(plan_from_analysis(a)):
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def _pow2(n: int) -> str:
    """A power of two as ``512 B`` / ``4 KiB`` / ``2 TiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB")
    k = n.bit_length() - 1
    return f"{1 << (k % 10)} {units[min(k // 10, len(units) - 1)]}"


def shard(
    in_path: Annotated[Path, typer.Option("--in", help="Manifest (xfer.manifest.v1 JSONL).")],
    outdir: Annotated[
        Path, typer.Option("--outdir", help="Directory for shard_NNNNNN.* and shards.meta.json.")
    ],
    num_shards: Annotated[
        int | None, typer.Option("--num-shards", "-n", help="Exactly this many shards.")
    ] = None,
    target_shard_bytes: Annotated[
        str | None,
        typer.Option(
            "--target-shard-bytes",
            help="Shards of about this weight (bytes + objects × overhead), e.g. 64GiB.",
        ),
    ] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="The shard count `analyze` suggests.")
    ] = False,
    object_overhead: Annotated[
        str | None,
        typer.Option(
            "--object-overhead",
            help="Bytes-equivalent cost of one object (default: analyze's suggestion), e.g. 1MiB.",
        ),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print a JSON summary line.")] = False,
) -> None:
    """Split a manifest into byte-balanced, deterministic shards laid out for locality.

    Weight of an object = size + per-object overhead. Shards are contiguous ranges
    of the paths sorted by directory, cut at directory boundaries where that costs
    little balance, so each shard touches a few directories (its rclone lists only
    those); an object larger than a fair share gets a shard of its own. Each
    shard's request cost model (directories, LIST pages, lookup) goes into the
    meta. The same manifest and options give byte-identical files. Writes shard_NNNNNN.jsonl (the records, unchanged),
    shard_NNNNNN.files (the names for `rclone copy --files-from-raw`) and
    shards.meta.json (per-shard records/bytes/weight/sha256, lower bound,
    imbalance), the meta last. Choose the count with exactly one of --num-shards,
    --target-shard-bytes or --auto.

    Examples:

        xfer manifest shard --in run/manifest.jsonl --outdir run/shards --num-shards 512

        xfer manifest shard --in run/manifest.jsonl --outdir run/shards --auto

        xfer manifest shard --in m.jsonl --outdir shards --target-shard-bytes 100GiB --object-overhead 2MiB
    """
    from xfer_core.manifest.shard import shard_manifest
    from xfer_core.output import human_bytes

    out = current()
    meta = shard_manifest(
        in_path,
        outdir,
        num_shards=num_shards,
        target_shard_bytes=(
            None
            if target_shard_bytes is None
            else parse_size(target_shard_bytes, "--target-shard-bytes")
        ),
        auto=auto,
        progress=out.info if out.is_tty else None,
        object_overhead=(
            None if object_overhead is None else parse_size(object_overhead, "--object-overhead")
        ),
    )
    if json or out.json:
        summary = {
            "event": "summary",
            "outdir": str(outdir),
            "num_shards": meta.num_shards,
            "records": meta.total_records,
            "bytes": meta.total_bytes,
            "object_overhead": meta.object_overhead,
            "lower_bound": meta.lower_bound,
            "max_weight": meta.max_weight,
            "imbalance": meta.imbalance,
        }
        out.emit_json(summary)
        return
    out.info(
        f"wrote {meta.num_shards} shards to {outdir}: {meta.total_records:,} records, "
        f"{human_bytes(meta.total_bytes)}; imbalance {meta.imbalance:.4f} "
        f"(max weight {human_bytes(meta.max_weight)}, lower bound {human_bytes(meta.lower_bound)}, "
        f"overhead {human_bytes(meta.object_overhead)}/object)"
    )


def register(manifest_app: typer.Typer) -> None:
    """Add ``analyze`` and ``shard`` to the ``manifest`` group."""
    manifest_app.command("analyze")(analyze)
    manifest_app.command("shard")(shard)
