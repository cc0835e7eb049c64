"""``manifest build`` with the rclone lister against the real S3 fixture (``rclone serve s3``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.manifest_io.helpers import xfer
from xfer_backends.rclone_lister import RcloneLister, classify_rclone_error
from xfer_core.bulk.render import check_rclone_config
from xfer_core.errors import ConfigError, ExitCode, XferError
from xfer_core.manifest.build import build_manifest
from xfer_core.manifest.jsonl import read_manifest
from xfer_core.manifest.lister import ListOptions

pytestmark = pytest.mark.s3

#: Names S3 and the server's local backend keep as they are.
S3_NAMES = [
    "top1/a",
    "top1/sub/b c",
    "top1/-dash",
    "q'\"#;x",
    "uni-é-日本",
    "back\\slash",
    " lead",
    "--opt",
    "top2x",
    "top2/f",
    "top3/deep/er/g",
]


@pytest.fixture(scope="module")
def seeded(s3):  # type: ignore[no-untyped-def]
    """The ``src`` bucket holding S3_NAMES (distinct sizes); {name: size}."""
    bucket = Path(s3.root) / "src"
    made = {}
    for i, name in enumerate(S3_NAMES):
        p = bucket / "set" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"d" * (i + 1))
        made[name] = i + 1
    yield s3, made
    shutil.rmtree(bucket / "set")


def _opts(s3, **kw) -> ListOptions:  # type: ignore[no-untyped-def]
    return ListOptions(rclone_config=str(s3.rclone_config), **kw)


@pytest.mark.parametrize("parallel", [0, 3])
def test_build_from_s3_streams_every_object(seeded, tmp_path: Path, parallel: int) -> None:
    s3, made = seeded
    out = tmp_path / "m.jsonl"
    source = s3.remote("src", "set")
    result = build_manifest(
        source, "s3:dst/set", out, options=_opts(s3, parallel=parallel), run_id="r"
    )
    assert result.lister == "rclone"
    records = list(read_manifest(out))
    assert {r.path: r.size for r in records} == made
    assert result.objects == len(made) and result.bytes == sum(made.values())
    for r in records:
        assert r.source == f"{source}/{r.path}"
        assert r.dest == f"s3:dst/set/{r.path}"
        assert isinstance(r.mtime, str) and r.mtime.endswith("Z")
        assert len(r.hashes["md5"]) == 32


def test_parallel_and_single_listing_agree_line_for_line(seeded, tmp_path: Path) -> None:
    s3, _ = seeded
    source = s3.remote("src", "set")
    build_manifest(source, "/d", tmp_path / "one.jsonl", options=_opts(s3), run_id="r")
    build_manifest(source, "/d", tmp_path / "par.jsonl", options=_opts(s3, parallel=4), run_id="r")
    one = sorted((tmp_path / "one.jsonl").read_bytes().splitlines())
    par = sorted((tmp_path / "par.jsonl").read_bytes().splitlines())
    assert one == par


def test_no_hash_and_extra_flags(seeded, tmp_path: Path) -> None:
    s3, _ = seeded
    out = tmp_path / "m.jsonl"
    opts = _opts(s3, hashes=(), extra_flags=("--include", "top1/**"))
    build_manifest(s3.remote("src", "set"), "/d", out, options=opts)
    records = list(read_manifest(out))
    assert sorted(r.path for r in records) == ["top1/-dash", "top1/a", "top1/sub/b c"]
    assert all(r.hashes == {} for r in records)


def test_cli_build_from_s3(seeded, tmp_path: Path) -> None:
    s3, made = seeded
    out = tmp_path / "m.jsonl"
    proc = xfer(
        "--json",
        "manifest",
        "build",
        "--source",
        s3.remote("src", "set"),
        "--dest",
        "s3:dst/set",
        "--out",
        str(out),
        "--rclone-config",
        str(s3.rclone_config),
        "--extra-lsjson-flags",
        "--fast-list",
        "--parallel",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["objects"] == len(made) and summary["lister"] == "rclone"
    assert s3.secret_key not in proc.stdout + proc.stderr


def test_missing_bucket_is_a_usage_error_with_no_output(s3, tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    with pytest.raises(XferError) as info:
        build_manifest(s3.remote("nobucket", "x"), "/d", out, options=_opts(s3))
    assert info.value.exit_code == ExitCode.USAGE
    assert "directory not found" in info.value.message
    assert not out.exists()


def test_unknown_remote_is_a_usage_error(s3, tmp_path: Path) -> None:
    proc = xfer(
        "manifest",
        "build",
        "--source",
        "nosuchremote:bucket",
        "--dest",
        "/d",
        "--out",
        str(tmp_path / "m.jsonl"),
        "--rclone-config",
        str(s3.rclone_config),
    )
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "didn't find section in config file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "m.jsonl").exists()


def test_unreachable_endpoint_is_unavailable(s3, tmp_path: Path) -> None:
    conf = tmp_path / "dead.conf"
    conf.write_text(
        "[dead]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:9\n"
        "access_key_id = a\nsecret_access_key = b\n"
    )
    conf.chmod(0o600)
    proc = xfer(
        "manifest",
        "build",
        "--source",
        "dead:bucket",
        "--dest",
        "/d",
        "--out",
        str(tmp_path / "m.jsonl"),
        "--rclone-config",
        str(conf),
        "--extra-lsjson-flags",
        "--retries 1 --low-level-retries 1 --contimeout 2s",
    )
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stderr
    assert "connection refused" in proc.stderr
    assert "secret_access_key" not in proc.stderr
    assert not (tmp_path / "m.jsonl").exists()


def test_rclone_config_must_be_private(s3, tmp_path: Path) -> None:
    conf = tmp_path / "rclone.conf"
    conf.write_text(Path(s3.rclone_config).read_text())
    conf.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        check_rclone_config(str(conf))
    assert info.value.hint == f"chmod 600 {conf}"
    proc = xfer(
        "manifest",
        "build",
        "--source",
        s3.remote("src"),
        "--dest",
        "/d",
        "--out",
        str(tmp_path / "m.jsonl"),
        "--rclone-config",
        str(conf),
    )
    assert proc.returncode == ExitCode.USAGE
    assert f"chmod 600 {conf}" in proc.stderr
    assert s3.secret_key not in proc.stderr
    with pytest.raises(ConfigError, match="does not exist"):
        check_rclone_config(str(tmp_path / "absent.conf"))


def test_command_line_is_an_argv_with_the_config() -> None:
    lister = RcloneLister()
    conf = os.path.join(os.path.dirname(__file__), "nonexistent")
    with pytest.raises(ConfigError):
        lister.command("s3:b", ListOptions(rclone_config=conf))
    argv = lister.command("s3:b/p", ListOptions(hashes=("md5",), extra_flags=("--fast-list",)))
    assert argv[1:] == [
        "lsjson",
        "-R",
        "--files-only",
        "--no-mimetype",
        "--use-server-modtime",
        "--hash",
        "--hash-type",
        "md5",
        "--fast-list",
        "--",
        "s3:b/p",
    ]


def test_runtime_needing_an_image_is_refused_without_one(tmp_path: Path) -> None:
    from xfer_core.registry import get_registry

    names = get_registry().names("runtime")
    if "podman" not in names:
        pytest.skip("no podman runtime plugin registered yet")
    with pytest.raises(ConfigError, match="needs an image"):
        RcloneLister().command("s3:b", ListOptions(runtime="podman"))
    argv = RcloneLister().command(
        "s3:b", ListOptions(runtime="podman", rclone_image="rclone/rclone:latest")
    )
    assert "rclone/rclone:latest" in argv and argv[-1] == "s3:b"


def test_error_classification() -> None:
    assert classify_rclone_error(3, "x ERROR : error listing: directory not found")[1] == (
        ExitCode.USAGE
    )
    msg, code = classify_rclone_error(
        1,
        "2026/01/01 00:00:00 CRITICAL: Failed to create file system: dial tcp: connection refused",
    )
    assert code == ExitCode.UNAVAILABLE and msg.startswith("Failed to create file system")
    assert classify_rclone_error(2, "something odd")[1] == ExitCode.FAILED


def test_parallel_listing_closed_early_leaves_no_rclone(seeded) -> None:
    s3, _ = seeded
    it = RcloneLister().list(s3.remote("src", "set"), _opts(s3, parallel=3))
    next(it)
    it.close()  # type: ignore[attr-defined]
    assert _lsjson_children() == []


def _lsjson_children() -> list[str]:
    """Our child processes (of any thread) that run rclone lsjson."""
    found = []
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                if b"lsjson" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
    return found


def test_an_escaping_object_name_is_reported_not_listed() -> None:
    from xfer_backends.rclone_lister import LsjsonItem, _entry_or_report
    from xfer_core.manifest.lister import ListProblem

    problems: list[ListProblem] = []
    opts = ListOptions(on_problem=problems.append)
    assert _entry_or_report(LsjsonItem(Path="a/../../etc/x", Size=1), "", "L", opts) is None
    assert problems[0].error and "climbs out of the root" in problems[0].message
    ok = _entry_or_report(LsjsonItem(Path="b", Size=1, Tier="GLACIER"), "p", "L", opts)
    assert ok is not None and ok.path == "p/b" and ok.storage_class == "GLACIER"
