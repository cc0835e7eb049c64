"""xfer scheduler ``sge``: a run as one (Son of) Grid Engine array job per submission.

Written against xfer's public plugin API only (``xfer_core.bulk.scheduler``,
``xfer_core.hookspecs``), registered through the ``xfer`` entry point group like
the builtins. What it owns:

- its job file ``sge_array.sh`` (``#$`` directives: name, time limit as ``h_rt``
  with ``s_rt`` ``signal_seconds`` earlier, queue, memory, optional parallel
  environment for the CPUs), which defines the requeue hooks for ``worker.sh``
  (``xfer_task_id``; ``xfer_requeue`` exits 99, Grid Engine's "reschedule me") and
  then sources it: ``s_rt`` sends SIGUSR1 to the job shell, i.e. to the worker;
- its options (``-O pe=smp``, ``-O extras='-P proj'``);
- submission (``qsub -terse -t A-B -tc C``), the queue (``qstat -g d``) mapped onto
  xfer's JobState, cancel (``qdel``), reachability (``qstat`` answers).

Grid Engine tasks count from 1: task ``t`` of xfer is SGE task ``t + 1``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from xfer_core.bulk.render import load_resolved, sh, tasks_for_shards
from xfer_core.bulk.scheduler import JobInfo, JobState, Scheduler, Submission, SubmitOptions
from xfer_core.errors import ConfigError, TransferError, UnavailableError
from xfer_core.hookspecs import hookimpl
from xfer_core.plugin import AVAILABLE, Availability

if TYPE_CHECKING:
    from xfer_core.bulk.render import ResolvedConfig

__version__ = "0.1.0"

#: Seconds a Grid Engine client command may take before the scheduler counts as unreachable.
TIMEOUT = 15.0
#: Grid Engine's default ``max_aj_tasks`` when the cluster cannot be asked.
DEFAULT_MAX_TASKS = 75000
JOB_FILE = "sge_array.sh"


class SgeOptions(msgspec.Struct, forbid_unknown_fields=True):
    """``-O NAME=VALUE`` options of the sge scheduler."""

    #: Parallel environment for ``--cpus-per-task`` (``#$ -pe PE N``); none: one slot.
    pe: str = ""
    #: More qsub options, written as ``#$`` lines (``-P proj -l gpu=1``).
    extras: str = ""


#: qstat's state letters (combined: ``qw``, ``hqw``, ``Rr``, ``dr``, ``Eqw``...).
def _state(word: str) -> JobState:
    if not word or not re.fullmatch(r"[a-zA-Z]+", word):
        return JobState.UNKNOWN
    if "d" in word:  # being deleted: it may still run until the shepherd ends it
        return JobState.RUNNING if ("r" in word or "t" in word) else JobState.CANCELLED
    if "r" in word or "t" in word:
        return JobState.RUNNING  # r, t (transferring), Rr (restarted and running)
    if "q" in word or "w" in word or "h" in word or "s" in word or "S" in word or "T" in word:
        return JobState.PENDING  # qw, hqw, Eqw (error: stays queued until cleared), s/S/T
    return JobState.UNKNOWN


PENDING_HELP = {
    "Eqw": "the job is in error: `qstat -j ID` says why; clear it with `qmod -cj ID` or qdel it",
    "hqw": "held (qhold): release it with `qrls ID`",
}


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, **(extra or {})}


def _run(
    argv: Sequence[str],
    env: dict[str, str] | None,
    cwd: Path | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=_env(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise UnavailableError(
            f"{argv[0]}: not on PATH", hint="run on a Grid Engine submit host, or --scheduler local"
        ) from None
    except subprocess.TimeoutExpired:
        raise UnavailableError(
            f"{argv[0]}: no answer from the qmaster within {timeout:.0f} s",
            hint="is sge_qmaster up? `qstat`; or use --scheduler local",
        ) from None


def time_seconds(text: str) -> int | None:
    """xfer's ``--time-limit`` (Slurm's spelling: ``M``, ``M:S``, ``H:M:S``, ``D-H[:M[:S]]``) in
    seconds; None for no limit (``UNLIMITED``/``INFINITE``)."""
    if text.lower() in ("unlimited", "infinite"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ConfigError(
            f"--time-limit {text!r} is not a time Grid Engine can take",
            hint="use [D-]HH:MM:SS, e.g. 24:00:00",
        )
    days, a, b, c = match.groups()
    if days is not None:  # D-H, D-H:M, D-H:M:S
        parts = [int(a), int(b or 0), int(c or 0)]
        return int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    if b is None:
        return int(a) * 60  # minutes
    if c is None:
        return int(a) * 60 + int(b)  # M:S
    return int(a) * 3600 + int(b) * 60 + int(c)


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.+@=-]{0,199}")
_QUEUE = re.compile(r"[A-Za-z0-9_.@*-]+(,[A-Za-z0-9_.@*-]+)*")
_MEM = re.compile(r"\d+[KMGT]?")
_WORD = re.compile(r"[A-Za-z0-9_.,:@%+/=*-]+")
#: qsub options xfer sets itself.
_OWN = frozenset({"-t", "-tc", "-o", "-e", "-j", "-S", "-wd", "-cwd", "-V", "-v", "-b", "-N"})


def extra_options(text: str) -> list[str]:
    """``-O extras=...`` as checked qsub words (``-P proj -l gpu=1``), no shell syntax."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"sge option extras {text!r}: {exc}") from None
    for word in words:
        if not _WORD.fullmatch(word):
            raise ConfigError(f"sge option extras: {word!r} is not a qsub word xfer can write")
        if word in _OWN:
            raise ConfigError(f"sge option extras: {word} is set by xfer itself")
    return words


def _check(what: str, value: str, pattern: re.Pattern[str], example: str) -> str:
    if not pattern.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r} is not accepted in a #$ line", hint=f"use a value like {example}"
        )
    return value


#: The functions worker.sh calls to requeue an array task: exit 99 makes Grid Engine
#: put the task back in the queue.
WORKER_HOOKS = """\
# for worker.sh: this array task's id when it runs xfer task $1, and how to requeue it
xfer_task_id() {
    [ -n "${JOB_ID:-}" ] && [ -n "${SGE_TASK_ID:-}" ] || return 1
    [ "$((SGE_TASK_ID - 1))" = "$1" ] || return 1
    printf '%s_%s\\n' "$JOB_ID" "$SGE_TASK_ID"
}
xfer_requeue() { exit 99; }
"""


def render_job(run_dir: Path, resolved: ResolvedConfig, options: SgeOptions) -> str:
    """``sge_array.sh``: each task sources ``worker.sh --task $((SGE_TASK_ID - 1))``."""
    name = _check("--job-name", resolved.job_name, _NAME, "xfer-run1")
    lines = [
        "#!/bin/bash",
        f"#$ -N {name}",
        "#$ -S /bin/bash",
        f"#$ -wd {run_dir}" if _WORD.fullmatch(str(run_dir)) else "#$ -cwd",
        "#$ -j y",
        "#$ -o logs/sge-$JOB_ID-$TASK_ID.out",
        "#$ -r y",
    ]
    limit = time_seconds(resolved.time_limit)
    if limit is not None:
        soft = max(1, limit - int(resolved.signal_seconds))
        lines.append(f"#$ -l h_rt={limit},s_rt={soft}")
    lines.append(f"#$ -l mem_free={_check('--mem', resolved.mem, _MEM, '8G')}")
    if resolved.partition:
        lines.append(f"#$ -q {_check('--partition', resolved.partition, _QUEUE, 'all.q')}")
    if options.pe:
        pe = _check("sge option pe", options.pe, _WORD, "smp")
        lines.append(f"#$ -pe {pe} {int(resolved.cpus_per_task)}")
    extras = extra_options(options.extras)
    if extras:
        lines.append("#$ " + " ".join(extras))
    lines += [
        "# Generated by xfer (plugin xfer-sge). Submit with `xfer run --scheduler sge --submit`,",
        "# or by hand: qsub -t 1-TASKS -tc CONCURRENCY sge_array.sh (from the run dir).",
        "# The job shell runs worker.sh itself, so SIGUSR1 at s_rt reaches its trap.",
        WORKER_HOOKS,
        f'. {sh(str(run_dir / "worker.sh"))} --task "$((SGE_TASK_ID - 1))"',
        "",
    ]
    return "\n".join(lines)


class SgeScheduler(Scheduler):
    """Submit a run as a Grid Engine array job."""

    name = "sge"
    description = "(Son of) Grid Engine array jobs (qsub -t/-tc, s_rt requeue, qdel)"
    Options = SgeOptions

    def check(self) -> Availability:
        if shutil.which("qsub") is None:
            return Availability(False, "qsub: not on PATH")
        return AVAILABLE

    def reachable(self, env: dict[str, str] | None = None) -> Availability:
        avail = self.check()
        if not avail.ok:
            return avail
        if not _env(env).get("SGE_ROOT"):
            return Availability(False, "SGE_ROOT is not set")
        try:
            proc = _run(["qstat", "-u", "*"], env, timeout=5)
        except UnavailableError as exc:
            return Availability(False, exc.message)
        if proc.returncode != 0:
            text = (proc.stderr or proc.stdout).strip().splitlines()
            return Availability(False, f"qmaster not reachable: {text[-1] if text else '?'}")
        return Availability(True, "the Grid Engine qmaster answers")

    def max_tasks(self, env: dict[str, str] | None = None) -> int | None:
        """``max_aj_tasks`` of the global configuration (75000 when it cannot be asked)."""
        try:
            proc = _run(["qconf", "-sconf"], env)
        except UnavailableError:
            return DEFAULT_MAX_TASKS
        match = re.search(r"^max_aj_tasks\s+(\d+)", proc.stdout, re.MULTILINE)
        found = int(match.group(1)) if match else 0
        return found or DEFAULT_MAX_TASKS  # 0: no limit of its own

    def job_files(
        self, run_dir: Path, resolved: ResolvedConfig, options: SgeOptions
    ) -> dict[str, str]:
        return {JOB_FILE: render_job(run_dir, resolved, options)}

    def submit(
        self,
        run_dir: Path,
        shard_indices: Sequence[int],
        concurrency: int,
        options: SubmitOptions,
    ) -> Submission:
        """``qsub -terse -t A-B -tc C sge_array.sh``: one range covering the tasks of
        ``shard_indices`` (a task whose shards are done exits at once)."""
        resolved = load_resolved(run_dir)
        tasks = tasks_for_shards(shard_indices, resolved.tasks)
        first, last = tasks[0], tasks[-1]
        argv = [
            "qsub",
            "-terse",
            "-t",
            f"{first + 1}-{last + 1}",
            "-tc",
            str(max(1, concurrency)),
            *options.extra_args,
            JOB_FILE,
        ]
        proc = _run(argv, options.env, cwd=run_dir)
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise TransferError(
                f"qsub failed (exit {proc.returncode}): {err[-1] if err else 'no message'}",
                hint="check the queue, time limit and memory against `qconf -sq QUEUE`",
            )
        job_id = proc.stdout.strip().split(".", 1)[0]
        if not job_id.isdigit():
            raise TransferError(f"qsub printed no job id: {proc.stdout.strip()!r}")
        return Submission(
            scheduler=self.name,
            job_id=job_id,
            shards=sorted(shard_indices),
            tasks=list(range(first, last + 1)),
            finished=False,
            hints=["qstat -g d -u '*'", f"qstat -j {job_id}", f"qdel {job_id}"],
        )

    def queue_info(
        self, job_ids: Sequence[str], env: dict[str, str] | None = None
    ) -> list[JobInfo]:
        """Tasks of ``job_ids`` still in ``qstat -g d`` (one line per task)."""
        if not job_ids:
            return []
        try:
            proc = _run(["qstat", "-g", "d", "-u", "*"], env)
        except UnavailableError:
            return []
        wanted = set(job_ids)
        out = []
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) < 8 or words[0] not in wanted:
                continue
            task = int(words[-1]) - 1 if len(words) >= 9 and words[-1].isdigit() else None
            out.append(JobInfo(job_id=words[0], task=task, state=words[4]))
        return out

    def job_state(self, word: str) -> JobState:
        return _state(word)

    def pending_help(self, reason: str) -> str | None:
        return PENDING_HELP.get(reason)

    def cancel(self, job_ids: Sequence[str], env: dict[str, str] | None = None) -> None:
        if not job_ids:
            return
        proc = _run(["qdel", *job_ids], env)
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise TransferError(f"qdel failed: {err[-1] if err else proc.returncode}")

    def cancel_hint(self, job_ids: Sequence[str]) -> str:
        return f"cancel it first: qdel {' '.join(job_ids)}"


@hookimpl
def register_schedulers(register: Callable[[Scheduler], None]) -> None:
    register(SgeScheduler())
