"""``xfer manifest analyze`` and ``xfer manifest shard``: size profile and byte-balanced shards."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xfer_core.cli.render_opts import TrustRootsOption
from xfer_core.output import current

if TYPE_CHECKING:
    from xfer_core.manifest.analyze import Analysis, ShardRule

UPSTREAM = "Upstream xfer's estimates"
#: upstream xfer's ``--base-flags`` default (appended in the JSON key suggested_flags).
UPSTREAM_BASE_FLAGS = "--retries 10 --low-level-retries 20 --stats 600s --progress"


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
    base_flags: Annotated[
        str,
        typer.Option(
            "--base-flags",
            help="rclone flags appended to the profile's in the JSON key suggested_flags "
            "(upstream's).",
            rich_help_panel=UPSTREAM,
        ),
    ] = UPSTREAM_BASE_FLAGS,
    assumed_cpus_per_task: Annotated[
        int,
        typer.Option(
            "--assumed-cpus-per-task",
            min=1,
            help="Cores per shard task, for the core cap.",
            rich_help_panel=UPSTREAM,
        ),
    ] = 4,
    assumed_array_concurrency: Annotated[
        int,
        typer.Option(
            "--assumed-array-concurrency",
            min=1,
            help="Array concurrency: at most 4 × this many shards.",
            rich_help_panel=UPSTREAM,
        ),
    ] = 64,
    assumed_core_budget: Annotated[
        int | None,
        typer.Option(
            "--assumed-core-budget",
            min=1,
            help="Cores the partition gives: at most budget / cpus-per-task shards.",
            rich_help_panel=UPSTREAM,
        ),
    ] = None,
    max_shard_bytes_tb: Annotated[
        int,
        typer.Option(
            "--max-shard-bytes-tb",
            min=1,
            help="No shard over this many TiB: at least total / cap shards.",
            rich_help_panel=UPSTREAM,
        ),
    ] = 10,
    min_rate: Annotated[
        str,
        typer.Option(
            "--min-rate",
            help="Slow end of the time estimate (e.g. 1Gbps, 200MB/s).",
            rich_help_panel=UPSTREAM,
        ),
    ] = "1Gbps",
    max_rate: Annotated[
        str,
        typer.Option("--max-rate", help="Fast end of the time estimate.", rich_help_panel=UPSTREAM),
    ] = "40Gbps",
) -> None:
    """Size histogram, percentiles, workload profile and suggestions for a manifest.

    Streams the manifest once (memory stays flat for any size). Prints a log2 size
    histogram, counts, total bytes, p50/p90/p99/max, the workload profile
    (small-files / large-files / mixed) with suggested rclone flags, the
    per-object overhead (bytes-equivalent cost of one object, the default weight
    for `shard`) and a shard count that accounts for both bytes and objects,
    and the request plan at that count (requests, bytes, time at a few rates).
    The rules are in docs/manifest.md and docs/run.md. Then the shard count with
    upstream xfer's limits (per-shard TiB cap, 4 × array concurrency, core budget)
    and the transfer time over a rate range (`--min-rate`, `--max-rate`). `--json`
    carries upstream's keys too (total_files, file_size_stats, suggested_flags,
    suggested_shard_count, ...).

    Examples:

        xfer manifest analyze --in run/manifest.jsonl

        xfer manifest analyze --in run/manifest.jsonl --out run/analyze.json

        xfer manifest analyze --in run/manifest.jsonl --json | jq .suggested_shards
    """
    import msgspec

    from xfer_core.atomic import atomic_write_bytes
    from xfer_core.manifest.analyze import (
        analyze_manifest,
        histogram_entries,
        shard_rule,
        time_estimates,
        upstream_keys,
    )

    out = current()
    result = analyze_manifest(in_path)
    rule = shard_rule(
        result,
        cpus_per_task=assumed_cpus_per_task,
        array_concurrency=assumed_array_concurrency,
        core_budget=assumed_core_budget,
        max_shard_bytes_tb=max_shard_bytes_tb,
    )
    times = time_estimates(result.total_bytes, min_rate, max_rate)
    data = {
        **msgspec.to_builtins(result),
        **upstream_keys(result, rule, base_flags),
        "histogram": histogram_entries(result),
        "time_estimates": times,
    }
    if out_path is not None:
        atomic_write_bytes(out_path, msgspec.json.format(msgspec.json.encode(data)) + b"\n")
    if json or out.json:
        out.emit_json(data)
        return
    _print_analysis(result)
    if result.records:
        _print_upstream(rule, times, min_rate, max_rate)


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
    from xfer_core.bulk.plan import make_plan, plan_lines

    for line in plan_lines(make_plan(a)):
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def _print_upstream(
    rule: ShardRule, times: list[dict[str, object]], min_rate: str, max_rate: str
) -> None:
    console = current().stdout
    console.print(
        f"with upstream's limits: [bold]{rule.num_shards}[/] shards ({rule.reasoning})",
        soft_wrap=True,
    )
    console.print(
        f"estimated transfer time, {min_rate} .. {max_rate}: "
        + " · ".join(f"{t['rate_gbps']} Gbps {t['time']}" for t in times),
        soft_wrap=True,
    )


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
            help="Shards of about this weight (bytes + objects × overhead): bytes or a "
            "unit, e.g. 64GiB, 1.5T (binary), 500GB (decimal).",
        ),
    ] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="The shard count `analyze` suggests.")
    ] = False,
    object_overhead: Annotated[
        str | None,
        typer.Option(
            "--object-overhead",
            help="Bytes-equivalent cost of one object (default: analyze's suggestion), "
            "e.g. 1MiB, 0 (sizes as for --target-shard-bytes).",
        ),
    ] = None,
    trust_manifest_roots: TrustRootsOption = False,
    json: Annotated[bool, typer.Option("--json", help="Print a JSON summary line.")] = False,
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            help="bytes: balance bytes + objects × overhead (default); count: equal object "
            "counts; hash: by a hash of the name (a name keeps its shard).",
        ),
    ] = "bytes",
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
    --target-shard-bytes or --auto. The manifest's roots must be local paths or
    remote:path (see --trust-manifest-roots).

    Examples:

        xfer manifest shard --in run/manifest.jsonl --outdir run/shards --num-shards 512

        xfer manifest shard --in run/manifest.jsonl --outdir run/shards --auto

        xfer manifest shard --in m.jsonl --outdir shards --target-shard-bytes 100GiB --object-overhead 2MiB
    """
    from xfer_core.manifest.roots import redact_root
    from xfer_core.manifest.shard import shard_manifest
    from xfer_core.output import human_bytes
    from xfer_core.sizes import parse_size

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
        strategy=strategy,
        trust_roots=trust_manifest_roots,
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
            "method": meta.method,
            "source_root": redact_root(meta.source_root),
            "dest_root": redact_root(meta.dest_root),
        }
        out.emit_json(summary)
        return
    out.info(
        f"wrote {meta.num_shards} shards to {outdir}: {meta.total_records:,} records, "
        f"{human_bytes(meta.total_bytes)}; imbalance {meta.imbalance:.4f} "
        f"(max weight {human_bytes(meta.max_weight)}, lower bound {human_bytes(meta.lower_bound)}, "
        f"overhead {human_bytes(meta.object_overhead)}/object)"
    )
    out.info(f"roots: {redact_root(meta.source_root)} -> {redact_root(meta.dest_root)}")


def register(manifest_app: typer.Typer) -> None:
    """Add ``analyze`` and ``shard`` to the ``manifest`` group."""
    manifest_app.command("analyze")(analyze)
    manifest_app.command("shard")(shard)
