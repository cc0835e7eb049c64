"""The plan's request model (pure: no services): one builder for a run before and after
sharding, and its advice when lookups dominate."""

from __future__ import annotations

from pathlib import Path

from tests.manifest_shard.helpers import records
from xfer_core.bulk.plan import make_plan
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
