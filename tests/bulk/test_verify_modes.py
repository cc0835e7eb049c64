"""How the rclone engine verifies: from the copy's report, or by an rclone check when the
report cannot vouch for the copy (never a false "done")."""

from __future__ import annotations

from pathlib import Path

import pytest

from xfer_backends.rclone import shard_flags, verify_mode
from xfer_core.bulk.engine import EngineContext, ShardEngine
from xfer_core.bulk.state import load_run_state
from xfer_core.registry import get_registry

from .runtools import make_tree, read_tree, xfer


def _ctx(verify: str, *flags: str) -> EngineContext:
    return EngineContext(source_root="/s", dest_root="/d", flags=flags, verify=verify)


@pytest.mark.parametrize(
    ("verify", "flags", "mode"),
    [
        ("hash", (), "report"),
        ("size", ("--size-only",), "report"),
        ("hash", ("--size-only",), "check"),
        ("hash", ("--dry-run",), "check"),
        ("size", ("-n",), "check"),
        ("hash", ("--max-transfer=1G",), "check"),
        ("hash", ("--ignore-checksum",), "check"),
        ("hash", ("--s3-no-head",), "check"),
        ("hash", ("--transfers", "4", "--checksum"), "report"),
        ("check", (), "check"),
    ],
)
def test_verify_mode_follows_the_flags(verify: str, flags: tuple[str, ...], mode: str) -> None:
    assert verify_mode(_ctx(verify, *flags)) == mode
    # core asks the registered engine (the request plan's verification), never the module
    assert get_registry().get("shard_engine", "rclone").verify_mode(_ctx(verify, *flags)) == mode


def test_an_engine_verifies_as_asked_by_default() -> None:
    engine = ShardEngine()
    assert [engine.verify_mode(_ctx(v, "--dry-run")) for v in ("hash", "size", "check")] == [
        "hash",
        "size",
        "check",
    ]


def test_shard_flags_skip_the_destination_only_on_the_first_attempt() -> None:
    assert shard_flags("list", True) == ("--no-traverse=false", "--no-traverse=false")
    assert shard_flags("objects", True) == ("--no-traverse", "--no-traverse")
    assert shard_flags("list", False) == (
        "--no-traverse=false --no-check-dest --s3-no-check-bucket",
        "--no-traverse=false",
    )
    # a server-side copy that looks nothing up: the copy HEADs each source object anyway
    assert shard_flags("objects", False) == (
        "--no-traverse --no-check-dest --s3-no-check-bucket",
        "--no-traverse",
    )


def _run(tmp_path: Path, tag: str, *extra: str) -> tuple[int, Path, Path]:
    src = tmp_path / "src"
    if not src.exists():
        make_tree(src, [f"d{i % 2}/f{i}.txt" for i in range(6)])
    run, dst = tmp_path / f"run-{tag}", tmp_path / f"dst-{tag}"
    proc = xfer(
        *["run", "--run-dir", str(run), "--source", str(src), "--dest", str(dst)],
        *["--num-shards", "2", "--scheduler", "local", "--max-attempts", "1", "--submit"],
        *extra,
    )
    return proc.returncode, run, dst


def _logs(run: Path) -> str:
    return "".join(p.read_text() for p in sorted((run / "logs").glob("shard_*.log")))


def test_default_verifies_from_the_copy_report_and_check_lists_again(tmp_path: Path) -> None:
    rc, run, dst = _run(tmp_path, "report")
    assert rc == 0
    assert "rclone copy report: 3 of 3 sent or equal" in _logs(run)
    assert "rclone check" not in _logs(run)
    assert read_tree(dst) == read_tree(tmp_path / "src")
    rc, run, dst = _run(tmp_path, "check", "--verify", "check")
    assert rc == 0
    assert "xfer verify: rclone check exit 0: 3 of 3 equal" in _logs(run)


def test_a_dry_run_copy_is_never_done(tmp_path: Path) -> None:
    # rclone copy --dry-run exits 0 and reports every name as sent: the report alone would
    # call it done; the engine verifies by listing instead, and finds nothing there
    rc, run, dst = _run(tmp_path, "dry", "--rclone-flags", "--dry-run")
    assert rc == 1
    state = load_run_state(run)
    assert state.totals.done == 0 and state.totals.failed == 2
    assert not list(run.glob("state/*.done"))
    assert not dst.exists() or read_tree(dst) == {}
    fails = [p.read_text() for p in run.glob("state/shard_*.fail")]
    assert all("3 missing at destination" in f for f in fails), fails
