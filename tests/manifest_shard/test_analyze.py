"""``xfer manifest analyze``: edge cases, exact counts, percentile accuracy, the suggestion rules."""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from pathlib import Path
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.manifest_shard.helpers import sized, write_items, xfer
from xfer_core.errors import ManifestError
from xfer_core.manifest.analyze import (
    MAX_OBJECTS_PER_SHARD,
    TARGET_SHARD_WEIGHT,
    Analysis,
    analyze_manifest,
    overhead_for,
    shard_count,
    suggest,
)

MiB = 1 << 20


def nearest_rank(sizes: list[int], p: float) -> int:
    ordered = sorted(sizes)
    return ordered[max(1, math.ceil(round(p * 1000) * len(sizes) / 1000)) - 1]


def analyze(tmp_path: Path, sizes: list[int]) -> Analysis:
    return analyze_manifest(write_items(tmp_path / "m.jsonl", sized(sizes)))


def test_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_bytes(b"\n\n")
    a = analyze_manifest(tmp_path / "m.jsonl")
    assert (a.records, a.total_bytes, a.histogram, a.suggested_shards) == (0, 0, [], 0)
    assert a.profile == "empty" and a.p50 == a.p99 == a.max_size == 0 and a.mean_size == 0.0
    res = xfer("manifest", "analyze", "--in", str(tmp_path / "m.jsonl"))
    assert res.returncode == 0, res.stderr
    assert "empty manifest" in res.stdout


def test_all_zero_sizes(tmp_path: Path) -> None:
    a = analyze(tmp_path, [0] * 7)
    assert a.zero_size == 7 and a.total_bytes == 0
    assert [(b.low, b.high, b.count, b.bytes) for b in a.histogram] == [(0, 1, 7, 0)]
    assert a.p50 == a.p90 == a.p99 == a.min_size == a.max_size == 0
    assert a.profile == "small-files"
    assert a.suggested_shards == 1
    assert a.total_weight == 7 * a.object_overhead
    res = xfer("manifest", "analyze", "--in", str(tmp_path / "m.jsonl"))
    assert res.returncode == 0, res.stderr
    assert "0 B" in res.stdout and "█" in res.stdout


def test_one_object(tmp_path: Path) -> None:
    a = analyze(tmp_path, [12345])
    assert (a.records, a.min_size, a.p50, a.p90, a.p99, a.max_size) == (1, *[12345] * 5)
    assert a.suggested_shards == 1


def test_huge_objects(tmp_path: Path) -> None:
    sizes = [1 << 50, (1 << 63) - 1, 5, 6]
    a = analyze(tmp_path, sizes)
    assert a.max_size == (1 << 63) - 1 and a.total_bytes == sum(sizes)
    assert a.p99 == (1 << 63) - 1
    assert a.profile == "mixed"  # half the objects small, nearly all bytes large
    assert a.suggested_shards == 4  # weight asks for far more; clamped to one object per shard


def test_implausible_size_is_an_error(tmp_path: Path) -> None:
    write_items(tmp_path / "m.jsonl", sized([1, 1 << 70]))
    with pytest.raises(ManifestError, match=r"record 2: size \d+ is not plausible"):
        analyze_manifest(tmp_path / "m.jsonl")


def test_bad_line_is_file_and_line_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"path":"a","size":1}\n{"path":"b","size":"x"}\n')
    res = xfer("manifest", "analyze", "--in", str(p))
    assert res.returncode == 2
    assert f"xfer: error: {p}:2: " in res.stderr


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 200), st.integers(0, 2**45)), min_size=1, max_size=300))
def test_counts_exact_and_percentiles_within_one_64th(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a = analyze(Path(tmp), sizes)
    assert a.records == len(sizes) and a.total_bytes == sum(sizes)
    assert (a.min_size, a.max_size) == (min(sizes), max(sizes))
    assert sum(b.count for b in a.histogram) == len(sizes)
    assert sum(b.bytes for b in a.histogram) == sum(sizes)
    for b in a.histogram:
        assert b.count == sum(1 for s in sizes if b.low <= s < b.high)
    assert a.small_objects == sum(1 for s in sizes if s < MiB)
    assert a.large_bytes == sum(s for s in sizes if s >= 64 * MiB)
    for p, got in ((0.5, a.p50), (0.9, a.p90), (0.99, a.p99)):
        want = nearest_rank(sizes, p)
        if want < 128:
            assert got == want
        else:
            assert abs(got - want) <= want / 64


@pytest.mark.parametrize(
    ("sizes", "profile"),
    [
        ([1000] * 90 + [10 * MiB] * 10, "small-files"),
        ([1 << 30] * 10 + [5 * MiB] * 5, "large-files"),
        ([100] * 90 + [1 << 30] * 10, "mixed"),  # many small objects, bytes in big ones
        ([8 * MiB] * 50, "mixed"),  # medium objects only
    ],
)
def test_profiles(tmp_path: Path, sizes: list[int], profile: str) -> None:
    a = analyze(tmp_path, sizes)
    assert a.profile == profile
    assert a.suggested_rclone_flags[:2] == ["--transfers", str(a.transfers)]
    assert a.object_overhead == overhead_for(a.transfers)
    assert a.rclone_flags_text == " ".join(a.suggested_rclone_flags)


def test_overhead_and_shard_count_rules() -> None:
    assert overhead_for(32) == 1 * MiB and overhead_for(16) == 2 * MiB
    assert shard_count(0, 0, MiB) == 0
    assert shard_count(10, 0, MiB) == 1
    assert shard_count(3, 10 * TARGET_SHARD_WEIGHT, 0) == 3  # never more shards than objects
    assert shard_count(100, 10 * TARGET_SHARD_WEIGHT, 0) == 10  # by bytes
    n = 3 * MAX_OBJECTS_PER_SHARD + 1
    assert shard_count(n, 0, 0) == 4  # by object count
    # object count enters the weight too: 1M objects of 1 MiB overhead = 1 TiB weight
    assert shard_count(10**6, 0, MiB) == max(20, -(-(10**6 * MiB) // TARGET_SHARD_WEIGHT))
    assert suggest(10, 100, 10, 0, object_overhead=7).object_overhead == 7


def test_cli_json_and_out_file(tmp_path: Path) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized([10, 2000, 3 * MiB, 1 << 30]))
    res = xfer(
        "manifest", "analyze", "--in", str(manifest), "--json", "--out", str(tmp_path / "a.json")
    )
    assert res.returncode == 0, res.stderr
    printed = msgspec.json.decode(res.stdout.encode(), type=Analysis)
    assert printed == msgspec.json.decode((tmp_path / "a.json").read_bytes(), type=Analysis)
    assert printed == analyze_manifest(manifest)
    assert json.loads(res.stdout)["schema"] == "xfer.analysis.v1"
    res = xfer("manifest", "analyze", "--in", str(manifest))
    assert res.returncode == 0
    for text in (
        "object sizes (log2 buckets",
        "profile:",
        "suggested rclone flags: --transfers",
        "suggested shards:",
        "p99",
    ):
        assert text in res.stdout


# --- upstream xfer's rules (shard_rule, parse_rate) ------------------------------------------


def test_parse_rate_units() -> None:
    from xfer_core.manifest.analyze import parse_rate

    assert parse_rate("10Gbps") == 10e9 / 8
    assert parse_rate("800Mb/s") == 100e6
    assert parse_rate("200MB/s") == 200e6
    assert parse_rate("1GiB/s") == 1 << 30


@given(st.integers(min_value=0, max_value=1 << 50), st.integers(min_value=1, max_value=10**6))
def test_shard_rule_respects_the_byte_cap_floor(total: int, records: int) -> None:
    from xfer_core.manifest.analyze import TIB, shard_rule, suggest

    s = suggest(records, total, records, 0)
    a = msgspec.structs.replace(
        _EMPTY, records=records, total_bytes=total, suggested_shards=s.shards
    )
    rule = shard_rule(a, array_concurrency=2, core_budget=4, cpus_per_task=4, max_shard_bytes_tb=1)
    floor = min(records, max(1, -(-total // TIB)))
    assert rule.num_shards >= floor
    assert rule.num_shards <= max(floor, 4 * 2)


_EMPTY = Analysis(
    manifest="m", records=0, total_bytes=0, zero_size=0, min_size=0, max_size=0, mean_size=0.0,
    p50=0, p90=0, p99=0, small_objects=0, large_bytes=0, histogram=[], profile="empty",
    profile_reason="", transfers=32, suggested_rclone_flags=[], object_overhead=0,
    total_weight=0, suggested_shards=0,
)  # fmt: skip


# sizes spanning the exact buckets, the fine ones, the multipart cutoff and 2**64 - 1
_sizes_st = st.lists(
    st.one_of(
        st.integers(0, 200),
        st.integers(0, 1 << 30),
        st.integers(200 * MiB - 2, 200 * MiB + 2),
        st.integers(0, (1 << 64) - 1),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(
    sizes=_sizes_st,
    dirs=st.lists(
        st.sampled_from(["", "a/", "a/b/", "c/", "a\nx/", "é/"]), min_size=1, max_size=60
    ),
    chunk=st.integers(1, 7),
    page=st.integers(1, 4),
)
def test_the_shard_steps_analysis_equals_analyze_manifest(
    sizes: list[int], dirs: list[str], chunk: int, page: int
) -> None:
    """``xfer run`` takes the analysis from the shard step's one pass over the manifest
    (``shard_manifest(on_analysis=...)``): it must be exactly what ``manifest analyze`` gives,
    whatever the sizes and however the records' directories follow each other, and
    ``manifest analyze`` must give the same whatever its chunk size (small chunks and
    LIST pages here, so that runs and buckets cross chunk boundaries)."""
    from xfer_core.manifest import analyze, locality
    from xfer_core.manifest.shard import shard_manifest

    items = [(f"{dirs[i % len(dirs)]}f{i}".encode(), size) for i, size in enumerate(sizes)]
    folders = [name.decode().rpartition("/")[0] for name, _ in items]
    runs = [len(list(run)) for _, run in itertools.groupby(folders)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(locality, "LIST_PAGE", page),
    ):
        manifest = write_items(Path(tmp) / "m.jsonl", items)
        with mock.patch.object(analyze, "_CHUNK", chunk):
            expected = analyze_manifest(manifest)
        got: list[Analysis] = []
        meta = shard_manifest(manifest, Path(tmp) / "shards", num_shards=1, on_analysis=got.append)
    assert got == [expected]
    assert expected.dir_pages == sum(-(-run // page) for run in runs)
    assert (expected.records, expected.total_bytes) == (len(sizes), sum(sizes))
    assert (meta.total_records, meta.total_bytes) == (expected.records, expected.total_bytes)
