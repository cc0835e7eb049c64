"""Scheduler-declared options (`-O NAME=VALUE`) and job files rendered per scheduler."""

from __future__ import annotations

import json
import os
from pathlib import Path

from xfer_core.testing.services import SlurmCluster

from .runtools import make_tree, wait_for, xfer


def _run_args(tmp_path: Path, run: Path) -> list[str]:
    src = tmp_path / "src"
    if not src.exists():
        make_tree(src, [f"f{i}.txt" for i in range(4)])
    return ["run", "--run-dir", str(run), "--source", str(src), "--dest", str(tmp_path / "dst"),
            "--num-shards", "2"]  # fmt: skip


def test_plugins_json_lists_each_schedulers_options() -> None:
    proc = xfer("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    scheds = {p["name"]: p for p in json.loads(proc.stdout)["plugins"] if p["kind"] == "scheduler"}
    assert scheds["slurm"]["options"] == {"extras": ""}
    assert scheds["local"]["options"] == {}


def test_scheduler_option_reaches_the_job_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = xfer(*_run_args(tmp_path, run), "--scheduler", "slurm", "-O", "extras=--qos=high")
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --qos=high" in (run / "sbatch_array.sh").read_text().splitlines()
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert resolved["scheduler_options"] == {"extras": "--qos=high"}


def test_unknown_or_malformed_scheduler_option_is_one_line_and_writes_nothing(
    tmp_path: Path,
) -> None:
    for option, message in (
        ("bogus=1", "scheduler slurm option: Object contains unknown field `bogus`"),
        ("extras", "--scheduler-option 'extras': write NAME=VALUE"),
        ("extras=--array=1-3", "--sbatch-extras: --array is set by xfer itself"),
    ):
        run = tmp_path / option.replace("=", "_")
        proc = xfer(*_run_args(tmp_path, run), "--scheduler", "slurm", "-O", option)
        assert proc.returncode == 2, proc.stderr
        assert f"xfer: error: {message}" in proc.stderr, proc.stderr
        assert proc.stderr.count("xfer: error:") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        for name in ("worker.sh", "config.resolved.json", "sbatch_array.sh"):
            assert not (run / name).exists(), (option, name)
    proc = xfer(*_run_args(tmp_path, tmp_path / "r"), "--scheduler", "slurm", "-O", "bogus=1")
    assert "hint: options of slurm: extras" in proc.stderr


def test_local_run_has_no_job_file_and_a_batch_submit_writes_its_own(
    tmp_path: Path, slurm: SlurmCluster
) -> None:
    run = tmp_path / "run"
    env = {**os.environ, **slurm.env}
    proc = xfer(*_run_args(tmp_path, run), "--scheduler", "local", "--mem", "100M",
                "--cpus-per-task", "1", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.resolved.json").read_text())["job_files"] == []
    assert not (run / "sbatch_array.sh").exists()
    proc = xfer("slurm", "submit", "--run-dir", str(run), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (run / "sbatch_array.sh").is_file() and (run / "submit.sh").is_file()
    wait_for(lambda: len(list((run / "state").glob("*.done"))) == 2, 120, "both shards done")
    jobs = json.loads((run / "jobs.json").read_text())
    assert [(j["scheduler"], j["job_id"]) for j in jobs] == [("slurm", proc.stdout.strip())]
