"""Load on Slurm: a run of 1,000 shards (soak) and of 40 shards (default suite).

`xfer run --scheduler slurm --submit` builds, shards, renders and submits the array
(throttled to the fixture node's 2 cores); `xfer status --watch` then follows it to
the end. Peak RSS and open fds of both xfer processes (and their process trees:
squeue, sbatch) are sampled and recorded for docs/reliability.md. The workers run
under slurmstepd, not under xfer: they are not part of the tree. Afterwards every
file is compared with its source and every shard must be done.

The 40-shard variant maps four shards to each of 10 array tasks (``--max-array-size``),
the path a run larger than the cluster's MaxArraySize takes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from xfer_core.bulk.render import load_resolved
from xfer_core.bulk.state import load_run_state, read_jobs
from xfer_core.testing.services import SlurmCluster

from .conftest import Tally
from .helpers import PeakMonitor, popen_xfer
from .test_load import _digests, _make

CLASS = "load"

pytestmark = [pytest.mark.slurm]

#: Small resources so two tasks fit the fixture's node at once.
SLURM_ARGS = ("--scheduler", "slurm", "--cpus-per-task", "1", "--mem", "100M")


def _monitored(
    args: list[str], env: dict[str, str], timeout: float
) -> tuple[int, str, PeakMonitor]:
    proc = popen_xfer(*args, env=env)
    with PeakMonitor(proc.pid) as monitor:
        _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode(errors="replace"), monitor


def _peaks(*monitors: PeakMonitor) -> dict[str, float]:
    figures = [m.figures() for m in monitors]
    return {key: max(f[key] for f in figures) for key in figures[0]}


def _slurm_run(
    tmp_path: Path,
    slurm: SlurmCluster,
    tally: Tally,
    *,
    shards: int,
    files: int,
    timeout: float,
    extra: tuple[str, ...] = (),
) -> None:
    src = tmp_path / "src"
    want = _make(src, files, per_dir=100)
    run, dst = tmp_path / "run", tmp_path / "dst"
    start = time.monotonic()
    rc, err, submit = _monitored(
        [
            *["run", "--run-dir", str(run), "--source", str(src), "--dest", str(dst)],
            *["--num-shards", str(shards), "--array-concurrency", "2", *SLURM_ARGS],
            *["--partition", slurm.partition, *extra, "--submit"],
        ],
        slurm.env,
        timeout=600,
    )
    assert rc == 0, err[-2000:]
    # follows the array to its end: returns when every shard is done or failed for good
    rc, err, watch = _monitored(
        ["status", "--run-dir", str(run), "--watch", "--interval", "2"], slurm.env, timeout
    )
    seconds = time.monotonic() - start
    assert rc == 0, err[-2000:]
    state = load_run_state(run)
    assert state.totals.shards == shards and state.complete, state.totals
    assert all(s.attempts == 1 for s in state.shards)  # nothing failed or ran twice
    [job] = read_jobs(run)
    assert job.scheduler == "slurm" and len(job.shards) == shards
    got = _digests(dst)
    lost = sum(1 for name, digest in want.items() if got.get(name) != digest)
    assert lost == 0 and len(got) == files
    # nothing left in the queue
    queue = slurm.run(["squeue", "-h", "-j", job.job_id, "-o", "%i"])
    assert not queue.stdout.strip(), queue.stdout
    tasks = load_resolved(run).tasks
    tally(
        cases=shards,
        lost=lost,
        false_done=0,
        load=f"Slurm run, {shards:,} shards ({files:,} files, {tasks:,} array tasks, 2 at once; "
        "xfer run --submit + status --watch)",
        seconds=round(seconds, 1),
        seconds_per_shard=round(seconds / shards, 2),
        **_peaks(submit, watch),
    )


def test_slurm_run_40_shards_several_per_task(
    tmp_path: Path, slurm: SlurmCluster, tally: Tally
) -> None:
    _slurm_run(
        tmp_path, slurm, tally, shards=40, files=120, timeout=600,
        extra=("--max-array-size", "10"),
    )  # fmt: skip


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_slurm_run_1000_shards(tmp_path: Path, slurm: SlurmCluster, tally: Tally) -> None:
    _slurm_run(tmp_path, slurm, tally, shards=1000, files=3000, timeout=3600)
