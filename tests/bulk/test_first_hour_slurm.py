"""What a newcomer meets on a small Slurm partition (issue 18), on the real fixture whose
node has 2 CPUs and 4000 MB: the defaults `--cpus-per-task 4 --mem 8G` never fit, so
submit warns and `xfer status` says why the array waits; a second submission, a retry
or a `--rebuild` while that array is queued is refused; the choices are printed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from xfer_backends.slurm import fit_warning, mem_mb
from xfer_core.bulk.status import StatusReport
from xfer_core.cli.status_cmd import _render_rich
from xfer_core.testing.services import SlurmCluster

from .runtools import make_tree, xfer

pytestmark = [pytest.mark.slurm]


def test_mem_mb_units() -> None:
    assert mem_mb("8G") == 8192 and mem_mb("100M") == 100 and mem_mb("4000") == 4000
    assert mem_mb("1T") == 1024 * 1024 and mem_mb("512K") == 0.5 and mem_mb("lots") is None


def test_fit_warning_against_the_fixture_node(slurm: SlurmCluster) -> None:
    warning = fit_warning(slurm.partition, 4, "8G", slurm.env)
    assert warning is not None
    assert "--cpus-per-task 4 --mem 8G never fits a node of debug" in warning
    assert f"the largest has {slurm.cpus} CPUs" in warning
    assert fit_warning(None, 4, "1G", slurm.env) is not None  # the default partition
    assert fit_warning(slurm.partition, 1, "100M", slurm.env) is None
    node_mb = int(slurm.run(["sinfo", "-h", "-N", "-o", "%m"]).stdout.split()[0])
    assert fit_warning(slurm.partition, 1, f"{node_mb}M", slurm.env) is None
    assert fit_warning(slurm.partition, 1, f"{node_mb + 1}M", slurm.env) is not None


def test_too_big_for_the_partition_warns_shows_why_and_refuses_a_second_array(
    tmp_path: Path, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, run = tmp_path / "src", tmp_path / "run"
    make_tree(src, ["a.txt", "b/c.txt"])
    env = {**os.environ, **slurm.env}
    args = ("run", "--run-dir", str(run), "--source", str(src), "--dest", str(tmp_path / "dst"))
    proc = xfer(*args, "--num-shards", "2", "--partition", slurm.partition, "--submit", env=env)
    try:
        assert proc.returncode == 0, proc.stderr
        # the choices are printed, with why
        assert "scheduler: slurm (the default: slurmctld answers" in proc.stderr
        assert "render: runtime host (the default without --rclone-image)" in proc.stderr
        # the hidden defaults never fit the 2-CPU node: said at submit
        assert "--cpus-per-task 4 --mem 8G never fits a node of debug" in proc.stderr
        job_id = proc.stdout.strip().splitlines()[-1]
        assert job_id.isdigit(), proc.stdout

        # status names the pending reason, explained, before anything else
        shown = xfer("status", "--run-dir", str(run), env=env)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        pending = [line for line in lines if line.startswith("PENDING (slurm)")]
        assert pending, shown.stdout
        assert "2 task(s) wait for" in pending[0]
        assert lines.index(pending[0]) == 3, shown.stdout  # right after the totals
        doc = json.loads(xfer("--json", "status", "--run-dir", str(run), env=env).stdout)
        reasons = {j["reason"] for j in doc["schedulers"][0]["jobs"]}
        assert reasons and reasons <= {"PartitionConfig", "Resources", "PartitionNodeLimit"}
        # on a terminal: the same line, right under the totals table
        monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
        console = Console(record=True, width=200, force_terminal=True)
        console.print(_render_rich(StatusReport(run)))
        text = console.export_text()
        assert "PENDING (slurm): 2 task(s) wait for" in text, text
        assert text.index("PENDING (slurm)") < text.index("rate:"), text

        # no second array over the same shards, by any door
        before = (run / "jobs.json").read_text()
        for again in (
            ["slurm", "submit", "--run-dir", str(run)],
            ["run", "--run-dir", str(run), "--submit"],
            [*args, "--rebuild"],
            ["retry", "--run-dir", str(run)],
        ):
            refused = xfer(*again, env=env)
            assert refused.returncode == 2, (again, refused.stderr)
            assert f"job {job_id} of this run is still in the queue" in refused.stderr, again
            assert "would run its shards twice" in refused.stderr
        assert (run / "jobs.json").read_text() == before
    finally:
        if "job_id" in locals():
            slurm.run(["scancel", job_id])
