"""Size profile of a manifest (``xfer manifest analyze``) and what it suggests.

One streaming pass with flat memory: a fine histogram (exact below 128 B, 64
sub-buckets per power of two above, so percentiles are within 1/64 of the true
value) plus exact per-log2-bucket counts and bytes. Everything the suggestions
depend on (counts and bytes below 1 MiB / at or above 64 MiB) is exact, so
:func:`suggest` gives the same answer here and inside ``shard --auto``. Both
count with one :class:`_SizeProfile` (sizes added a sorted run at a time: a
chunk of records here, all of them at once in the shard step, which sorts them
anyway) and one :class:`~xfer_core.manifest.locality.RunPages`.

The rules (also in docs/manifest.md):

- profile: ``small-files`` when >= 50 % of objects are < 1 MiB and < 50 % of the
  bytes are in objects >= 64 MiB; ``large-files`` when >= 50 % of the bytes are in
  objects >= 64 MiB and < 50 % of objects are < 1 MiB; otherwise ``mixed``.
- per-object overhead (bytes-equivalent cost of one object): one object costs
  about ``PER_OBJECT_SECONDS`` of one transfer slot (HEAD + PUT/COPY round trips);
  a shard task moves ``TASK_BYTES_PER_SECOND`` over ``transfers`` slots, so one
  object costs ``PER_OBJECT_SECONDS * TASK_BYTES_PER_SECOND / transfers`` bytes.
- shard count: ``total_weight = total_bytes + records * overhead``;
  ``N = clamp(max(ceil(total_weight / TARGET_SHARD_WEIGHT),
  ceil(records / MAX_OBJECTS_PER_SHARD)), 1, records)``.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import chain
from typing import Literal, NamedTuple

import msgspec

from xfer_core.errors import ManifestError
from xfer_core.manifest.jsonl import read_manifest
from xfer_core.manifest.locality import RunPages

ANALYSIS_SCHEMA = "xfer.analysis.v1"

#: Objects below this size count as small (exactly 2**20: decided on log2 buckets).
SMALL_OBJECT = 1 << 20
#: Objects at or above this size count as large.
LARGE_OBJECT = 1 << 26
#: Round-trip time one object costs a transfer slot (check + request + commit).
PER_OBJECT_SECONDS = 0.05
#: What one shard task (one rclone) moves per second on a transfer node.
TASK_BYTES_PER_SECOND = 640 << 20
#: A shard should hold about this much weight (bytes plus per-object overhead).
TARGET_SHARD_WEIGHT = 64 << 30
#: ... and at most this many objects (keeps retries and file lists small).
MAX_OBJECTS_PER_SHARD = 50_000
#: rclone's --s3-upload-cutoff default: larger uploads are multipart ...
MULTIPART_CUTOFF = 200 * 1024 * 1024
#: ... in parts of --s3-chunk-size (5 MiB), grown so there are at most MAX_PARTS.
CHUNK = 5 * 1024 * 1024
MAX_PARTS = 10_000


def multipart_parts(size: int) -> int:
    """Parts of a multipart upload of ``size`` bytes (0 when it is a single PUT)."""
    if size < MULTIPART_CUTOFF:
        return 0
    chunk = max(CHUNK, -(-size // MAX_PARTS))
    return -(-size // chunk)


Profile = Literal["empty", "small-files", "large-files", "mixed"]

_COMMON_TAIL = ["--retries", "10", "--low-level-retries", "20", "--stats", "30s"]
#: rclone flags per profile: (transfers, flags).
PROFILE_FLAGS: dict[str, tuple[int, list[str]]] = {
    "small-files": (32, ["--transfers", "32", "--checkers", "64", "--fast-list", *_COMMON_TAIL]),
    "mixed": (
        24,
        [
            "--transfers", "24", "--checkers", "96", "--fast-list",
            "--multi-thread-streams", "4", "--multi-thread-cutoff", "256M",
            *_COMMON_TAIL,
        ],
    ),
    "large-files": (
        16,
        [
            "--transfers", "16", "--checkers", "128", "--fast-list",
            "--multi-thread-streams", "8", "--multi-thread-cutoff", "256M",
            *_COMMON_TAIL,
        ],
    ),
}  # fmt: skip
PROFILE_FLAGS["empty"] = PROFILE_FLAGS["small-files"]

# Fine histogram: sizes < 2**_EXACT_BITS each have their own bucket; above, each
# power of two is cut into 2**_SUB_BITS buckets.
_EXACT_BITS = 7
_SUB_BITS = 6
_EXACT = 1 << _EXACT_BITS
_FINE_BUCKETS = _EXACT + (64 - _EXACT_BITS) * (1 << _SUB_BITS)


class Suggestion(NamedTuple):
    """What :func:`suggest` derives from a manifest's size profile."""

    profile: Profile
    reason: str
    transfers: int
    rclone_flags: list[str]
    object_overhead: int
    total_weight: int
    shards: int


def overhead_for(transfers: int) -> int:
    """Bytes-equivalent cost of one object when a task runs ``transfers`` slots."""
    return int(PER_OBJECT_SECONDS * TASK_BYTES_PER_SECOND) // transfers


def shard_count(records: int, total_bytes: int, object_overhead: int) -> int:
    """Suggested shard count for ``records`` objects of ``total_bytes`` (0 when empty)."""
    if records == 0:
        return 0
    total_weight = total_bytes + records * object_overhead
    by_weight = -(-total_weight // TARGET_SHARD_WEIGHT)
    by_count = -(-records // MAX_OBJECTS_PER_SHARD)
    return min(records, max(1, by_weight, by_count))


def suggest(
    records: int,
    total_bytes: int,
    small_objects: int,
    large_bytes: int,
    object_overhead: int | None = None,
) -> Suggestion:
    """Profile, rclone flags, per-object overhead and shard count.

    ``small_objects``: how many objects are < 1 MiB; ``large_bytes``: bytes in
    objects >= 64 MiB. ``object_overhead`` overrides the suggested one.
    """
    profile: Profile
    if records == 0:
        profile, reason = "empty", "no objects"
    else:
        small_share = small_objects / records
        large_share = large_bytes / total_bytes if total_bytes else 0.0
        shares = (
            f"{small_share:.0%} of objects < 1 MiB, {large_share:.0%} of bytes in objects >= 64 MiB"
        )
        if small_share >= 0.5 and large_share < 0.5:
            profile, reason = "small-files", shares + ": per-object cost dominates"
        elif large_share >= 0.5 and small_share < 0.5:
            profile, reason = "large-files", shares + ": bandwidth dominates"
        else:
            profile, reason = "mixed", shares
    transfers, flags = PROFILE_FLAGS[profile]
    overhead = overhead_for(transfers) if object_overhead is None else object_overhead
    return Suggestion(
        profile=profile,
        reason=reason,
        transfers=transfers,
        rclone_flags=list(flags),
        object_overhead=overhead,
        total_weight=total_bytes + records * overhead,
        shards=shard_count(records, total_bytes, overhead),
    )


class SizeBucket(msgspec.Struct, frozen=True):
    """One log2 bucket: sizes in ``[low, high)``; bucket 0 is exactly size 0."""

    low: int
    high: int
    count: int
    bytes: int


class Analysis(msgspec.Struct, frozen=True):
    """The result of :func:`analyze_manifest` (``xfer manifest analyze --json``)."""

    manifest: str
    records: int
    total_bytes: int
    zero_size: int
    min_size: int
    max_size: int
    mean_size: float
    #: Nearest-rank percentiles: exact below 128 B, else within 1/64 of the true value.
    p50: int
    p90: int
    p99: int
    #: Objects < 1 MiB, and bytes in objects >= 64 MiB (both exact).
    small_objects: int
    large_bytes: int
    histogram: list[SizeBucket]
    profile: Profile
    profile_reason: str
    transfers: int
    suggested_rclone_flags: list[str]
    #: Bytes-equivalent cost of one object, the default for ``shard``.
    object_overhead: int
    total_weight: int
    suggested_shards: int
    schema: str = ANALYSIS_SCHEMA
    #: Objects larger than 100 MiB (upstream xfer's "large files" threshold).
    over_100mib: int = 0
    #: Roots of the first record (for the request plan).
    source_root: str = ""
    dest_root: str = ""
    #: Uploads that are multipart (>= rclone's 200 MiB cutoff), and their parts.
    multipart_objects: int = 0
    multipart_parts: int = 0
    #: LIST pages to list each run of records in one directory (manifest order):
    #: about one listing of every directory, with flat memory.
    dir_pages: int = 0

    @property
    def rclone_flags_text(self) -> str:
        """The suggested flags as one string for ``--rclone-flags``."""
        return " ".join(self.suggested_rclone_flags)


_UPSTREAM_LARGE = 100 << 20


# --- upstream xfer's view (``manifest analyze --json`` carries its keys too) -----------

TIB = 1 << 40


class ShardRule(NamedTuple):
    """The shard count with upstream's core/concurrency limits applied to ours."""

    num_shards: int
    reasoning: str
    assumptions: dict[str, int | None]


def shard_rule(
    a: Analysis,
    *,
    cpus_per_task: int = 4,
    array_concurrency: int = 64,
    core_budget: int | None = None,
    max_shard_bytes_tb: int = 10,
) -> ShardRule:
    """Our object-aware count, raised to upstream's per-shard byte cap and capped like upstream.

    ``by_bytes = ceil(total_bytes / max_shard_bytes_tb TiB)`` is a floor (no shard over
    the cap); ``4 × array_concurrency`` and ``core_budget // cpus_per_task`` are ceilings
    (more shards only lengthen the queue), which never go below the floor.
    """
    assumptions: dict[str, int | None] = {
        "total_bytes": a.total_bytes,
        "cpus_per_task": cpus_per_task,
        "array_concurrency": array_concurrency,
        "core_budget": core_budget,
        "max_shard_bytes_tb": max_shard_bytes_tb,
    }
    if a.records == 0:
        return ShardRule(0, "empty manifest: no shards", assumptions)
    by_bytes = max(1, -(-a.total_bytes // (max_shard_bytes_tb * TIB)))
    upper = 4 * array_concurrency
    parts = [
        f"xfer rule (bytes + objects × overhead) = {a.suggested_shards}",
        f"shards_by_bytes={by_bytes} ({max_shard_bytes_tb} TiB cap)",
        f"shards_by_concurrency={upper} (4 x {array_concurrency})",
    ]
    if core_budget is not None:
        by_cores = max(1, core_budget // cpus_per_task)
        upper = min(upper, by_cores)
        parts.append(f"shards_by_cores={by_cores} ({core_budget} cores / {cpus_per_task})")
    n = min(a.records, max(by_bytes, min(a.suggested_shards, upper)))
    parts.append(f"chose max(shards_by_bytes, min(xfer rule, {upper})) = {n}")
    return ShardRule(n, "; ".join(parts), assumptions)


_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([KMGTP]i?)?(bps|b/s|Bps|B/s)\s*")


def parse_rate(text: str) -> float:
    """A transfer rate (``10Gbps``, ``1.5Gb/s``, ``200MB/s``, ``1GiB/s``) in bytes per second."""
    from xfer_core.errors import ConfigError

    m = _RATE.fullmatch(text)
    if not m:
        raise ConfigError(
            f"rate {text!r}: expected a number and a unit like 10Gbps, 800Mb/s, 200MB/s or 1GiB/s"
        )
    value, prefix, unit = float(m.group(1)), m.group(2) or "", m.group(3)
    scale = (
        1024.0 ** (" KMGTP".index(prefix[0]))
        if prefix.endswith("i")
        else (1000.0 ** (" KMGTP".index(prefix[0])) if prefix else 1.0)
    )
    per_second = value * scale
    return per_second / 8.0 if unit in ("bps", "b/s") else per_second


def human_seconds(seconds: float) -> str:
    """``1d 2h 3m 4s`` (as upstream's est.py prints it)."""
    sec = round(seconds)
    days, rem = divmod(sec, 86400)
    hours, rem = divmod(rem, 3600)
    mins, secs = divmod(rem, 60)
    parts = [f"{days}d"] if days else []
    if hours or (days and (mins or secs)):
        parts.append(f"{hours}h")
    if mins or ((days or hours) and secs):
        parts.append(f"{mins}m")
    return " ".join([*parts, f"{secs}s"])


def time_estimates(
    total_bytes: int, min_rate: str, max_rate: str, rows: int = 7
) -> list[dict[str, object]]:
    """Transfer time of ``total_bytes`` at ``rows`` rates spaced evenly (geometric) over the range."""
    lo, hi = sorted((parse_rate(min_rate), parse_rate(max_rate)))
    if lo <= 0:
        from xfer_core.errors import ConfigError

        raise ConfigError("rates must be positive")
    rates = [lo] if lo == hi else [lo * (hi / lo) ** (i / (rows - 1)) for i in range(rows)]
    return [
        {
            "rate_bytes_per_second": round(r, 3),
            "rate_gbps": round(r * 8 / 1e9, 3),
            "seconds": total_bytes / r,
            "time": human_seconds(total_bytes / r),
        }
        for r in rates
    ]


def upstream_keys(a: Analysis, rule: ShardRule, base_flags: str) -> dict[str, object]:
    """The keys upstream xfer's ``manifest analyze`` prints, from this analysis.

    ``median_size`` is analyze's p50 (within 1/64); ``profile`` stays xfer's
    (``small-files``, upstream: ``small_files``); ``histogram`` entries carry both
    tools' keys (see :func:`histogram_entries`).
    """
    from xfer_core.output import human_bytes

    n = a.records or 1
    small = a.small_objects
    large = a.over_100mib
    return {
        "status": "ok" if a.records else "error",
        "total_files": a.records,
        "total_bytes_human": human_bytes(a.total_bytes),
        "file_size_stats": {
            "min_size": a.min_size,
            "min_size_human": human_bytes(a.min_size),
            "max_size": a.max_size,
            "max_size_human": human_bytes(a.max_size),
            "median_size": a.p50,
            "median_size_human": human_bytes(a.p50),
            "small_files_pct": round(100.0 * small / n, 1),
            "medium_files_pct": round(100.0 * (a.records - small - large) / n, 1),
            "large_files_pct": round(100.0 * large / n, 1),
        },
        "profile_explanation": a.profile_reason,
        "suggested_flags": " ".join([*a.suggested_rclone_flags, base_flags]).strip(),
        "suggested_shard_count": rule.num_shards,
        "shard_count_reasoning": rule.reasoning,
        "shard_count_assumptions": rule.assumptions,
    }


def histogram_entries(a: Analysis) -> list[dict[str, object]]:
    """Each log2 bucket with xfer's keys (low, high, count, bytes) and upstream's."""
    from xfer_core.output import human_bytes

    out: list[dict[str, object]] = []
    for b in a.histogram:
        out.append(
            {
                **msgspec.to_builtins(b),
                "range_min": b.low,
                "range_max": b.high,
                "range_label": f"{human_bytes(b.low)} - {human_bytes(b.high)}",
                "file_count": b.count,
                "pct_files": round(100.0 * b.count / a.records, 1) if a.records else 0.0,
                "bytes_human": human_bytes(b.bytes),
                "pct_bytes": round(100.0 * b.bytes / a.total_bytes, 1) if a.total_bytes else 0.0,
            }
        )
    return out


def _fine_bounds(bucket: int) -> tuple[int, int]:
    if bucket < _EXACT:
        return bucket, bucket + 1
    exp = _EXACT_BITS + ((bucket - _EXACT) >> _SUB_BITS)
    sub = (bucket - _EXACT) & ((1 << _SUB_BITS) - 1)
    width = 1 << (exp - _SUB_BITS)
    low = ((1 << _SUB_BITS) + sub) * width
    return low, low + width


def _percentile(fine: list[int], records: int, p: float, lo: int, hi: int) -> int:
    """Nearest-rank percentile from the fine histogram, interpolated inside its bucket."""
    rank = max(1, -(-(round(p * 1000) * records) // 1000))
    if rank >= records:
        return hi  # the extremes are known exactly
    if rank == 1:
        return lo
    seen = 0
    for bucket, count in enumerate(fine):
        if count and seen + count >= rank:
            low, high = _fine_bounds(bucket)
            value = low + int((high - 1 - low) * (rank - seen - 0.5) / count + 0.5)
            return min(max(value, lo), hi)
        seen += count
    return hi


#: Records :func:`analyze_manifest` holds at once (sorted, then counted by bisection).
_CHUNK = 1 << 14


def analyze_manifest(path: str | os.PathLike[str]) -> Analysis:
    """Stream ``path`` once and return its :class:`Analysis` (memory stays flat: the
    sizes are counted a sorted chunk at a time, the way :func:`analyze_sorted_sizes`
    counts them all at once).

    Raises :class:`~xfer_core.errors.ManifestError` (``FILE:LINE: reason``) on a bad line.
    """
    profile = _SizeProfile()
    pages = RunPages()
    records = read_manifest(path)
    first = next(records, None)
    if first is None:
        return profile.analysis(path, ("", ""), 0)
    sizes: list[int] = []
    dirs: list[str] = []
    add_size, add_dir = sizes.append, dirs.append
    for record in chain((first,), records):
        add_size(record.size)
        add_dir(record.path.rpartition("/")[0])
        if len(sizes) == _CHUNK:
            profile.add(path, sizes)
            pages.add(dirs)
            sizes.clear()
            dirs.clear()
    profile.add(path, sizes)
    pages.add(dirs)
    return profile.analysis(path, (first.source_root, first.dest_root), pages.pages)


def analyze_sorted_sizes(
    path: str | os.PathLike[str],
    sizes: Sequence[int],
    roots: tuple[str, str],
    dir_pages: int,
) -> Analysis:
    """The :class:`Analysis` of a manifest from its record sizes in ascending order
    (the same result as :func:`analyze_manifest`, for a caller that has read the
    manifest already: ``xfer run``'s shard step). ``dir_pages`` is
    :class:`~xfer_core.manifest.locality.RunPages` of the records' directories."""
    if sizes and sizes[-1] >> 64:
        raise _implausible(path, sizes[-1])
    profile = _SizeProfile()
    profile.add_sorted(sizes)
    return profile.analysis(path, roots, dir_pages)


def _implausible(path: str | os.PathLike[str], size: int, where: str = "") -> ManifestError:
    return ManifestError(f"{os.fspath(path)}: {where}size {size} is not plausible (>= 2**64)")


def _bucket_of(size: int) -> int:
    """The fine bucket of ``size``."""
    if size < _EXACT:
        return size
    exp = size.bit_length() - 1
    sub_mask = (1 << _SUB_BITS) - 1
    return _EXACT + ((exp - _EXACT_BITS) << _SUB_BITS) + ((size >> (exp - _SUB_BITS)) & sub_mask)


class _SizeProfile:
    """The size counts of an :class:`Analysis`, added a run of ascending sizes at a time:
    the fine histogram, bytes per log2 bucket, extremes, and the large/multipart counts."""

    def __init__(self) -> None:
        self.fine = [0] * _FINE_BUCKETS
        self.log2_bytes = [0] * 65
        self.records = self.over = self.multipart = self.parts = 0
        self.lo = -1
        self.hi = 0

    def add(self, path: str | os.PathLike[str], sizes: list[int]) -> None:
        """Count the next records' ``sizes`` (in manifest order)."""
        ordered = sorted(sizes)
        if ordered and ordered[-1] >> 64:
            bad = next(i for i, size in enumerate(sizes) if size >> 64)
            raise _implausible(path, sizes[bad], f"record {self.records + bad + 1}: ")
        self.add_sorted(ordered)

    def add_sorted(self, sizes: Sequence[int]) -> None:
        """Count ``sizes`` (ascending, each < 2**64)."""
        n = len(sizes)
        if not n:
            return
        fine, log2_bytes = self.fine, self.log2_bytes
        # every fine bucket is a range [low, high) and they follow each other: count each
        # by bisecting the sorted sizes, from the first bucket that holds anything
        start = 0
        while start < n:
            bucket = _bucket_of(sizes[start])
            end = bisect_left(sizes, _fine_bounds(bucket)[1], start)
            fine[bucket] += end - start
            start = end
        a = 0
        for bits in range(sizes[0].bit_length(), sizes[-1].bit_length() + 1):
            b = bisect_left(sizes, 1 << bits, a)
            log2_bytes[bits] += sum(sizes[a:b])
            a = b
        heavy = sizes[bisect_left(sizes, MULTIPART_CUTOFF) :]
        self.multipart += len(heavy)
        self.parts += sum(map(multipart_parts, heavy))
        self.over += n - bisect_right(sizes, _UPSTREAM_LARGE)
        self.lo = sizes[0] if self.lo < 0 else min(self.lo, sizes[0])
        self.hi = max(self.hi, sizes[-1])
        self.records += n

    def analysis(
        self, path: str | os.PathLike[str], roots: tuple[str, str], dir_pages: int
    ) -> Analysis:
        """The :class:`Analysis` of what was added."""
        return _result(
            path, self.fine, self.log2_bytes, records=self.records, lo=max(self.lo, 0),
            hi=self.hi, over=self.over, roots=roots, multipart=self.multipart, parts=self.parts,
            dir_pages=dir_pages,
        )  # fmt: skip


def _result(
    path: str | os.PathLike[str],
    fine: list[int],
    log2_bytes: list[int],
    *,
    records: int,
    lo: int,
    hi: int,
    over: int,
    roots: tuple[str, str],
    multipart: int,
    parts: int,
    dir_pages: int,
) -> Analysis:
    """The :class:`Analysis` from the fine histogram and the per-log2 byte sums."""
    log2_counts = [0] * 65
    for bucket, count in enumerate(fine):
        if count:
            log2_counts[_fine_bounds(bucket)[0].bit_length()] += count
    total = sum(log2_bytes)
    histogram = [
        SizeBucket(
            low=0 if bits == 0 else 1 << (bits - 1),
            high=1 << bits,
            count=log2_counts[bits],
            bytes=log2_bytes[bits],
        )
        for bits in range(65)
        if log2_counts[bits]
    ]
    small = sum(log2_counts[: SMALL_OBJECT.bit_length()])
    large = sum(log2_bytes[LARGE_OBJECT.bit_length() :])
    s = suggest(records, total, small, large)
    return Analysis(
        manifest=os.fspath(path),
        records=records,
        total_bytes=total,
        zero_size=log2_counts[0],
        min_size=lo,
        max_size=hi,
        mean_size=total / records if records else 0.0,
        p50=_percentile(fine, records, 0.50, lo, hi),
        p90=_percentile(fine, records, 0.90, lo, hi),
        p99=_percentile(fine, records, 0.99, lo, hi),
        small_objects=small,
        large_bytes=large,
        histogram=histogram,
        profile=s.profile,
        profile_reason=s.reason,
        transfers=s.transfers,
        suggested_rclone_flags=s.rclone_flags,
        object_overhead=s.object_overhead,
        total_weight=s.total_weight,
        suggested_shards=s.shards,
        over_100mib=over,
        source_root=roots[0],
        dest_root=roots[1],
        multipart_objects=multipart,
        multipart_parts=parts,
        dir_pages=dir_pages,
    )
