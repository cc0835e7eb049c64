"""Issue 19, items 2 and 6: run dirs on shared filesystems, and requeue only as an array task.

The attacks run for real: a second local user (``xfertest``) owns, writes into or plants
symlinks in run dirs that ``root`` (the victim here) then uses through every entry point.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bulk.runtools import make_tree, read_tree, wait_for, xfer
from xfer_core.bulk.pipeline import PrepareOptions, prepare_run
from xfer_core.bulk.render import RenderOptions
from xfer_core.bulk.scheduler import SubmitOptions
from xfer_core.errors import ConfigError
from xfer_core.testing.cli import xfer_argv
from xfer_core.testing.fixtures import unavailable
from xfer_core.testing.services import SlurmCluster, ensure_test_user, missing_programs

CLASS = "security: run dirs on shared filesystems"

NAMES = ["a.txt", "b c.txt", "d/e.bin", "f.txt"]


@pytest.fixture(scope="module")
def other() -> pwd.struct_passwd:
    """A second, unprivileged local user: the attacker."""
    if os.geteuid() != 0:
        unavailable("a second local user needs root (useradd, runuser)")
    missing = missing_programs("useradd", "usermod", "runuser")
    if missing:
        unavailable(f"not installed: {', '.join(missing)}")
    return ensure_test_user()


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory like /tmp: everyone may create entries, sticky."""
    path = Path(tempfile.mkdtemp(prefix="xfer-shared-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(user: pwd.struct_passwd, script: str) -> None:
    subprocess.run(["runuser", "-u", user.pw_name, "--", "bash", "-c", script], check=True)


def prepared(run: Path, src: Path, dst: Path, **render: object) -> None:
    """A rendered run dir of 2 shards copying ``src`` to ``dst`` (nothing copied yet)."""
    if not src.exists():
        make_tree(src, NAMES)
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(dst), num_shards=2),
        RenderOptions(max_array_size=1001, **render),  # type: ignore[arg-type]
    )


def digest_tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """name -> (sha256 or link target, owner, mode) of everything under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        body = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else b"")
        digest = body if isinstance(body, str) else hashlib.sha256(body).hexdigest()
        out[str(p.relative_to(root))] = (digest, st.st_uid, st.st_mode)
    return out


# --- run dirs owned by another user ------------------------------------------------------


def test_run_dir_of_another_user_is_refused_and_nothing_runs(
    tmp_path: Path, shared: Path, other: pwd.struct_passwd
) -> None:
    """The issue's attack: another user prepares /tmp/xfer-demo (here with a worker.sh of
    their own) before the victim runs the README's command on it."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    canary = tmp_path / "CANARY"
    genuine = tmp_path / "genuine"
    prepared(genuine, src, dst)
    demo = shared / "xfer-demo"
    shutil.copytree(genuine, demo, symlinks=True)
    worker = demo / "worker.sh"
    lines = worker.read_text().splitlines(keepends=True)
    worker.write_text(lines[0] + f"touch {shlex.quote(str(canary))}\n" + "".join(lines[1:]))
    subprocess.run(["chown", "-R", f"{other.pw_uid}:{other.pw_gid}", str(demo)], check=True)
    before = digest_tree(demo)
    commands = [
        ["run", "--run-dir", str(demo), "--scheduler", "local", "--submit"],
        ["run", "--run-dir", str(demo), "--source", str(src), "--dest", str(dst),
         "--num-shards", "2", "--scheduler", "local", "--submit"],
        ["status", "--run-dir", str(demo)],
        ["retry", "--run-dir", str(demo), "--scheduler", "local"],
        ["slurm", "render", "--run-dir", str(demo)],
        ["slurm", "submit", "--run-dir", str(demo)],
    ]  # fmt: skip
    for argv in commands:
        proc = xfer(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        first = proc.stderr.splitlines()[0]
        assert first == (
            f"xfer: error: run dir {demo} belongs to {other.pw_name} (uid {other.pw_uid}), "
            "not you (root (uid 0)): its owner could change what runs as you"
        ), argv
        assert "hint: use a run dir of your own, e.g. --run-dir ~/xfer-runs/NAME" in proc.stderr
    # the local scheduler as a library call (a third-party front end) checks too
    from xfer_backends.local_scheduler import LocalScheduler

    with pytest.raises(ConfigError, match="belongs to xfertest"):
        LocalScheduler().submit(demo, [0, 1], 1, SubmitOptions())
    assert not canary.exists(), "the other user's worker.sh ran"
    assert not dst.exists(), "something was copied"
    assert digest_tree(demo) == before, "the refused run dir was changed"

    # the genuine worker, in a run dir that now belongs to the other user, refuses too
    theirs = shared / "theirs"
    shutil.copytree(genuine, theirs, symlinks=True)
    subprocess.run(["chown", "-R", str(other.pw_uid), str(theirs)], check=True)
    moved = theirs / "worker.sh"
    moved.write_text(moved.read_text().replace(str(genuine), str(theirs)))
    proc = subprocess.run(["bash", str(moved), "0"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert f"run dir {theirs} is owned by uid {other.pw_uid}" in proc.stderr
    assert not dst.exists()
    assert not list((theirs / "logs").iterdir())


# --- run dirs others can write -----------------------------------------------------------

MUTATIONS = {
    "run dir 0777": ("chmod 0777 RUN", "run dir RUN is writable by group or others (mode 0777)"),
    "run dir 0770": ("chmod 0770 RUN", "run dir RUN is writable by group or others (mode 0770)"),
    "state 0777": (
        "chmod 0777 RUN/state",
        "run dir entry RUN/state is writable by group or others (mode 0777)",
    ),
    "logs 0703": (
        "chmod 0703 RUN/logs",
        "run dir entry RUN/logs is writable by group or others (mode 0703)",
    ),
    "shards 0775": (
        "chmod 0775 RUN/shards",
        "run dir entry RUN/shards is writable by group or others (mode 0775)",
    ),
    "worker.sh 0666": (
        "chmod 0666 RUN/worker.sh",
        "run dir entry RUN/worker.sh is writable by group or others (mode 0666)",
    ),
    "jobs.json 0620": (
        "echo [] > RUN/jobs.json && chmod 0620 RUN/jobs.json",
        "run dir entry RUN/jobs.json is writable by group or others (mode 0620)",
    ),
    "state symlink": (
        "mv RUN/state RUN/.s && ln -s .s RUN/state",
        "run dir RUN: state is not a directory (a symlink)",
    ),
    "worker.sh symlink": (
        "mv RUN/worker.sh RUN/.w && ln -s .w RUN/worker.sh",
        "run dir RUN: worker.sh is not a regular file (a symlink)",
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_run_dir_others_can_write_is_refused(tmp_path: Path, case: str) -> None:
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    prepared(run, src, dst)
    mutate, message = MUTATIONS[case]
    subprocess.run(["bash", "-c", mutate.replace("RUN", shlex.quote(str(run)))], check=True)
    before = digest_tree(run)
    for argv in (
        ["run", "--run-dir", str(run), "--scheduler", "local", "--submit"],
        ["run", "--run-dir", str(run), "--source", str(src), "--dest", str(dst), "-n", "2",
         "--scheduler", "local", "--submit"],
        ["status", "--run-dir", str(run)],
    ):  # fmt: skip
        proc = xfer(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.splitlines()[0].startswith(
            "xfer: error: " + message.replace("RUN", str(run))
        ), proc.stderr
        assert "hint: " in proc.stderr
    assert not dst.exists()
    assert digest_tree(run) == before
    if case.split()[0] in ("run", "state", "logs", "shards"):
        # the worker checks the directories itself (a late chmod, a run dir moved elsewhere)
        proc = subprocess.run(["bash", str(run / "worker.sh"), "0"], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert "refusing to run" in proc.stderr
        assert not dst.exists()


def test_fix_from_the_hint_makes_the_run_dir_usable(tmp_path: Path) -> None:
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    prepared(run, src, dst)
    run.chmod(0o777)
    assert xfer("status", "--run-dir", str(run)).returncode == 2
    run.chmod(0o777 & ~0o022)  # chmod go-w, as the hint says
    proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert proc.returncode == 0, proc.stderr
    assert read_tree(dst) == read_tree(src)


def test_parent_writable_by_everyone_and_not_sticky_is_refused(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # anyone could rename a run dir in here and put another in its place
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src, NAMES)
    proc = xfer(
        "run", "--run-dir", str(open_dir / "run"), "--source", str(src), "--dest", str(dst),
        "-n", "2", "--scheduler", "local", "--submit",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert (
        f"run dir {open_dir / 'run'}: its parent {open_dir} is writable by everyone and not "
        "sticky" in proc.stderr
    )
    assert not (open_dir / "run").exists(), "the refused run dir was created"
    assert not dst.exists()
    open_dir.chmod(0o1777)  # sticky, like /tmp: only the owner of an entry may rename it
    proc = xfer(
        "run", "--run-dir", str(open_dir / "run"), "--source", str(src), "--dest", str(dst),
        "-n", "2", "--scheduler", "local", "--submit",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_new_run_dirs_are_private_and_a_loose_umask_is_not_refused(tmp_path: Path) -> None:
    """umask 002 (user-private groups) must not make xfer refuse its own files."""
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    make_tree(src, NAMES)
    proc = subprocess.run(
        ["bash", "-c", 'umask 002 && exec "$@"', "-", *xfer_argv(),
         "run", "--run-dir", str(run), "--source", str(src), "--dest", str(dst), "-n", "2",
         "--scheduler", "local", "--submit"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert read_tree(dst) == read_tree(src)
    for d in (run, run / "shards", run / "state", run / "logs"):
        assert d.stat().st_mode & 0o777 == 0o700, d
    for p in run.rglob("*"):
        assert not p.is_symlink()
        assert p.stat().st_mode & 0o022 == 0, p
    assert xfer("status", "--run-dir", str(run)).returncode == 0


# --- symlinks planted where the worker writes -------------------------------------------


def test_planted_symlinks_never_reach_their_targets(
    tmp_path: Path, shared: Path, other: pwd.struct_passwd
) -> None:
    """The run dir was writable by others once (or on a filesystem that let them in):
    symlinks to root's 0600 files sit where the worker and the local scheduler write
    logs, reasons, check listings and state. After the run the files are untouched."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    run = shared / "xfer-demo"
    prepared(run, src, dst)
    targets = []

    def target(tag: str) -> str:
        path = tmp_path / f"precious-{len(targets)}"
        path.write_text(f"precious {tag}\n")
        path.chmod(0o600)
        targets.append(path)
        return shlex.quote(str(path))

    planted = [
        *(f"logs/shard_{i}_attempt_{k}.log" for i in (0, 1) for k in (1, 2, 3)),
        *(f"logs/shard_{i}_attempt_{k}.log.{x}" for i in (0, 1) for k in (1, 2, 3)
          for x in ("check", "report")),
        "logs/local_scheduler.log",
        *(f"state/shard_{i}.{kind}" for i in (0, 1)
          for kind in ("attempt", "running", "done", "interrupted")),
        "state/shard_0.fail",
    ]  # fmt: skip
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET reason\n")
    secret.chmod(0o600)
    for d in (run, run / "logs", run / "state"):
        d.chmod(0o777)
    script = "set -e; cd " + shlex.quote(str(run)) + "\n"
    script += "".join(f"ln -s {target(p)} {shlex.quote(p)}\n" for p in planted)
    script += f"ln -s {shlex.quote(str(secret))} state/shard_1.fail\n"
    as_user(other, script)
    for d in (run, run / "logs", run / "state"):
        d.chmod(0o700)  # fixed; the symlinks stay behind

    # status must not read through the planted .fail: shard 1 shows no secret
    proc = xfer("status", "--run-dir", str(run))
    assert "TOPSECRET" not in proc.stdout + proc.stderr

    # shard 0 by hand, with a reason file planted for the worker's own pid ($$ survives exec)
    run.chmod(0o777)
    (run / "state").chmod(0o777)
    reason_target = target("reason")
    wrapper = (
        f"runuser -u {other.pw_name} -- ln -s {reason_target} "
        '"$0/state/.shard_0.reason.$$" && chmod 700 "$0" "$0/state" && '
        'exec bash "$0/worker.sh" 0'
    )
    proc = subprocess.run(["bash", "-c", wrapper, str(run)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # the rest on the local scheduler
    proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert proc.returncode == 0, proc.stderr
    assert read_tree(dst) == read_tree(src)

    for path in targets:
        assert path.read_text().startswith("precious "), f"{path} was written through a symlink"
        assert path.stat().st_mode & 0o777 == 0o600
    assert secret.read_text() == "TOPSECRET reason\n"
    used = [
        # .report: the copy's own report (the default verification; .check only with
        # --verify check, so a planted .check stays unused, its target untouched)
        *(f"logs/shard_{i}_attempt_1.log{x}" for i in (0, 1) for x in ("", ".report")),
        "logs/local_scheduler.log",
        *(f"state/shard_{i}.{kind}" for i in (0, 1) for kind in ("attempt", "running", "done")),
        "state/shard_0.fail",
        "state/shard_1.fail",
    ]
    for rel in used:  # each was replaced (or removed), not written through
        assert not (run / rel).is_symlink(), f"{rel} is still a symlink"
    assert (run / "logs" / "shard_0_attempt_1.log").read_text().startswith("xfer worker: shard 0")
    assert "TOPSECRET" not in (run / "logs" / "local_scheduler.log").read_text()


def test_state_files_of_another_user_are_refused_or_replaced(
    tmp_path: Path, shared: Path, other: pwd.struct_passwd
) -> None:
    """A ``.done`` planted by another user (with the right digest) would make the shard
    look done and its data never copied; a FIFO would hang whoever reads it."""
    from xfer_core.manifest.shard import load_shard_meta

    src, dst = tmp_path / "src", tmp_path / "dst"
    run = shared / "xfer-demo"
    prepared(run, src, dst)
    digest = load_shard_meta(run / "shards").shards[0].sha256
    for d in (run, run / "state", run / "logs"):
        d.chmod(0o777)
    as_user(
        other,
        f"cd {shlex.quote(str(run))} && echo {digest} > state/shard_0.done && "
        "echo theirs > logs/local_scheduler.log",
    )
    for d in (run, run / "state", run / "logs"):
        d.chmod(0o700)
    done = run / "state" / "shard_0.done"

    proc = xfer("status", "--run-dir", str(run), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"run dir entry {done} belongs to {other.pw_name}" in proc.stderr
    proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "belongs to xfertest" in proc.stderr
    assert not dst.exists()

    # the worker does not take another user's .done for its own: it copies the shard
    proc = subprocess.run(["bash", str(run / "worker.sh"), "0"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "already done" not in proc.stderr
    assert done.stat().st_uid == 0 and done.read_text() == f"{digest}\n"
    fifo = run / "state" / "shard_1.attempt"
    os.mkfifo(fifo)  # reading it would block: refused, not read
    proc = xfer("status", "--run-dir", str(run), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"run dir entry {fifo} is not a regular file" in proc.stderr
    assert f"hint: remove it: rm -f {fifo}" in proc.stderr
    fifo.unlink()
    proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert read_tree(dst) == read_tree(src)
    log = run / "logs" / "local_scheduler.log"
    assert log.stat().st_uid == 0 and "theirs" not in log.read_text()


# --- item 6: requeue only as an array task -------------------------------------------------


def _failing_run(tmp_path: Path) -> tuple[Path, Path]:
    """A rendered 1-shard run dir whose shard fails (a listed file is gone at the source),
    and a PATH dir whose ``scontrol`` records its arguments."""
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    make_tree(src, NAMES)
    prepare_run(
        run,
        PrepareOptions(source=str(src), dest=str(dst), num_shards=1),
        RenderOptions(max_array_size=1001, max_attempts=3),
    )
    (src / "a.txt").unlink()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    shim = bin_dir / "scontrol"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(calls))}\n')
    shim.chmod(0o755)
    return run, bin_dir


def _array_env(bin_dir: Path, task: str = "0") -> dict[str, str]:
    """The environment of a process inside task ``task`` of Slurm array job 4242."""
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "4243",
        "SLURM_ARRAY_JOB_ID": "4242",
        "SLURM_ARRAY_TASK_ID": task,
        "SLURM_ARRAY_TASK_COUNT": "1",
    }


def test_local_run_inside_a_slurm_array_job_does_not_requeue_it(tmp_path: Path) -> None:
    run, bin_dir = _failing_run(tmp_path)
    calls = tmp_path / "scontrol.calls"
    env = _array_env(bin_dir)
    proc = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "verify: 1 of" in proc.stderr  # the shard failed every attempt
    assert not calls.exists(), f"the outer job was requeued: {calls.read_text()}"
    assert not list((run / "state").glob("task_*.requeues"))
    logs = "".join(p.read_text() for p in (run / "logs").glob("shard_*.log"))
    assert "requeueing" not in logs

    # a worker run by hand (shard indices) inside the job: no requeue either
    proc = subprocess.run(
        ["bash", str(run / "worker.sh"), "0"], capture_output=True, text=True,
        env={**os.environ, **env},
    )  # fmt: skip
    assert proc.returncode == 1
    assert not calls.exists()

    # worker.sh --task T run by itself, even with the task's own variables: the requeue
    # functions come from the scheduler's job file only, so no requeue
    proc = subprocess.run(
        ["bash", str(run / "worker.sh"), "--task", "0"], capture_output=True, text=True,
        env={**os.environ, **env},
    )  # fmt: skip
    assert proc.returncode == 1
    assert not calls.exists()

    # the array task itself (sbatch_array.sh sources worker.sh --task T) does requeue
    proc = subprocess.run(
        ["bash", str(run / "sbatch_array.sh")], capture_output=True, text=True,
        env={**os.environ, **env},
    )  # fmt: skip
    assert proc.returncode == 1
    assert calls.read_text() == "requeue 4242_0\n"
    assert (run / "state" / "task_4242_0.requeues").read_text() == "1\n"


def test_local_run_inside_a_real_slurm_array_job_leaves_that_job_alone(
    tmp_path: Path, slurm: SlurmCluster
) -> None:
    """The same inside a real array job of the Slurm fixture: the job ends once, not
    requeued, and no task requeue was counted."""
    import sys

    run, _bin = _failing_run(tmp_path)
    out = tmp_path / "outer.out"
    script = tmp_path / "outer.sh"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f"{shlex.quote(sys.executable)} -m xfer_core.cli run --run-dir {shlex.quote(str(run))} "
        "--scheduler local --submit\n"
        'echo "xfer exit $?"\n'
    )
    env = {**os.environ, **slurm.env}
    proc = subprocess.run(
        ["sbatch", "--parsable", "--array=0-0", f"--partition={slurm.partition}",
         "--time=5:00", "--mem=100M", "--cpus-per-task=1", f"--output={out}", str(script)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    job = proc.stdout.strip().split(";")[0]
    wait_for(lambda: out.is_file() and "xfer exit" in out.read_text(), timeout=120, what="job")
    assert "xfer exit 1" in out.read_text()  # the shard failed, as arranged
    wait_for(lambda: "JobState=COMPLETED" in _show_job(f"{job}_0", env), timeout=60, what="job end")
    shown = _show_job(f"{job}_0", env)
    assert "Restarts=0" in shown, shown
    assert not list((run / "state").glob("task_*.requeues"))
    logs = "".join(p.read_text() for p in (run / "logs").glob("shard_*.log"))
    assert "requeueing" not in logs


def _show_job(job: str, env: dict[str, str]) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", job], capture_output=True, text=True, env=env, check=False
    ).stdout
