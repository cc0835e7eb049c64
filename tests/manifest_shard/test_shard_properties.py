"""Property tests of sharding: placement, determinism, balance, isolation of huge objects."""

from __future__ import annotations

import hashlib
import random
import tempfile
import zlib
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.manifest_shard.helpers import shard_lines, sized, tree_bytes, write_items
from xfer_core.manifest.jsonl import decode_line
from xfer_core.manifest.record import path_bytes
from xfer_core.manifest.shard import ShardMeta, load_shard_meta, shard_manifest

sizes_st = st.lists(st.integers(0, 2**40), min_size=1, max_size=60)


def reference_lpt(items: list[tuple[bytes, int]], n: int, overhead: int) -> list[int]:
    """The textbook LPT with a linear scan: heaviest first (ties: crc32 of the name,
    then the later one), each onto the least-loaded shard (ties: fewer records, lower index)."""
    order = sorted(range(len(items)), key=lambda i: (-items[i][1], zlib.crc32(items[i][0]), -i))
    loads, counts = [0] * n, [0] * n
    assign = [-1] * len(items)
    for i in order:
        j = min(range(n), key=lambda k: (loads[k], counts[k], k))
        assign[i] = j
        loads[j] += items[i][1] + overhead
        counts[j] += 1
    return assign


def placement(outdir: Path) -> dict[bytes, int]:
    """{name: shard} read back from the .files lists."""
    where: dict[bytes, int] = {}
    for p in outdir.glob("shard_*.files"):
        for name in p.read_bytes().split(b"\n")[:-1]:
            assert name not in where, f"{name!r} is in two shards"
            where[name] = int(p.name[6:-6])
    return where


def check_consistent(manifest: Path, outdir: Path, meta: ShardMeta) -> None:
    """Every record in exactly one shard, byte-identical; meta matches the files."""
    src_lines = [ln for ln in manifest.read_bytes().splitlines(keepends=True) if ln.strip()]
    by_shard = shard_lines(outdir)
    assert sorted(by_shard) == list(range(meta.num_shards))
    assert Counter(ln for lines in by_shard.values() for ln in lines) == Counter(src_lines)
    assert meta == load_shard_meta(outdir)
    for info in meta.shards:
        data = (outdir / info.jsonl).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info.sha256
        recs = [decode_line(ln, "t") for ln in by_shard[info.index]]
        assert info.records == len(recs) >= 1
        assert info.bytes == sum(r.size for r in recs)
        assert info.weight == info.bytes + info.records * meta.object_overhead
        names = (outdir / info.files).read_bytes()
        assert names == b"".join(path_bytes(r) + b"\n" for r in recs)
        assert hashlib.sha256(names).hexdigest() == info.files_sha256
    weights = [s.weight for s in meta.shards]
    assert meta.max_weight == max(weights)
    assert meta.total_weight == sum(weights)
    assert meta.lower_bound == max(-(-meta.total_weight // meta.num_shards), meta.largest_weight)
    assert meta.max_weight >= meta.lower_bound


@settings(max_examples=40, deadline=None)
@given(sizes=sizes_st, data=st.data(), overhead=st.integers(0, 2**20))
def test_every_record_once_and_placed_like_reference_lpt(
    sizes: list[int], data: st.DataObject, overhead: int
) -> None:
    n = data.draw(st.integers(1, len(sizes)), label="num_shards")
    items = sized(sizes)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_items(Path(tmp) / "m.jsonl", items)
        meta = shard_manifest(
            manifest, Path(tmp) / "out", num_shards=n, object_overhead=overhead, layout="lpt"
        )
        check_consistent(manifest, Path(tmp) / "out", meta)
        where = placement(Path(tmp) / "out")
    assert meta.method == "lpt-heap"
    assert [where[name] for name, _ in items] == reference_lpt(items, n, overhead)


@settings(max_examples=15, deadline=None)
@given(sizes=sizes_st, data=st.data())
def test_deterministic_and_independent_of_input_order(
    sizes: list[int], data: st.DataObject
) -> None:
    n = data.draw(st.integers(1, len(sizes)), label="num_shards")
    items = sized(sizes)
    shuffled = data.draw(st.permutations(items), label="shuffled")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_items(root / "m.jsonl", items)
        shard_manifest(manifest, root / "a", num_shards=n)
        shard_manifest(manifest, root / "b", num_shards=n)
        assert tree_bytes(root / "a") == tree_bytes(root / "b")
        write_items(root / "m2.jsonl", shuffled)
        shard_manifest(root / "m2.jsonl", root / "c", num_shards=n)
        assert placement(root / "a") == placement(root / "c")


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sigma=st.floats(1.0, 2.5))
def test_imbalance_within_one_percent_of_lower_bound_on_lognormal(seed: int, sigma: float) -> None:
    rnd = random.Random(seed)
    items = sized([int(rnd.lognormvariate(14, sigma)) for _ in range(20_000)])
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_items(Path(tmp) / "m.jsonl", items)
        meta = shard_manifest(manifest, Path(tmp) / "out", num_shards=16, layout="lpt")
        check_consistent(manifest, Path(tmp) / "out", meta)
    assert meta.max_weight <= 1.01 * meta.lower_bound
    assert meta.imbalance <= 1.01


@settings(max_examples=25, deadline=None)
@given(
    small=st.lists(st.integers(0, 10_000), min_size=1, max_size=80),
    huge=st.lists(st.integers(1, 50), min_size=1, max_size=5),
    n=st.integers(2, 8),
)
def test_objects_larger_than_a_fair_share_get_their_own_shard(
    small: list[int], huge: list[int], n: int
) -> None:
    if len(huge) >= n:
        huge = huge[: n - 1]
    overhead = 100
    total_small = sum(small) + len(small) * overhead
    # each huge object outweighs all small ones together
    big = [(10 * total_small + 1) * (k + 1) for k in huge]
    items = sized(small + big)
    n = min(n, len(items))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_items(Path(tmp) / "m.jsonl", items)
        meta = shard_manifest(manifest, Path(tmp) / "out", num_shards=n, object_overhead=overhead)
        where = placement(Path(tmp) / "out")
    fair = meta.total_weight / n
    huge_names = [name for name, size in items if size + overhead > fair]
    assert huge_names  # the largest is always above a fair share here
    shards = [where[name] for name in huge_names]
    assert len(set(shards)) == len(shards)
    for s in shards:
        assert meta.shards[s].records == 1
    assert meta.largest_weight == max(big) + overhead
    assert meta.max_weight == meta.lower_bound == meta.largest_weight


def test_all_zero_sizes_and_zero_overhead_still_spread_by_count(tmp_path: Path) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized([0] * 10))
    meta = shard_manifest(manifest, tmp_path / "out", num_shards=3, object_overhead=0, layout="lpt")
    assert [s.records for s in meta.shards] == [4, 3, 3]
    meta = shard_manifest(manifest, tmp_path / "loc", num_shards=3, object_overhead=0)
    assert [s.records for s in meta.shards] == [3, 4, 3]
    assert meta.imbalance == 1.0 and meta.lower_bound == 0


def test_duplicate_records_are_each_placed_once(tmp_path: Path) -> None:
    items = [(b"same/name", 500)] * 3 + [(b"other", 10)]
    manifest = write_items(tmp_path / "m.jsonl", items)
    meta = shard_manifest(manifest, tmp_path / "out", num_shards=3, object_overhead=0)
    check_consistent(manifest, tmp_path / "out", meta)
    assert [s.bytes for s in meta.shards] == [510, 500, 500]
