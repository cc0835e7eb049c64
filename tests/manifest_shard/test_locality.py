"""The locality layout and the per-shard cost model (pure: no services)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.manifest_shard.helpers import records, tree_bytes, write_items
from tests.manifest_shard.test_shard_properties import check_consistent, placement
from xfer_core.manifest.jsonl import write_manifest
from xfer_core.manifest.locality import DIR_SLACK, choose_lookup, pages, sort_key
from xfer_core.manifest.shard import shard_manifest

dirs_st = st.sampled_from(["", "a/", "a/b/", "a/b.c/", "ab/", "a-b/", "z/y/x/", "a/b/c/"])
items_st = st.lists(
    st.tuples(dirs_st, st.integers(0, 10_000), st.integers(0, 2**20)),
    min_size=1,
    max_size=60,
    unique_by=lambda t: (t[0], t[1]),
)


def _items(raw: list[tuple[str, int, int]]) -> list[tuple[bytes, int]]:
    return [(f"{d}f{k}".encode(), size) for d, k, size in raw]


def test_sort_key_keeps_directories_and_subtrees_contiguous() -> None:
    names = [b"a/x", b"a.b/y", b"a/b/c", b"ab", b"a/b.txt", b"top", b"a/b/d/e", b"a/z"]
    ordered = sorted(names, key=sort_key)
    # root files first, then directory a (its files, then its subtrees), then a.b
    assert ordered == [b"ab", b"top", b"a/b.txt", b"a/x", b"a/z", b"a/b/c", b"a/b/d/e", b"a.b/y"]


@settings(max_examples=60, deadline=None)
@given(raw=items_st, data=st.data(), overhead=st.integers(0, 5000))
def test_locality_shards_are_contiguous_balanced_ranges(
    raw: list[tuple[str, int, int]], data: st.DataObject, overhead: int
) -> None:
    items = _items(raw)
    n = data.draw(st.integers(1, len(items)), label="num_shards")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_items(Path(tmp) / "m.jsonl", items)
        meta = shard_manifest(manifest, Path(tmp) / "out", num_shards=n, object_overhead=overhead)
        check_consistent(manifest, Path(tmp) / "out", meta)
        where = placement(Path(tmp) / "out")
    assert meta.method == "locality-ranges"
    weight = {name: size + overhead for name, size in items}
    singles = {s.index for s in meta.shards if s.records == 1}
    # shards in path order: the ranges first, heavy objects after; a range never
    # interleaves with another
    seq = [where[name] for name in sorted(weight, key=sort_key)]
    ranges = [s for s in seq if s not in singles or seq.count(s) > 1]
    assert ranges == sorted(ranges)
    # balance: a fair share of what the ranges hold, the directory slack twice, and one object
    total = meta.total_weight or len(items)
    if total == meta.total_weight:
        big = [s for s in meta.shards if s.records == 1 and s.weight * n > total]
        rest = n - len(big)
        left = total - sum(s.weight for s in big)
        heaviest = max(weight.values())
        for s in meta.shards:
            if s not in big:
                assert s.weight <= left / rest * (1 + 2 * DIR_SLACK) + heaviest


@settings(max_examples=20, deadline=None)
@given(raw=items_st, data=st.data())
def test_locality_is_deterministic_and_independent_of_input_order(
    raw: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    items = _items(raw)
    n = data.draw(st.integers(1, len(items)), label="num_shards")
    shuffled = data.draw(st.permutations(items), label="shuffled")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_items(root / "m.jsonl", items)
        shard_manifest(root / "m.jsonl", root / "a", num_shards=n)
        shard_manifest(root / "m.jsonl", root / "b", num_shards=n)
        assert tree_bytes(root / "a") == tree_bytes(root / "b")
        write_items(root / "m2.jsonl", shuffled)
        shard_manifest(root / "m2.jsonl", root / "c", num_shards=n)
        assert placement(root / "a") == placement(root / "c")


def _deep(files: int, per_dir: int = 100) -> list[tuple[bytes, int]]:
    return [(f"d000/s{i // per_dir:03d}/f{i:05d}".encode(), 1000 + i % 7) for i in range(files)]


def test_each_shard_touches_its_own_directories(tmp_path: Path) -> None:
    manifest = write_items(tmp_path / "m.jsonl", _deep(5000))
    loc = shard_manifest(manifest, tmp_path / "loc", num_shards=8)
    lpt = shard_manifest(manifest, tmp_path / "lpt", num_shards=8, layout="lpt")
    # 50 directories of 100 files: ~6.25 each, at most one shared at each cut
    assert all(s.dirs <= 8 for s in loc.shards)
    assert sum(s.dirs for s in loc.shards) <= 50 + 7
    assert all(s.dirs == 50 for s in lpt.shards)
    # each copy runs in its shard's deepest common directory (its sub-root) and lists
    # that and the directories below it it needs: its own directories (+ d000 when it
    # spans several), vs all of them per shard
    for s in loc.shards:
        if s.dirs == 1:
            assert s.subdir.startswith("d000/s") and s.list_pages == 1
        else:
            assert s.subdir == "d000" and s.list_pages == s.dirs + 1
    assert all(s.list_pages == 51 and s.subdir == "d000" for s in lpt.shards)
    assert loc.imbalance <= 1 + 2 * DIR_SLACK


def test_cuts_move_to_directory_boundaries_within_the_slack(tmp_path: Path) -> None:
    # 10 directories of 100 equal files, 5 shards: every ideal cut is on a boundary
    # but one directory is a bit heavier: cuts stay on the boundaries
    items = _deep(1000)
    items[0] = (items[0][0], items[0][1] + 4000)  # 2% of a fair share
    manifest = write_items(tmp_path / "m.jsonl", items)
    meta = shard_manifest(manifest, tmp_path / "o", num_shards=5, object_overhead=0)
    assert [s.dirs for s in meta.shards] == [2] * 5
    assert [s.records for s in meta.shards] == [200] * 5


def test_cost_model_picks_the_fewest_requests() -> None:
    # two remotes: both sides list, or both sides HEAD every object
    assert choose_lookup(625, 9) == ("list", 18)
    assert choose_lookup(3, 21) == ("objects", 6)
    assert choose_lookup(5, 5) == ("list", 10)  # ties: list
    # local -> S3: only the destination costs requests
    assert choose_lookup(3, 21, src=False) == ("objects", 3)
    # server-side copy: the source HEAD is the copy's own, so objects cost one side
    assert choose_lookup(15, 10, server_side=True) == ("objects", 15)
    assert choose_lookup(25, 10, server_side=True) == ("list", 20)
    # a destination known to need every record is not looked at: a server-side copy
    # then looks nothing up (the copy's HEAD), a local source costs nothing either way
    assert choose_lookup(25, 10, server_side=True, check_dest=False) == ("objects", 0)
    assert choose_lookup(25, 10, src=False, check_dest=False) == ("list", 0)
    assert pages(0) == 1 and pages(1000) == 1 and pages(1001) == 2


def test_flat_prefix_shards_choose_per_object_requests_when_small(tmp_path: Path) -> None:
    # one directory of 20,000 objects: listing it is 20 pages, whatever the shard holds
    items = [(f"k{i:06d}".encode(), 100) for i in range(20_000)]
    manifest = write_items(tmp_path / "m.jsonl", items)
    meta = shard_manifest(manifest, tmp_path / "o", num_shards=256)
    assert {s.list_pages for s in meta.shards} == {20}
    assert {s.lookup for s in meta.shards} == {"list"}  # 20 pages < 78 HEADs
    meta = shard_manifest(manifest, tmp_path / "o", num_shards=2000)
    assert {s.lookup for s in meta.shards} == {"objects"}  # 10 HEADs < 20 pages
    assert {s.lookup_requests for s in meta.shards} == {20}  # a HEAD per object, per side
    assert {s.subdir for s in meta.shards} == {""}


def test_diff_manifest_shards_skip_the_destination(tmp_path: Path) -> None:
    recs = records(_deep(300))
    for k, rec in enumerate(recs):
        if k < 250:
            rec.meta["diff"] = "missing"
    write_manifest(tmp_path / "m.jsonl", recs)
    meta = shard_manifest(tmp_path / "m.jsonl", tmp_path / "o", num_shards=3, object_overhead=0)
    assert [s.send for s in meta.shards] == [100, 100, 50]
    assert [s.check_dest for s in meta.shards] == [False, False, True]


def test_sub_root_is_the_deepest_plain_directory_of_all_records(tmp_path: Path) -> None:
    # a shard whose names lie in one directory runs there; a name that is not a plain
    # word (here a space, and a control character) keeps it at the plain parent
    items = [
        *[(f"top/a b/f{i}".encode(), 10) for i in range(4)],
        *[(f"top/plain/x/f{i}".encode(), 10) for i in range(4)],
        *[(f"top/t\tab/f{i}".encode(), 10) for i in range(4)],
    ]
    manifest = write_items(tmp_path / "m.jsonl", items)
    meta = shard_manifest(manifest, tmp_path / "o", num_shards=3, object_overhead=0)
    assert [s.subdir for s in meta.shards] == ["top", "top/plain/x", "top"]
    # from top: top itself and the shard's directory; from top/plain/x: that one only
    assert [s.list_pages for s in meta.shards] == [2, 1, 2]
