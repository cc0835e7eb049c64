"""``xfer retry`` on real local runs: a shard that always fails, then is fixed."""

from __future__ import annotations

import json
from pathlib import Path

from xfer_core.bulk.state import load_run_state, read_jobs
from xfer_core.bulk.status import plan_retry
from xfer_core.testing.cli import write_files

from .rundirs import make_run, xfer


def _tree(root: Path) -> dict[str, bytes]:
    return write_files(
        root, {f"d{i % 2}/file {i}.bin": bytes([i]) * (500 * (i + 1)) for i in range(9)}
    )


def test_retry_skips_permanent_failures_unless_asked(tmp_path: Path) -> None:
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    files = _tree(src)
    common = ["--run-dir", str(run), "--scheduler", "local"]
    proc = xfer(
        "run",
        *common,
        "--source",
        str(src),
        "--dest",
        str(dst),
        "--num-shards",
        "3",
        "--max-attempts",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    # one object vanishes after listing: its shard fails every attempt
    gone = src / "d1/file 3.bin"
    gone.unlink()
    proc = xfer("run", *common, "--submit")
    assert proc.returncode == 1
    proc = xfer("--json", "status", "--run-dir", str(run))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    [failed] = doc["failed"]
    assert failed["attempts"] == 2 and "missing at source" in failed["last_error"]
    assert doc["totals"]["done"] == 2
    # what the CLI renders below is decided by plan_retry (bulk/status.py)
    plan = plan_retry(run)
    assert (plan.scheduler, plan.shards, plan.exit_code) == ("local", [], 1)
    plan = plan_retry(run, include_failed=True)
    assert (plan.scheduler, plan.shards, plan.exit_code) == ("local", [failed["shard"]], 0)

    proc = xfer("retry", "--run-dir", str(run))
    assert proc.returncode == 1
    assert "add --include-failed" in proc.stderr
    assert len(read_jobs(run)) == 1  # nothing was submitted

    gone.write_bytes(files["d1/file 3.bin"])
    proc = xfer("retry", "--run-dir", str(run), "--include-failed")
    assert proc.returncode == 0, proc.stderr
    jobs = read_jobs(run)
    assert len(jobs) == 2 and jobs[-1].shards == [failed["shard"]]
    state = load_run_state(run)
    assert state.complete
    assert {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*") if p.is_file()} == files
    proc = xfer("retry", "--run-dir", str(run))
    assert proc.returncode == 0 and "nothing to retry" in proc.stderr


def test_retry_before_any_submission_is_a_usage_error(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path)
    (run / "config.resolved.json").unlink()
    proc = xfer("retry", "--run-dir", str(run))
    assert proc.returncode == 2
    assert proc.stderr.startswith("xfer: error: ") and "Traceback" not in proc.stderr
