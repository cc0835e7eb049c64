"""``manifest verify`` against a real local directory and the real S3 fixture."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.manifest_io.helpers import xfer
from xfer_core.errors import ConfigError, ExitCode, ManifestError
from xfer_core.manifest.build import build_manifest
from xfer_core.manifest.jsonl import write_manifest
from xfer_core.manifest.lister import ListOptions
from xfer_core.manifest.record import ManifestRecord
from xfer_core.manifest.verify import verify_manifest


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(os.fsencode(src), os.fsencode(dst), symlinks=True)


def _damage(dst: Path) -> dict[str, bytes]:
    """Remove one file, change one size, change one content (same size); what was done."""
    names = {"missing": b"plain.txt", "size": b"hash#mark", "hash": b"semi;colon"}
    base = os.fsencode(dst) + b"/"
    os.unlink(base + names["missing"])
    with open(base + names["size"], "ab") as fh:
        fh.write(b"more")
    size = os.path.getsize(base + names["hash"])
    with open(base + names["hash"], "wb") as fh:
        fh.write(b"Z" * size)
    return names


def test_verify_clean_copy_is_ok(tree, tmp_path: Path) -> None:
    src, made = tree
    dst = tmp_path / "dst"
    _copy_tree(src, dst)
    m = tmp_path / "m.jsonl"
    build_manifest(str(src), str(dst), m, options=ListOptions(hashes=("md5",)))
    result = verify_manifest(m, out_bad=tmp_path / "bad.jsonl")
    assert result.ok
    assert (result.records, result.verified, result.missing) == (len(made), len(made), 0)
    assert (tmp_path / "bad.jsonl").read_bytes() == b""


def test_verify_local_detects_missing_size_and_hash(tree, tmp_path: Path) -> None:
    src, made = tree
    dst = tmp_path / "dst"
    _copy_tree(src, dst)
    m = tmp_path / "m.jsonl"
    build_manifest(str(src), str(dst), m, options=ListOptions(hashes=("md5",)))
    names = _damage(dst)
    (dst / "not-in-manifest").write_bytes(b"")
    bad_out = tmp_path / "bad.jsonl"
    result = verify_manifest(m, out_bad=bad_out)
    assert not result.ok
    assert (result.missing, result.size_mismatch, result.hash_mismatch) == (1, 1, 1)
    assert result.verified == len(made) - 3 and result.extra == 1
    bad = {b["problem"]: b for b in map(json.loads, bad_out.read_text().splitlines())}
    assert bad["missing"]["path"] == names["missing"].decode()
    assert bad["missing"]["dest"] == f"{dst}/plain.txt"
    assert bad["size"]["expected_size"] + 4 == bad["size"]["actual_size"]
    assert bad["hash"]["hash_type"] == "md5"
    assert bad["hash"]["expected_hash"] != bad["hash"]["actual_hash"]

    size_only = verify_manifest(m, check_hashes=False)
    assert (size_only.missing, size_only.size_mismatch, size_only.hash_mismatch) == (1, 1, 0)


def test_verify_missing_invalid_utf8_name_keeps_its_bytes(tree, tmp_path: Path) -> None:
    src, _ = tree
    dst = tmp_path / "dst"
    _copy_tree(src, dst)
    m = tmp_path / "m.jsonl"
    build_manifest(str(src), str(dst), m)
    os.unlink(os.fsencode(dst) + b"/invalid-utf8-\xff\xfe")
    result = verify_manifest(m, out_bad=tmp_path / "bad.jsonl")
    (bad,) = map(json.loads, (tmp_path / "bad.jsonl").read_text().splitlines())
    assert result.missing == 1 and bad["meta"]["path_b64"]


def test_verify_missing_destination_means_everything_missing(tree, tmp_path: Path) -> None:
    src, made = tree
    m = tmp_path / "m.jsonl"
    build_manifest(str(src), str(tmp_path / "never-made"), m)
    result = verify_manifest(m)
    assert result.missing == len(made) and not result.ok


def test_verify_dest_override_and_mixed_roots(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    write_manifest(
        m,
        [
            ManifestRecord(path="a", size=1, dest_root="/x"),
            ManifestRecord(path="b", size=1, dest_root="/y"),
        ],
    )
    with pytest.raises(ConfigError, match="2 different dest roots"):
        verify_manifest(m)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"1")
    result = verify_manifest(m, dest=str(tmp_path / "d"))
    assert (result.verified, result.missing) == (1, 1)


def test_verify_bad_manifest_line_is_usage_error_with_no_output(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"path": "a", "size": 1, "dest_root": "/d"}\n{"path": "/abs", "size": 1}\n')
    out = tmp_path / "bad.jsonl"
    with pytest.raises(ManifestError, match=r"m.jsonl:2: absolute path"):
        verify_manifest(m, out_bad=out)
    assert not out.exists()
    proc = xfer("manifest", "verify", "--in", str(m), "--out-bad", str(out))
    assert proc.returncode == ExitCode.USAGE
    assert f"{m}:2: absolute path" in proc.stderr and not out.exists()


def test_verify_cli_exit_codes(tree, tmp_path: Path) -> None:
    src, _ = tree
    dst = tmp_path / "dst"
    _copy_tree(src, dst)
    m = tmp_path / "m.jsonl"
    build_manifest(str(src), str(dst), m)
    ok = xfer("--json", "manifest", "verify", "--in", str(m))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1])["ok"] is True
    _damage(dst)
    bad = xfer("manifest", "verify", "--in", str(m), "--size-only")
    assert bad.returncode == ExitCode.FAILED
    assert "verify FAILED" in bad.stderr and "1 missing, 1 size mismatch" in bad.stderr


@pytest.mark.s3
def test_verify_against_s3_detects_missing_size_and_hash(s3, tree, tmp_path: Path) -> None:
    src, made = tree
    # S3 keys are text: leave out the names that are not valid UTF-8, and those with
    # control characters (the fixture server's local backend stores them encoded)
    bucket = Path(s3.root) / "dst" / "verify"
    for name in made:
        if b"\xff" in name or b"\xe9latin1" in name or any(c < 0x20 for c in name):
            continue
        target = os.fsencode(bucket) + b"/" + name
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.fsencode(src) + b"/" + name, target)
    staged = tmp_path / "staged"
    _copy_tree(bucket, staged)
    m = tmp_path / "m.jsonl"
    build_manifest(str(staged), s3.remote("dst", "verify"), m, options=ListOptions(hashes=("md5",)))
    opts = ListOptions(rclone_config=str(s3.rclone_config))
    clean = verify_manifest(m, options=opts)
    assert clean.ok and clean.verified == clean.records > 10
    assert clean.lister == "rclone" and clean.hash_unverified == 0
    _damage(bucket)
    result = verify_manifest(m, options=opts, out_bad=tmp_path / "bad.jsonl")
    assert (result.missing, result.size_mismatch, result.hash_mismatch) == (1, 1, 1)
    problems = sorted(
        json.loads(line)["problem"] for line in (tmp_path / "bad.jsonl").read_text().splitlines()
    )
    assert problems == ["hash", "missing", "size"]
    proc = xfer(
        "manifest",
        "verify",
        "--in",
        str(m),
        "--rclone-config",
        str(s3.rclone_config),
        "--parallel",
        "2",
    )
    assert proc.returncode == ExitCode.FAILED, proc.stderr
    assert "1 missing, 1 size mismatch, 1 hash mismatch" in proc.stderr
    shutil.rmtree(bucket)
