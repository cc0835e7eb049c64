"""``xfer manifest shard`` through the real CLI: every bad input, safe outdir handling, output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.manifest_shard.helpers import records, sized, tree_bytes, write_items, xfer
from xfer_core import atomic
from xfer_core.errors import XferError
from xfer_core.manifest import shard as shard_mod
from xfer_core.manifest.analyze import analyze_manifest
from xfer_core.manifest.shard import META_NAME, load_shard_meta, shard_manifest

GOOD = (
    b'{"schema":"xfer.manifest.v1","path":"ok/%d","size":%d,"source_root":"a:","dest_root":"b:"}\n'
)

BAD_LINES = {
    "not json": (b"{not json\n", "not valid JSON"),
    "wrong type": (b'{"path":"x","size":"big"}\n', "Expected `int`"),
    "missing path": (b'{"size":3}\n', "path"),
    "unknown schema": (b'{"schema":"other.v9","path":"x","size":1}\n', "unknown schema"),
    "negative size": (b'{"path":"x","size":-1}\n', "negative size"),
    "absolute path": (b'{"path":"/etc/passwd","size":1}\n', "absolute path"),
    "dotdot": (b'{"path":"a/../../b","size":1}\n', "climbs out"),
    "array": (b"[1,2]\n", "Expected `object`"),
}


def shard_args(manifest: Path, outdir: Path, *extra: str) -> list[str]:
    return ["manifest", "shard", "--in", str(manifest), "--outdir", str(outdir), *extra]


def manifest_with(tmp_path: Path, bad: bytes) -> Path:
    p = tmp_path / "m.jsonl"
    p.write_bytes(GOOD % (1, 10) + GOOD % (2, 20) + bad + GOOD % (3, 30))
    return p


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_names_file_and_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    bad, reason = BAD_LINES[case]
    manifest = manifest_with(tmp_path, bad)
    with pytest.raises(XferError) as err:
        shard_manifest(manifest, tmp_path / "out", num_shards=2)
    assert err.value.exit_code == 2
    assert str(err.value).startswith(f"{manifest}:3: ")
    assert reason in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]  # no outdir, no temp dir


@pytest.mark.parametrize("case", ["not json", "dotdot"])
def test_bad_line_through_the_cli_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    manifest = manifest_with(tmp_path, BAD_LINES[case][0])
    res = xfer(*shard_args(manifest, tmp_path / "out", "-n", "2"))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"xfer: error: {manifest}:3: ")
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


def test_roots_that_differ_are_refused_with_the_line(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_bytes(GOOD % (1, 1) + b'{"path":"x","size":1,"source_root":"c:","dest_root":"b:"}\n')
    res = xfer("manifest", "shard", "--in", str(p), "--outdir", str(tmp_path / "out"), "-n", "1")
    assert res.returncode == 2
    assert f"{p}:2: roots 'c:' -> 'b:' differ" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "--num-shards must be at least 1"),
        (["-n", "4"], "4 shards for 3 object(s)"),
        ([], "exactly one of --num-shards, --target-shard-bytes or --auto"),
        (["--target-shard-bytes", "lots"], "--target-shard-bytes: cannot read 'lots' as a size"),
        (["-n", "1", "--object-overhead", "-5"], "cannot read '-5' as a size"),
    ],
)
def test_nonsense_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized([1, 2, 3]))
    res = xfer(*shard_args(manifest, tmp_path / "out", *args))
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_shards": -3}, "--num-shards must be at least 1"),
        ({"num_shards": 2, "auto": True}, "exactly one of"),
        ({"target_shard_bytes": 0}, "--target-shard-bytes must be positive"),
        ({"num_shards": 1, "object_overhead": -1}, "--object-overhead must not be negative"),
    ],
)
def test_nonsense_arguments_are_refused(tmp_path: Path, options: dict, message: str) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized([1, 2, 3]))
    with pytest.raises(XferError, match=message):
        shard_manifest(manifest, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n"])
def test_empty_manifest_is_refused(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "m.jsonl"
    p.write_bytes(content)
    with pytest.raises(XferError, match="no records; nothing to shard"):
        shard_manifest(p, tmp_path / "out", auto=True)
    assert not (tmp_path / "out").exists()


def test_missing_manifest_and_outdir_that_is_a_file(tmp_path: Path) -> None:
    res = xfer(
        "manifest",
        "shard",
        "--in",
        str(tmp_path / "nope"),
        "--outdir",
        str(tmp_path / "o"),
        "-n",
        "1",
    )
    assert res.returncode == 2
    assert "cannot read manifest" in res.stderr
    manifest = write_items(tmp_path / "m.jsonl", sized([1]))
    (tmp_path / "file").write_text("x")
    res = xfer(
        "manifest", "shard", "--in", str(manifest), "--outdir", str(tmp_path / "file"), "-n", "1"
    )
    assert res.returncode == 2
    assert "is not a directory" in res.stderr


def test_blank_lines_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    lines = [GOOD % (i, i) for i in range(1, 6)]
    p.write_bytes(
        b"\n"
        + lines[0]
        + b"   \n"
        + lines[1]
        + lines[2].replace(b"\n", b"\r\n")
        + lines[3]
        + lines[4][:-1]
    )
    meta = shard_manifest(p, tmp_path / "out", num_shards=2)
    assert meta.total_records == 5
    got = b"".join((tmp_path / "out" / s.jsonl).read_bytes() for s in meta.shards)
    assert sorted(got.splitlines(keepends=True)) == sorted(
        [*lines[:2], lines[2].replace(b"\n", b"\r\n"), *lines[3:]]
    )


def test_reshard_removes_stale_shards_and_keeps_other_files(tmp_path: Path) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized(list(range(1, 11))))
    out = tmp_path / "out"
    shard_manifest(manifest, out, num_shards=5)
    (out / "notes.txt").write_text("mine")
    meta = shard_manifest(manifest, out, num_shards=2)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [META_NAME, "notes.txt", *[n for s in meta.shards for n in (s.jsonl, s.files)]]
    )
    assert load_shard_meta(out) == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "out"]  # no temp dirs


@pytest.fixture
def sharded(tmp_path: Path) -> tuple[Path, Path]:
    """(manifest of 10 records, outdir holding a 3-shard set of it)."""
    manifest = write_items(tmp_path / "m.jsonl", sized(list(range(1, 11))))
    shard_manifest(manifest, tmp_path / "out", num_shards=3)
    return manifest, tmp_path / "out"


def test_a_failure_while_writing_leaves_the_previous_shards_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sharded: tuple[Path, Path]
) -> None:
    manifest, out = sharded
    before = tree_bytes(out)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "fsync_path", boom)  # the shard files are flushed first
    with pytest.raises(OSError):
        shard_manifest(manifest, out, num_shards=4)
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "out"]


def test_a_crash_while_installing_never_leaves_a_meta_describing_missing_files(
    monkeypatch: pytest.MonkeyPatch, sharded: tuple[Path, Path]
) -> None:
    manifest, out = sharded
    real_replace = os.replace
    calls = {"n": 0}

    def flaky(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(shard_mod.os, "replace", flaky)
    with pytest.raises(KeyboardInterrupt):
        shard_manifest(manifest, out, num_shards=5)
    monkeypatch.setattr(shard_mod.os, "replace", real_replace)
    assert not (out / META_NAME).exists()
    with pytest.raises(XferError, match="cannot read shard metadata"):
        load_shard_meta(out)
    meta = shard_manifest(manifest, out, num_shards=5)  # a re-run repairs it
    assert load_shard_meta(out) == meta


def test_load_shard_meta_notices_a_missing_shard_file(tmp_path: Path) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized([5, 6, 7]))
    meta = shard_manifest(manifest, tmp_path / "out", num_shards=2)
    (tmp_path / "out" / meta.shards[1].files).unlink()
    with pytest.raises(XferError, match=r"lists shard_000001\.files, which is missing"):
        load_shard_meta(tmp_path / "out")
    assert load_shard_meta(tmp_path / "out", check_files=False) == meta


def test_cli_summary_json_and_human(tmp_path: Path) -> None:
    # in path order 100 + 400 | 300 + 200: contiguous halves balance exactly
    manifest = write_items(tmp_path / "m.jsonl", sized([100, 400, 300, 200]))
    res = xfer("--json", *shard_args(manifest, tmp_path / "o", "-n", "2", "--object-overhead", "0"))
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["num_shards"] == 2 and summary["records"] == 4 and summary["bytes"] == 1000
    assert summary["imbalance"] == 1.0 and summary["lower_bound"] == 500
    res = xfer(
        *shard_args(
            manifest, tmp_path / "o", "--target-shard-bytes", "1KiB", "--object-overhead", "0"
        )
    )
    assert res.returncode == 0, res.stderr
    assert f"wrote 1 shards to {tmp_path / 'o'}: 4 records" in res.stderr
    assert load_shard_meta(tmp_path / "o").sizing == "target-shard-bytes"


def test_target_shard_bytes_and_auto(tmp_path: Path) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized([1 << 30] * 10 + [10] * 90))
    meta = shard_manifest(manifest, tmp_path / "a", target_shard_bytes=3 << 30, object_overhead=0)
    assert meta.num_shards == 4  # ceil(10 GiB + 900 B over 3 GiB)
    auto = shard_manifest(manifest, tmp_path / "b", auto=True)
    analysis = analyze_manifest(manifest)
    assert auto.num_shards == analysis.suggested_shards
    assert auto.object_overhead == analysis.object_overhead
    assert auto.sizing == "auto"


def test_help_has_examples() -> None:
    for cmd in ("shard", "analyze"):
        res = xfer("manifest", cmd, "--help")
        assert res.returncode == 0
        assert f"xfer manifest {cmd} --in run/manifest.jsonl" in res.stdout


def test_records_helper_roundtrip_is_what_the_shard_copies(tmp_path: Path) -> None:
    # a manifest written by xfer's own writer shards without any change to its lines
    items = sized([3, 1, 2])
    manifest = write_items(tmp_path / "m.jsonl", items)
    meta = shard_manifest(manifest, tmp_path / "o", num_shards=1)
    assert (tmp_path / "o" / meta.shards[0].jsonl).read_bytes() == manifest.read_bytes()
    assert len(records(items)) == meta.total_records


def test_progress_lines_name_each_phase(tmp_path: Path) -> None:
    manifest = write_items(tmp_path / "m.jsonl", sized([1, 2, 3]))
    lines: list[str] = []
    shard_manifest(manifest, tmp_path / "o", num_shards=2, progress=lines.append)
    assert lines == [
        f"reading {manifest} ...",
        "placing 3 records into 2 shards ...",
        "writing 2 shards ...",
    ]
