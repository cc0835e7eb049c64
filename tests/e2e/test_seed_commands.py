"""Every command line of seed 004 (upstream FluidNumerics/xfer's README), run verbatim.

Swapped for the test services, and only these: the endpoints (``s3src``/``s3dst`` in a
``~/.config/rclone/rclone.conf`` under a test HOME point at the S3 fixture; ``s3dst`` is an
alias of another bucket), the partition (the Slurm fixture's), the resources that must fit
the fixture's node (``--mem 100M --cpus-per-task 1``, 4 shards, 4 at once instead of
512/96), ``uv run xfer`` (this interpreter's ``-m xfer_core.cli``) and ``<jobid>``. pyxis
cannot be installed here, so ``srun`` in the job is a stand-in that drops the pyxis options
and runs the command on the host (the only fake).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from xfer_core.bulk.state import load_run_state
from xfer_core.testing.engine_conformance import make_tree, read_tree
from xfer_core.testing.services import S3Server, SlurmCluster
from xfer_core.tools import find_rclone

from .helpers import wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.s3]

#: The seeds folder: shared/ beside the checkout (as CI lays it), else this machine's.
SEED = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[3] / "shared" / "seeds",
            Path("/work/shared/seeds"),
        )
        if p.is_dir()
    ),
    Path("/work/shared/seeds"),
)

#: The command lines of seed 004's text, in its order, as written there.
COMMANDS = [
    "uv run xfer --help",
    "xfer --help",
    "uv run xfer run \\\n --run-dir run_001 \\\n --source s3src:mybucket/dataset \\\n"
    " --dest s3dst:mybucket/dataset \\\n --num-shards 512 \\\n --array-concurrency 96 \\\n"
    " --rclone-image rclone/rclone:latest \\\n --rclone-config ~/.config/rclone/rclone.conf \\\n"
    ' --rclone-flags "--transfers 48 --checkers 96 --fast-list --stats 30s" \\\n'
    " --partition transfer \\\n --cpus-per-task 4 \\\n --mem 8G \\\n --submit",
    "uv run xfer manifest build \\\n --source s3src:mybucket/dataset \\\n"
    " --dest s3dst:mybucket/dataset \\\n --out run/manifest.jsonl \\\n"
    " --rclone-image rclone/rclone:latest \\\n --rclone-config ~/.config/rclone/rclone.conf \\\n"
    ' --extra-lsjson-flags "--fast-list"',
    "uv run xfer manifest shard \\\n --in run/manifest.jsonl \\\n --outdir run/shards \\\n"
    " --num-shards 512",
    "uv run xfer slurm render \\\n --run-dir run \\\n --num-shards 512 \\\n"
    " --array-concurrency 96 \\\n --job-name s3-xfer \\\n --time-limit 24:00:00 \\\n"
    " --partition transfer \\\n --cpus-per-task 4 \\\n --mem 8G \\\n"
    " --rclone-image rclone/rclone:latest \\\n --rclone-config ~/.config/rclone/rclone.conf",
    "uv run xfer slurm submit --run-dir run",
    "squeue -j <jobid>",
    "sacct -j <jobid> --format=JobID,State,Elapsed",
    "scontrol update ArrayTaskThrottle=<new array concurrency> JobId=<jobid>",
    "sbatch run/sbatch_array.sh",
]

SRUN = """#!/usr/bin/env bash
# stand-in for srun + pyxis (not installable here): drop the options, run the command
echo "$*" >> "{log}"
while [ $# -gt 0 ]; do
  case "$1" in
    --container-image|--container-mounts|--container-workdir|-n|-c) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
if [ "$1" = rclone ]; then shift; exec "{rclone}" "$@"; fi
exec "$@"
"""


def _words(text: str) -> str:
    return " ".join(text.replace("\\\n", " ").split())


def test_commands_are_the_seeds() -> None:
    """The list above is the seed's text (checked where the seed file is available)."""
    seeds = sorted(SEED.glob("004_*.txt"))
    if not seeds:
        pytest.skip("seed 004's text is not on this machine")
    seed = _words(seeds[0].read_text(encoding="utf-8"))
    for command in COMMANDS:
        assert _words(command) in seed, command


class Env:
    def __init__(self, tmp: Path, s3: S3Server, slurm: SlurmCluster):
        self.tmp, self.s3, self.slurm = tmp, s3, slurm
        home = tmp / "home"
        conf = home / ".config" / "rclone" / "rclone.conf"
        conf.parent.mkdir(parents=True)
        text = s3.rclone_config.read_text().replace("[s3]", "[s3src]", 1)
        conf.write_text(text + "\n[s3dst]\ntype = alias\nremote = s3src:dstbucket\n")
        conf.chmod(0o600)
        (s3.root / "dstbucket").mkdir(exist_ok=True)
        self.files = make_tree(
            s3.root / "mybucket" / "dataset", [f"part{i % 3}/obj {i}.bin" for i in range(12)]
        )
        bindir = tmp / "bin"
        bindir.mkdir()
        self.srun_log = tmp / "srun.log"
        rclone = find_rclone()
        assert rclone is not None
        srun = bindir / "srun"
        srun.write_text(SRUN.format(log=self.srun_log, rclone=rclone))
        srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        self.env = {
            **env,
            **slurm.env,
            "HOME": str(home),
            "PATH": f"{bindir}:{env['PATH']}",
            "XFER_PLAIN": "1",
        }
        self.job_id = ""

    def command(self, text: str) -> str:
        swaps = {
            "uv run xfer": f"{shlex.quote(sys.executable)} -m xfer_core.cli",
            "--partition transfer": f"--partition {self.slurm.partition}",
            "--num-shards 512": "--num-shards 4",
            "--array-concurrency 96": "--array-concurrency 4",
            "--cpus-per-task 4": "--cpus-per-task 1",
            "--mem 8G": "--mem 100M",
            "<new array concurrency>": "2",
            "<jobid>": self.job_id,
        }
        out = text
        for old, new in swaps.items():
            out = out.replace(old, new)
        if out.startswith("xfer "):
            out = f"{shlex.quote(sys.executable)} -m xfer_core.cli" + out[len("xfer") :]
        return out

    def run(self, text: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", self.command(text)],
            capture_output=True,
            text=True,
            cwd=self.tmp,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def dest(self) -> dict[str, bytes]:
        return read_tree(self.s3.root / "dstbucket" / "mybucket" / "dataset")


def test_every_seed_command_line(tmp_path: Path, s3: S3Server, slurm: SlurmCluster) -> None:
    env = Env(tmp_path, s3, slurm)
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}

    def ran(i: int, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = env.run(COMMANDS[i], timeout)
        outcome[COMMANDS[i]] = proc
        return proc

    for i in (0, 1):  # --help
        proc = ran(i)
        assert proc.returncode == 0 and "manifest" in proc.stdout, proc.stderr

    # the one-shot pipeline: build, shard, render, submit; the array copies everything
    proc = ran(2)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().splitlines()[-1]
    assert job.isdigit(), proc.stdout
    wait_for(lambda: load_run_state(tmp_path / "run_001").complete, "run_001's array", 300)
    assert env.dest() == env.files
    assert "--container-image=rclone/rclone:latest" in env.srun_log.read_text()  # pyxis path

    # the staged pipeline into run/
    for i in (3, 4, 5):
        proc = ran(i)
        assert proc.returncode == 0, (COMMANDS[i], proc.stderr)
    assert (tmp_path / "run" / "manifest.jsonl").read_text().count("\n") == len(env.files)
    assert len(list((tmp_path / "run" / "shards").glob("shard_*.jsonl"))) == 4
    assert "--rclone-image rclone/rclone:latest is ignored with --runtime host" in (
        outcome[COMMANDS[3]].stderr
    )
    for name in ("worker.sh", "sbatch_array.sh", "submit.sh", "config.resolved.json"):
        assert (tmp_path / "run" / name).is_file()
    proc = ran(6)
    assert proc.returncode == 0, proc.stderr
    env.job_id = proc.stdout.strip()
    assert env.job_id.isdigit()
    # follow it the seed's way while it runs (or just after: then Slurm says it is gone)
    proc = ran(7)
    assert proc.returncode == 0 or "Invalid job id" in proc.stderr, proc.stderr
    proc = ran(8)
    assert proc.returncode == 0 or "accounting storage is disabled" in proc.stderr.lower(), (
        proc.stderr
    )
    proc = ran(9)
    assert proc.returncode == 0 or re.search(
        r"already completed|Invalid job id|finished", proc.stderr
    ), proc.stderr
    wait_for(lambda: load_run_state(tmp_path / "run").complete, "run's array", 300)
    assert env.dest() == env.files

    # re-submit by hand, from the parent directory, as the seed says: done shards are skipped
    before = {p.name for p in (tmp_path / "run" / "logs").glob("shard_*_attempt_*.log")}
    proc = ran(10)
    assert proc.returncode == 0 and "Submitted batch job" in proc.stdout, proc.stderr
    resubmitted = proc.stdout.split()[-1]

    def gone() -> bool:
        q = slurm.run(["squeue", "-h", "-j", resubmitted])
        return (q.returncode == 0 and not q.stdout.strip()) or "Invalid job id" in q.stderr

    wait_for(gone, "the re-submitted array to finish", 300)
    after = {p.name for p in (tmp_path / "run" / "logs").glob("shard_*_attempt_*.log")}
    assert after == before  # every shard was done: nothing ran again
    assert sorted((tmp_path / "run" / "logs").glob(f"slurm-{resubmitted}_*.out"))
    assert load_run_state(tmp_path / "run").complete
    assert env.dest() == env.files
