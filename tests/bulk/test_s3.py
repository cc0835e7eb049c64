"""Local scheduler against the real S3 server fixture: local→S3 and S3→S3."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from xfer_core.bulk.state import load_run_state
from xfer_core.testing.services import S3Server

from .runtools import make_tree, read_tree, xfer

#: Few parallel requests: the fixture server lists a directory on every request.
FLAGS = "--transfers 4 --checkers 4 --retries 1 --low-level-retries 2"


def test_local_to_s3_hostile_names(
    tmp_path: Path, s3: S3Server, hostile_src: tuple[Path, dict[str, bytes]]
) -> None:
    src, files = hostile_src
    prefix = f"l2s-{uuid.uuid4().hex[:8]}"
    run = tmp_path / "run"
    proc = xfer(
        "--json",
        "run",
        "--run-dir",
        str(run),
        "--source",
        str(src),
        "--dest",
        s3.remote("dst", prefix),
        "--num-shards",
        "3",
        "--array-concurrency",
        "3",
        "--rclone-config",
        str(s3.rclone_config),
        "--rclone-flags",
        FLAGS,
        "--scheduler",
        "local",
        "--submit",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["done"] == 3 and summary["objects"] == len(files)
    # the server stores each object as a file under root/bucket
    assert read_tree(s3.root / "dst" / prefix) == files
    assert load_run_state(run).complete
    assert not list(tmp_path.rglob("CANARY"))


def test_s3_to_s3_and_a_missing_object_fails_its_shard(tmp_path: Path, s3: S3Server) -> None:
    prefix = f"s2s-{uuid.uuid4().hex[:8]}"
    files = make_tree(s3.root / "src" / prefix, [f"d{i % 3}/o {i}.bin" for i in range(10)])
    run = tmp_path / "run"
    args = [
        "run",
        "--run-dir",
        str(run),
        "--source",
        s3.remote("src", prefix),
        "--dest",
        s3.remote("dst", prefix),
        "--num-shards",
        "2",
        "--rclone-config",
        str(s3.rclone_config),
        "--max-attempts",
        "1",
        "--rclone-flags",
        FLAGS,
        "--scheduler",
        "local",
        "--submit",
    ]
    # an object listed in the manifest disappears before the copy
    proc = xfer(*args[:-1], timeout=300)
    assert proc.returncode == 0, proc.stderr
    (s3.root / "src" / prefix / "d1/o 4.bin").unlink()
    proc = xfer(*args, timeout=300)
    assert proc.returncode == 1
    assert "missing at source" in proc.stderr
    state = load_run_state(run)
    assert state.totals.done == 1 and state.totals.failed == 1
    # restored, the re-run completes the failed shard only
    (s3.root / "src" / prefix / "d1/o 4.bin").write_bytes(files["d1/o 4.bin"])
    proc = xfer(*args, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert read_tree(s3.root / "dst" / prefix) == files
