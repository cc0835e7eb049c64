"""``manifest build`` with the posix lister, against real trees (hostile names, symlinks, errors)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.manifest_io.helpers import make_tree, xfer, xfer_subprocess
from xfer_backends.posix_lister import PosixLister, filesystem_type
from xfer_core.errors import ConfigError, ExitCode, XferError
from xfer_core.manifest.build import build_manifest
from xfer_core.manifest.jsonl import read_manifest
from xfer_core.manifest.lister import ListOptions, ListProblem
from xfer_core.manifest.record import SCHEMA, path_bytes


@pytest.mark.parametrize("parallel", [1, 4])
def test_hostile_names_survive_build_unchanged(tree, tmp_path: Path, parallel: int) -> None:
    src, made = tree
    out = tmp_path / "m.jsonl"
    result = build_manifest(
        str(src), "s3dst:bucket/set", out, options=ListOptions(parallel=parallel), run_id="r1"
    )
    records = list(read_manifest(out))
    assert result.objects == len(made) == len(records)
    assert result.bytes == sum(made.values())
    assert result.lister == "posix"
    got = {path_bytes(r): r for r in records}
    assert set(got) == set(made)
    for name, rec in got.items():
        assert rec.size == made[name]
        assert rec.schema == SCHEMA and rec.run_id == "r1"
        assert rec.source_root == str(src) and rec.dest_root == "s3dst:bucket/set"
        assert rec.source == f"{src}/{rec.path}"
        assert rec.dest == f"s3dst:bucket/set/{rec.path}"
        assert isinstance(rec.mtime, float)
        full = os.fsencode(src) + b"/" + name
        assert rec.mtime == os.lstat(full).st_mtime


def test_invalid_utf8_name_is_carried_as_bytes(tree, tmp_path: Path) -> None:
    src, _ = tree
    out = tmp_path / "m.jsonl"
    build_manifest(str(src), "/dst", out)
    bad = [r for r in read_manifest(out) if b"\xff" in path_bytes(r)]
    assert len(bad) == 1
    assert bad[0].path == "invalid-utf8-\\xff\\xfe"
    assert bad[0].meta["path_b64"]


def test_empty_tree_gives_empty_manifest(tmp_path: Path) -> None:
    (tmp_path / "src" / "empty-dir").mkdir(parents=True)
    result = build_manifest(str(tmp_path / "src"), "/d", tmp_path / "m.jsonl")
    assert result.objects == 0
    assert (tmp_path / "m.jsonl").read_bytes() == b""


def test_symlinks_and_fifos_are_reported_not_silently_dropped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"12345")
    (src / "link-to-file").symlink_to("d/f")
    (src / "link-to-dir").symlink_to("d")
    (src / "broken").symlink_to("nowhere")
    os.mkfifo(src / "fifo")
    problems: list[ListProblem] = []
    result = build_manifest(str(src), "/d", tmp_path / "m.jsonl", on_problem=problems.append)
    assert [r.path for r in read_manifest(tmp_path / "m.jsonl")] == ["d/f"]
    assert result.skipped == 4 and result.errors == 0
    text = "\n".join(p.message for p in problems)
    for name in ("link-to-file", "link-to-dir", "broken", "fifo"):
        assert name in text
    assert not any(p.error for p in problems)

    problems.clear()
    result = build_manifest(
        str(src),
        "/d",
        tmp_path / "m2.jsonl",
        options=ListOptions(symlinks="follow"),
        on_problem=problems.append,
    )
    paths = sorted(r.path for r in read_manifest(tmp_path / "m2.jsonl"))
    assert paths == ["d/f", "link-to-dir/f", "link-to-file"]
    sizes = {r.path: r.size for r in read_manifest(tmp_path / "m2.jsonl")}
    assert sizes["link-to-file"] == 5
    assert {p.message.split(": ")[1].split(" ")[0] for p in problems} == {"broken", "FIFO"}


def test_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_bytes(b"1")
    (src / "a" / "up").symlink_to("..")
    problems: list[ListProblem] = []
    build_manifest(
        str(src),
        "/d",
        tmp_path / "m.jsonl",
        options=ListOptions(symlinks="follow"),
        on_problem=problems.append,
    )
    assert [r.path for r in read_manifest(tmp_path / "m.jsonl")] == ["a/f"]
    assert any("already walked" in p.message for p in problems)


def test_hash_option_reads_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"hello")
    build_manifest(
        str(src), "/d", tmp_path / "m.jsonl", options=ListOptions(hashes=("md5", "sha1"))
    )
    (rec,) = read_manifest(tmp_path / "m.jsonl")
    assert rec.hashes == {
        "md5": "5d41402abc4b2a76b9719d911017c592",
        "sha1": "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
    }


def test_missing_source_is_a_usage_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    with pytest.raises(ConfigError, match="no such directory"):
        build_manifest(str(tmp_path / "nope"), "/d", out)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a directory"):
        build_manifest(str(tmp_path / "file"), "/d", out)
    with pytest.raises(ConfigError):
        build_manifest(str(tmp_path / "nope"), "/d", out, lister="posix")
    assert not out.exists()
    assert list(tmp_path.glob(".m.jsonl*")) == []


def test_early_close_stops_worker_threads(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in range(20):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(50):
            (src / f"d{d}" / f"f{f}").write_bytes(b"")
    import threading

    before = threading.active_count()
    it = PosixLister().list(str(src), ListOptions(parallel=4))
    next(it)
    it.close()  # type: ignore[attr-defined]
    assert threading.active_count() == before


@pytest.mark.parametrize("helper", [False, True])
@pytest.mark.parametrize("parallel", [1, 3])
def test_inline_threaded_and_helper_walks_agree(tree, helper: bool, parallel: int) -> None:
    src, made = tree
    problems: list[ListProblem] = []
    progress: list[tuple[int, int]] = []
    os.symlink("plain.txt", os.path.join(src, "a-link"))
    options = ListOptions(
        parallel=parallel, on_problem=problems.append, on_progress=lambda *a: progress.append(a)
    )
    entries = list(PosixLister(helper_process=helper).list(str(src), options))
    got = {}
    for e in entries:
        raw = e.meta.get("path_b64")
        got[base64.b64decode(raw) if raw else e.path.encode()] = e.size
    assert got == made
    assert [p.message.rsplit("/", 1)[1] for p in problems] == [
        "a-link: symlink skipped (use --follow-symlinks)"
    ]
    assert progress[-1] == (len(made), sum(made.values()))


def test_helper_walk_stops_when_the_reader_does(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in range(30):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (src / f"d{d}" / f"f{f}").write_bytes(b"")
    import gc

    children_file = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    # session fixtures (sshd, slurmctld, the S3 server) are children of this process too
    before = set(children_file.read_text().split())
    it = PosixLister(helper_process=True).list(str(src), ListOptions())
    next(it)
    it.close()  # type: ignore[attr-defined]
    gc.collect()
    # the helper was killed and reaped: no child of ours is left
    assert set(children_file.read_text().split()) - before == set()


def test_helper_walk_reports_a_vanished_root(tmp_path: Path) -> None:
    from xfer_backends.posix_lister import _helper_items, _Walk

    walk = _Walk(os.fsencode(tmp_path / "gone"), ListOptions(), 1)
    with pytest.raises(XferError, match="No such file") as info:
        list(_helper_items(walk))
    assert info.value.exit_code == ExitCode.USAGE


def test_filesystem_type_of_root_is_known() -> None:
    assert filesystem_type("/") != ""


SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv to drop DAC override"
)
def test_unreadable_directory_fails_build_with_no_output(tmp_path: Path) -> None:
    # root reads everything: the walk runs without CAP_DAC_OVERRIDE/READ_SEARCH instead
    src = tmp_path / "src"
    make_tree(src, [b"ok/a", b"secret/b", b"c"])
    os.chmod(src / "secret", 0o000)
    out = tmp_path / "m.jsonl"
    cmd = ["manifest", "build", "--source", str(src), "--dest", "/d", "--out", str(out)]
    try:
        denied = _run_without_dac(cmd)
        assert denied.returncode == ExitCode.FAILED, denied.stderr
        assert "secret: cannot read directory (Permission denied)" in denied.stderr
        assert "no manifest written" in denied.stderr
        assert not out.exists()
        allowed = _run_without_dac([*cmd, "--allow-errors"])
        assert allowed.returncode == ExitCode.FAILED
        paths = sorted(json.loads(line)["path"] for line in out.read_text().splitlines())
        assert paths == ["c", "ok/a"]
    finally:
        os.chmod(src / "secret", 0o755)


def _run_without_dac(args: list[str]) -> subprocess.CompletedProcess[str]:
    assert SETPRIV is not None
    drop = ["--bounding-set", "-dac_override,-dac_read_search", "--"]
    return subprocess.run(
        [SETPRIV, *drop, sys.executable, "-m", "xfer_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_build_cli_summary_json_and_progress(tree, tmp_path: Path) -> None:
    src, made = tree
    out = tmp_path / "m.jsonl"
    proc = xfer_subprocess(
        "--json", "manifest", "build", "--source", str(src), "--dest", "/d", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["objects"] == len(made)
    assert summary["lister"] == "posix"
    assert len(list(read_manifest(out))) == len(made)


def test_build_cli_plain_summary_and_usage_errors(tree, tmp_path: Path) -> None:
    src, made = tree
    out = tmp_path / "m.jsonl"
    proc = xfer("manifest", "build", "-s", str(src), "-d", "/d", "-o", str(out))
    assert proc.returncode == 0
    assert f"wrote {len(made)} objects" in proc.stderr
    missing = xfer("manifest", "build", "-s", str(tmp_path / "nope"), "-d", "/d", "-o", str(out))
    assert missing.returncode == ExitCode.USAGE
    assert missing.stderr.startswith("xfer: error: source ")
    assert "Traceback" not in missing.stderr
    bad_hash = xfer(
        "manifest", "build", "-s", str(src), "-d", "/d", "-o", str(out), "--hash", "m d5"
    )
    assert bad_hash.returncode == ExitCode.USAGE
    unknown = xfer(
        "manifest", "build", "-s", str(src), "-d", "/d", "-o", str(out), "--lister", "zz"
    )
    assert unknown.returncode == ExitCode.USAGE and "unknown lister 'zz'" in unknown.stderr


def test_interrupted_build_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big-sparse", "wb") as fh:
        fh.truncate(64 << 30)  # hashing 64 GiB of holes takes far longer than we wait
    out = tmp_path / "out" / "m.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xfer_core.cli",
            "--json",
            "manifest",
            "build",
            "-s",
            str(src),
            "-d",
            "/d",
            "-o",
            str(out),
            "--hash",
            "md5,sha1,sha256",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # the helper process is hashing once its command line shows up under our pid
    deadline = 400
    while deadline and not _helpers(proc.pid):
        deadline -= 1
        subprocess.run(["sleep", "0.05"], check=True)
    helpers = _helpers(proc.pid)
    assert helpers, "the walker helper process never started"
    proc.send_signal(2)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "xfer: interrupted" in err
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temp file either
    # the helper gets SIGKILL when xfer exits (PR_SET_PDEATHSIG); on a loaded machine it
    # may take a moment to be scheduled and die
    for pid in helpers:
        for _ in range(200):
            if not Path(f"/proc/{pid}").exists() or "Z" in _state(pid):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)


def _helpers(pid: int) -> list[int]:
    """Children of ``pid`` that run the posix walker."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    found = []
    for child in text.split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"xfer_backends.posix_lister" in cmdline:
            found.append(int(child))
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_manifest_written_inside_the_source_is_not_listed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "run").mkdir(parents=True)
    (src / "data").write_bytes(b"12")
    out = src / "run" / "manifest.jsonl"
    out.write_bytes(b"old manifest\n")
    problems: list[ListProblem] = []
    result = build_manifest(str(src), "/d", out, on_problem=problems.append)
    assert [r.path for r in read_manifest(out)] == ["data"]
    assert result.objects == 1 and result.errors == 0
    skipped = {p.message.split(":")[0] for p in problems}
    assert "run/manifest.jsonl" in skipped
    assert all(
        n == "run/manifest.jsonl" or (n.startswith("run/.manifest.jsonl.") and n.endswith(".tmp"))
        for n in skipped
    )
    assert all("own output" in p.message and not p.error for p in problems)
