"""The job array's environment is clean: sbatch --export of a short list, job-context SLURM_* dropped.

Upstream xfer submits with ``--export=NONE`` because a submitting shell inside an allocation
(``SLURM_MEM_PER_CPU``...) broke its jobs. Here, on the real Slurm fixture: such a variable and
an arbitrary one never reach the job, the job still runs, and sbatch's own ``SBATCH_*`` input
variables and ``--sbatch-extras`` still reach sbatch.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from xfer_backends.slurm import JOB_ENV, export_option, submit_env
from xfer_core.bulk.state import load_run_state
from xfer_core.testing.services import SlurmCluster
from xfer_core.tools import find_rclone

from .runtools import make_tree, read_tree, wait_for, xfer


def test_submit_env_drops_job_context_slurm_variables() -> None:
    env = submit_env({"SLURM_MEM_PER_CPU": "1", "SLURM_CONF": "/c", "SBATCH_QOS": "q", "X": "1"})
    assert "SLURM_MEM_PER_CPU" not in env
    assert env["SLURM_CONF"] == "/c" and env["SBATCH_QOS"] == "q" and env["X"] == "1"
    assert export_option({"PATH": "/bin", "X": "1"}) == "--export=PATH"
    assert export_option({}) == "--export=NONE"
    assert "X" not in JOB_ENV


def test_job_gets_only_what_the_worker_needs(tmp_path: Path, slurm: SlurmCluster) -> None:
    rclone = find_rclone()
    assert rclone is not None
    dump = tmp_path / "job-env"
    wrapper = tmp_path / "rclone-env"
    wrapper.write_text(f"#!/usr/bin/env bash\nenv > '{dump}'\nexec '{rclone}' \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    files = make_tree(src, ["a.txt", "b/c.txt"])
    env = {
        **os.environ,
        **slurm.env,
        "XFER_RCLONE": str(wrapper),
        "SLURM_MEM_PER_CPU": "4242",  # as inside an salloc: must not reach the job
        "XFER_LEAK_CANARY": "leaked",
        "SBATCH_JOB_NAME": "from-sbatch-env",  # sbatch's own input variable: honoured
    }
    proc = xfer(
        "run", "--run-dir", str(run), "--source", str(src), "--dest", str(dst),
        "--num-shards", "1", "--mem", "100M", "--cpus-per-task", "1", "--time-limit", "10:00",
        "--partition", slurm.partition, "--scheduler", "slurm",
        "--sbatch-extras", "--comment=xfer-extras", "--submit",
        env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().splitlines()[-1]
    shown = slurm.run(["scontrol", "show", "job", job_id]).stdout
    assert "Comment=xfer-extras" in shown and "JobName=from-sbatch-env" in shown
    wait_for(lambda: load_run_state(run).complete, timeout=120, what="the job")
    assert read_tree(dst) == files  # the job still runs
    job_env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "XFER_LEAK_CANARY" not in job_env
    assert job_env.get("SLURM_MEM_PER_CPU") != "4242"
    assert job_env["PATH"] == os.environ["PATH"]
    assert job_env.get("SLURM_ARRAY_JOB_ID") == job_id  # Slurm's own variables are there
