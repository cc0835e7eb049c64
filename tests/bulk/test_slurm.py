"""Smoke test on the real single-node Slurm fixture: render, submit, resubmit only what is left.

(The Slurm fault tests — requeue, time limit, kill, S3 outage, re-sharding — live in tests/e2e/.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xfer_core.bulk.pipeline import pick_scheduler
from xfer_core.bulk.state import load_run_state
from xfer_core.testing.services import SlurmCluster

from .runtools import make_tree, read_tree, wait_for, xfer


def test_render_submit_and_resubmit_on_slurm(tmp_path: Path, slurm: SlurmCluster) -> None:
    src = tmp_path / "src"
    files = make_tree(src, [f"dir {i % 2}/f'{i}'.txt" for i in range(9)])
    run, dst = tmp_path / "run", tmp_path / "dst"
    env = {**os.environ, **slurm.env}
    assert pick_scheduler(None, env=slurm.env)[0] == "slurm"
    # prepare only (no --submit): 3 shards, but at most 2 array tasks → task 0 runs shards 0, 2
    proc = xfer(
        "run",
        "--run-dir",
        str(run),
        "--source",
        str(src),
        "--dest",
        str(dst),
        "--num-shards",
        "3",
        "--max-array-size",
        "2",
        "--array-concurrency",
        "2",
        "--time-limit",
        "10:00",
        "--mem",
        "100M",
        "--cpus-per-task",
        "1",
        "--partition",
        slurm.partition,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--scheduler slurm --submit" in proc.stderr
    assert "#SBATCH --array=0-1%2" in (run / "sbatch_array.sh").read_text()

    proc = xfer("slurm", "submit", "--run-dir", str(run), env=env)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert job_id.isdigit()
    assert f"squeue -j {job_id}" in proc.stderr
    assert f"scontrol update JobId={job_id} ArrayTaskThrottle=N" in proc.stderr
    jobs = json.loads((run / "jobs.json").read_text())
    assert jobs[-1]["job_id"] == job_id and jobs[-1]["scheduler"] == "slurm"
    wait_for(lambda: load_run_state(run).complete, timeout=120, what="slurm job to finish")
    assert read_tree(dst) == files
    assert sorted(p.name for p in (run / "logs").glob("slurm-*.out"))

    # everything done: nothing to submit
    proc = xfer("--json", "slurm", "submit", "--run-dir", str(run), env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["job_id"] is None

    # one shard undone: only its array task is submitted
    (run / "state" / "shard_1.done").unlink()
    proc = xfer("--json", "slurm", "submit", "--run-dir", str(run), env=env)
    assert proc.returncode == 0, proc.stderr
    event = json.loads(proc.stdout)
    assert event["shards"] == [1] and event["tasks"] == [1]
    wait_for(lambda: load_run_state(run).complete, timeout=120, what="resubmitted task")
    assert (run / "logs" / "shard_1_attempt_2.log").is_file()
    assert not (run / "logs" / "shard_0_attempt_2.log").exists()


def test_queue_info_of_a_held_array(tmp_path: Path, slurm: SlurmCluster) -> None:
    """Extra sbatch args reach sbatch; queue_info lists the array's pending tasks."""
    from xfer_backends.slurm import SlurmScheduler
    from xfer_core.bulk.submit import submit_run

    src = tmp_path / "src"
    make_tree(src, [f"f{i}" for i in range(3)])
    run = tmp_path / "run"
    proc = xfer(
        "run",
        "--run-dir",
        str(run),
        "--source",
        str(src),
        "--dest",
        str(tmp_path / "dst"),
        "--num-shards",
        "3",
        "--mem",
        "100M",
        "--cpus-per-task",
        "1",
        "--scheduler",
        "slurm",
        env={**os.environ, **slurm.env},
    )
    assert proc.returncode == 0, proc.stderr
    sub = submit_run(run, "slurm", extra_args=["--hold"], env=slurm.env)
    assert sub is not None and sub.tasks == [0, 1, 2]
    try:
        infos = SlurmScheduler().queue_info([sub.job_id], env=slurm.env)
        assert sorted(i.task for i in infos if i.task is not None) == [0, 1, 2]
        assert {i.job_id for i in infos} == {sub.job_id}
        assert {i.state for i in infos} == {"PENDING"}
    finally:
        slurm.run(["scancel", sub.job_id])
