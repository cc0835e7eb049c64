"""The plan's request model (pure: no services): one builder for a run before and after
sharding, and its advice when lookups dominate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifest_shard.helpers import records
from xfer_core.bulk.plan import AUTO_MIN_SAVING, LOOKUP_SHARE, dest_listing_choice, make_plan
from xfer_core.manifest.analyze import analyze_manifest
from xfer_core.manifest.jsonl import write_manifest
from xfer_core.manifest.shard import shard_manifest


def _manifest(path: Path, names: list[str], src: str, dst: str) -> Path:
    write_manifest(path, records([(n.encode(), 1000) for n in names], src=src, dst=dst))
    return path


def test_the_plan_before_sharding_matches_the_plan_of_the_shards(tmp_path: Path) -> None:
    names = [f"d000/s{i // 100:03d}/f{i:05d}" for i in range(5000)]
    manifest = _manifest(tmp_path / "m.jsonl", names, "s3:src/p", "s3:dst/p")
    analysis = analyze_manifest(manifest)
    for n in (1, 8, 64):
        meta = shard_manifest(manifest, tmp_path / f"s{n}", num_shards=n)
        before, after = make_plan(analysis, shards=n), make_plan(analysis, meta)
        assert before.route == after.route == "s3->s3 (server-side)"
        assert before.shards == after.shards == n
        # the per-object part is the same; lookups are an estimate before sharding
        assert before.requests["COPY"] == after.requests["COPY"] == 5000
        assert abs(before.total_requests - after.total_requests) <= 0.02 * after.total_requests
        # after sharding, each shard's lookup is the one its metadata holds
        assert after.lookups == sum(s.lookup_requests for s in meta.shards)


def test_plan_suggests_diff_dest_when_lookups_dominate(tmp_path: Path) -> None:
    # a flat prefix of 5,000 (5 pages) in 256 shards of ~20: every shard lists it all
    names = [f"k{i:05d}" for i in range(5000)]
    manifest = _manifest(tmp_path / "m.jsonl", names, "s3:src/p", "s3:dst/p")
    analysis = analyze_manifest(manifest)
    many = make_plan(analysis, shard_manifest(manifest, tmp_path / "many", num_shards=256))
    assert many.requests["LIST"] == 256 * 5 * 2
    assert any("--diff-dest" in note for note in many.notes), many.notes
    one = make_plan(analysis, shard_manifest(manifest, tmp_path / "one", num_shards=1))
    assert one.requests["LIST"] == 5 * 2
    assert not any("--diff-dest" in note for note in one.notes), one.notes
    # every record known to need sending (a --diff-dest manifest): nothing looked up
    diff = records([(n.encode(), 1000) for n in names], src="s3:src/p", dst="s3:dst/p")
    for rec in diff:
        rec.meta["diff"] = "missing"
    write_manifest(tmp_path / "d.jsonl", diff)
    sent = make_plan(
        analyze_manifest(tmp_path / "d.jsonl"),
        shard_manifest(tmp_path / "d.jsonl", tmp_path / "diff", num_shards=256),
    )
    assert sent.lookups == 0 and "LIST" not in sent.requests
    # per object: the source HEAD, the COPY, the read-back HEAD; no bucket check (no upload)
    assert sent.requests == {"HEAD": 2 * 5000, "COPY": 5000}


def _all_missing(src_manifest: Path, out: Path) -> Path:
    """The manifest as a run's own destination listing leaves it when nothing is there."""
    from xfer_core.manifest.jsonl import read_manifest

    marked = list(read_manifest(src_manifest))
    for rec in marked:
        rec.meta["diff"] = "missing"
    write_manifest(out, marked)
    return out


@pytest.mark.parametrize(
    ("layout", "route", "shards", "lists"),
    [
        # the bench's flat prefix of 5,000 (5 pages) in 256 shards: every shard would list
        # it all on each remote side -> one listing for the run
        ("flat", "s3->s3", 256, True),
        ("flat", "local->s3", 256, True),
        # at 64 shards the lookups are 4% of the plan: the plain mode stays
        ("flat", "s3->s3", 64, False),
        ("flat", "s3->s3", 1, False),
        # a deep tree's shards each list a few directories of their own
        ("deep", "s3->s3", 256, False),
        # nothing to look up at a local destination
        ("flat", "s3->local", 256, False),
        ("flat", "local->local", 256, False),
        # a small run: lookups dominate but a listing saves fewer than AUTO_MIN_SAVING
        ("small", "s3->s3", 40, False),
    ],
)
def test_the_run_lists_the_destination_once_only_when_that_is_cheaper(
    tmp_path: Path, layout: str, route: str, shards: int, lists: bool
) -> None:
    if layout == "deep":
        names = [f"d000/s{i // 100:03d}/f{i:05d}" for i in range(5000)]
    else:
        names = [f"k{i:05d}" for i in range(80 if layout == "small" else 5000)]
    roots = {"s3": ("s3:src/p", "s3:dst/p"), "local": ("/data/p", "/copy/p")}
    src = roots[route.split("->")[0]][0]
    dst = roots[route.split("->")[1]][1]
    manifest = _manifest(tmp_path / "m.jsonl", names, src, dst)
    analysis = analyze_manifest(manifest)
    meta = shard_manifest(manifest, tmp_path / "plain", num_shards=shards)
    choice = dest_listing_choice(analysis, meta)
    assert choice.list_dest is lists, choice.saving
    assert choice.plain == make_plan(analysis, meta)
    if lists:
        assert choice.plain.lookups > LOOKUP_SHARE * choice.plain.total_requests
        assert choice.saving >= AUTO_MIN_SAVING
    if route.endswith("->s3"):
        # the saving is what the shards of a destination found empty really cost less,
        # sharded from the marked manifest (the same cuts), the listing's pages deducted
        marked = _all_missing(manifest, tmp_path / "marked.jsonl")
        known = make_plan(analysis, shard_manifest(marked, tmp_path / "known", num_shards=shards))
        assert choice.listing_pages == max(1, analysis.dir_pages)
        assert choice.saving == (
            choice.plain.total_requests - known.total_requests - choice.listing_pages
        )
        if layout == "flat" and shards == 256:
            # 256 x 5 pages on each remote side saved (no bucket check in their place:
            # a shard that does not look at the destination skips that too)
            assert choice.saving == (2560 - 5 if route == "s3->s3" else 1280 - 5)
    else:
        assert choice.saving == 0
