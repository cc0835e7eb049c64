"""Builtin scheduler ``slurm``: one job array per submission (``sbatch --parsable``).

Array task ``t`` runs ``worker.sh --task t``: shards ``t, t+TASKS, ...`` where
``TASKS = min(shards, MaxArraySize)`` is frozen at render time, so a run with more
shards than ``MaxArraySize`` maps several shards to one task instead of failing
in sbatch. A (re)submission asks only for the tasks whose shards are not all
done, throttled with ``%C``. A failed task requeues itself (``scontrol requeue``)
while it has attempts left: ``sbatch_array.sh`` defines ``xfer_task_id`` and
``xfer_requeue`` for ``worker.sh`` (see :mod:`xfer_core.bulk.scheduler`).
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

#: Slurm's default ``MaxArraySize`` when the cluster cannot be asked.
DEFAULT_MAX_ARRAY_SIZE = 1001

#: Seconds any Slurm client command may take before we call the scheduler unreachable.
TIMEOUT = 15.0


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, **(extra or {})}


#: The submitting shell's variables a job gets (``sbatch --export=...``); nothing else
#: leaks in. Slurm adds its own ``SLURM_*`` for the job.
JOB_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")
#: ``SLURM_*`` of the submitting shell that sbatch itself reads. The others describe a
#: job the submitter may be running inside (``SLURM_MEM_PER_CPU``, ``SLURM_JOB_ID``, ...)
#: and sbatch would hand them to the new job; they are dropped. ``SBATCH_*`` (sbatch's
#: own input variables: ``SBATCH_ACCOUNT``, ``SBATCH_QOS``, ...) are kept.
SUBMIT_SLURM_ENV = frozenset({"SLURM_CONF", "SLURM_CLUSTERS", "SLURM_TIME_FORMAT"})


def submit_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The environment sbatch runs in: the caller's, minus job-context ``SLURM_*``."""
    return {
        k: v for k, v in _env(extra).items() if not k.startswith("SLURM_") or k in SUBMIT_SLURM_ENV
    }


def export_option(env: dict[str, str]) -> str:
    """``--export=PATH,HOME,...``: only :data:`JOB_ENV` names that are set (``NONE`` if none)."""
    names = [n for n in JOB_ENV if n in env]
    return "--export=" + (",".join(names) if names else "NONE")


def _run(
    argv: Sequence[str], env: dict[str, str] | None, cwd: Path | None = None, inherit: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; ``env`` is added to ours (``inherit=False``: it is the whole env)."""
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=_env(env) if inherit else env,
            cwd=cwd,
            timeout=TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise UnavailableError(
            f"{argv[0]}: not on PATH", hint="run on a Slurm login node, or use --scheduler local"
        ) from None
    except subprocess.TimeoutExpired:
        raise UnavailableError(
            f"{argv[0]}: no answer from Slurm within {TIMEOUT:.0f} s",
            hint="is slurmctld up? `scontrol ping`; or use --scheduler local",
        ) from None


def _query(
    argv: Sequence[str], env: dict[str, str] | None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str] | None:
    """Run a read-only Slurm command; None when it cannot run or does not answer in time."""
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, env=_env(env), timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def array_spec(tasks: Sequence[int], concurrency: int) -> str:
    """``--array`` value for ``tasks``: ranges joined by commas, ``%concurrency`` throttle."""
    ordered = sorted(set(tasks))
    parts: list[str] = []
    start = prev = ordered[0]
    for t in ordered[1:]:
        if t == prev + 1:
            prev = t
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        start = prev = t
    parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(parts) + f"%{max(1, concurrency)}"


def parse_job_id(stdout: str) -> str:
    """The job id of ``sbatch --parsable`` output (``ID`` or ``ID;cluster``)."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise TransferError(f"sbatch printed no job id: {stdout.strip()!r}")
    return job_id


def follow_up_commands(job_id: str) -> list[str]:
    """The commands a user wants for watching or throttling job ``job_id``."""
    return [
        f"squeue -j {job_id}",
        f"sacct -j {job_id} --format=JobID,State,Elapsed,ExitCode",
        f"scontrol update JobId={job_id} ArrayTaskThrottle=N",
        f"scancel {job_id}",
    ]


class SlurmOptions(msgspec.Struct, forbid_unknown_fields=True):
    """``-O NAME=VALUE`` options of the slurm scheduler."""

    #: More sbatch options (``--sbatch-extras``): ``--account=x --qos=y`` or ``#SBATCH`` lines.
    extras: str = ""


#: Slurm's state words (squeue/sacct; sacct appends "by UID" to CANCELLED).
STATES = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "SUSPENDED": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "CONFIGURING": JobState.RUNNING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "COMPLETED": JobState.ENDED,
    "FAILED": JobState.ENDED,
    "TIMEOUT": JobState.ENDED,
    "OUT_OF_MEMORY": JobState.ENDED,
    "DEADLINE": JobState.ENDED,
    "SPECIAL_EXIT": JobState.ENDED,
    "BOOT_FAIL": JobState.ENDED,
    "CANCELLED": JobState.CANCELLED,
    "NODE_FAIL": JobState.CANCELLED,
    "PREEMPTED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
}

PENDING_HELP = {
    "PartitionConfig": "the request never fits the partition (CPUs, memory, time): "
    "re-render with smaller --cpus-per-task / --mem / --time-limit, or another --partition",
    "PartitionNodeLimit": "the request never fits the partition's nodes: "
    "re-render with smaller --cpus-per-task / --mem",
    "PartitionTimeLimit": "--time-limit exceeds the partition's MaxTime: re-render with less",
    "Resources": "waiting for free CPUs or memory",
    "Priority": "other jobs come first",
    "JobArrayTaskLimit": "the array's throttle (--array-concurrency) is reached",
    "BeginTime": "a requeued task waits a few seconds before it runs again",
    "ReqNodeNotAvail": "the nodes it needs are down or reserved",
}


class SlurmScheduler(Scheduler):
    """Submit a run as a Slurm job array."""

    name = "slurm"
    description = "sbatch job arrays (%throttle, requeue, MaxArraySize-aware)"
    Options = SlurmOptions

    def job_files(
        self, run_dir: Path, resolved: ResolvedConfig, options: SlurmOptions
    ) -> dict[str, str]:
        """``sbatch_array.sh`` (the array job) and ``submit.sh`` (submit it by hand)."""
        return {
            "sbatch_array.sh": render_sbatch(run_dir, resolved, options),
            "submit.sh": render_submit(run_dir),
        }

    def job_state(self, word: str) -> JobState:
        return STATES.get(word.split(" ")[0], JobState.UNKNOWN)

    def pending_help(self, reason: str) -> str | None:
        return PENDING_HELP.get(reason)

    def cancel(self, job_ids: Sequence[str], env: dict[str, str] | None = None) -> None:
        """``scancel`` the jobs (every array task); a worker records .fail "interrupted"."""
        if not job_ids:
            return
        proc = _run(["scancel", *job_ids], env)
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise TransferError(f"scancel failed: {err[-1] if err else proc.returncode}")

    def cancel_hint(self, job_ids: Sequence[str]) -> str:
        return f"cancel it first: scancel {' '.join(job_ids)}"

    def check(self) -> Availability:
        if shutil.which("sbatch") is None:
            return Availability(False, "sbatch: not on PATH")
        return AVAILABLE

    def reachable(self, env: dict[str, str] | None = None) -> Availability:
        avail = self.check()
        if not avail.ok:
            return avail
        proc = _query(["scontrol", "ping"], env, timeout=5)
        if proc is None:
            return Availability(False, "scontrol ping: no answer within 5 s")
        if proc.returncode != 0 or "UP" not in proc.stdout:
            text = (proc.stdout + proc.stderr).strip().splitlines()
            return Availability(False, f"slurmctld not reachable: {text[-1] if text else '?'}")
        return Availability(True, "slurmctld answers")

    def max_tasks(self, env: dict[str, str] | None = None) -> int | None:
        """``MaxArraySize`` from ``scontrol show config``; Slurm's default (1001) when
        Slurm cannot be asked."""
        if shutil.which("scontrol") is None:
            return DEFAULT_MAX_ARRAY_SIZE
        proc = _query(["scontrol", "show", "config"], env)
        if proc is None:
            return DEFAULT_MAX_ARRAY_SIZE
        match = re.search(r"^MaxArraySize\s*=\s*(\d+)", proc.stdout, re.MULTILINE)
        return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE

    def submit(
        self,
        run_dir: Path,
        shard_indices: Sequence[int],
        concurrency: int,
        options: SubmitOptions,
    ) -> Submission:
        """``sbatch --parsable --array=TASKS%C sbatch_array.sh`` from the run dir."""
        resolved = load_resolved(run_dir)
        tasks = tasks_for_shards(shard_indices, resolved.tasks)
        warning = fit_warning(resolved.partition, resolved.cpus_per_task, resolved.mem, options.env)
        if warning:
            from xfer_core.output import current

            current().warn(warning)
        env = submit_env(options.env)
        argv = [
            "sbatch",
            "--parsable",
            export_option(env),
            f"--array={array_spec(tasks, concurrency)}",
            *options.extra_args,
            "sbatch_array.sh",
        ]
        proc = _run(argv, env, cwd=run_dir, inherit=False)
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise TransferError(
                f"sbatch failed (exit {proc.returncode}): {err[-1] if err else 'no message'}",
                hint="check the partition, time limit and memory against `sinfo`",
            )
        job_id = parse_job_id(proc.stdout)
        submission = Submission(
            scheduler=self.name,
            job_id=job_id,
            shards=sorted(shard_indices),
            tasks=tasks,
            finished=False,
            hints=follow_up_commands(job_id),
        )
        return submission

    def queue_info(
        self, job_ids: Sequence[str], env: dict[str, str] | None = None
    ) -> list[JobInfo]:
        """Array tasks of ``job_ids`` still in ``squeue`` (pending ranges expanded)."""
        if not job_ids or shutil.which("squeue") is None:
            return []
        proc = _query(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%F|%K|%T|%r|%M"], env)
        if proc is None:
            return []
        out = []
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) != 5:
                continue
            job, task, state, reason, elapsed = parts
            out.append(
                JobInfo(
                    job_id=job,
                    task=int(task) if task.isdigit() else None,
                    state=state,
                    reason=reason if reason != "None" else "",
                    elapsed=_seconds(elapsed),
                )
            )
        return out


_MEM_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def mem_mb(text: str) -> float | None:
    """Slurm's ``--mem`` value (``8G``, ``100M``, ``4000``: MB by default) in MB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)B?", text.strip().upper())
    if not match:
        return None
    return float(match.group(1)) * _MEM_UNITS[match.group(2) or "M"]


def fit_warning(
    partition: str | None, cpus: int, mem: str, env: dict[str, str] | None = None
) -> str | None:
    """Why an array task asking ``cpus`` and ``mem`` can never start on ``partition``
    (default: Slurm's default partition), from ``sinfo``'s nodes; None when it fits
    or Slurm cannot be asked."""
    proc = _query(["sinfo", "-h", "-N", "-o", "%P|%c|%m"], env, timeout=5)
    if proc is None or proc.returncode != 0:
        return None
    nodes = []
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        name = parts[0].rstrip("*")
        if name == partition or (partition is None and parts[0].endswith("*")):
            nodes.append((int(parts[1]), int(parts[2])))
    wanted = mem_mb(mem)
    if not nodes or wanted is None:
        return None
    if any(c >= cpus and m >= wanted for c, m in nodes):
        return None
    label = partition or "the default partition"
    best_cpus, best_mem = max(c for c, _ in nodes), max(m for _, m in nodes)
    return (
        f"--cpus-per-task {cpus} --mem {mem} never fits a node of {label} (the largest has "
        f"{best_cpus} CPUs, {best_mem} MB): the array stays pending (PartitionConfig); "
        "pass smaller --cpus-per-task / --mem (the defaults are 4 and 8G)"
    )


def _seconds(text: str) -> float | None:
    """Slurm's ``[D-]HH:MM:SS`` / ``MM:SS`` as seconds."""
    days = 0
    if "-" in text:
        d, _, text = text.partition("-")
        if not d.isdigit():
            return None
        days = int(d)
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        return None
    total = 0
    for p in parts:
        total = total * 60 + p
    return float(days * 86400 + total)


# --- job files -----------------------------------------------------------------------

_JOB_NAME = re.compile(r"[A-Za-z0-9_.+@=-]{1,200}")
_PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|(\d+-\d+)|UNLIMITED|INFINITE|infinite|unlimited")
_MEM = re.compile(r"\d+[KMGT]?")


def _check_sbatch_value(flag: str, value: str, pattern: re.Pattern[str], example: str) -> str:
    if not pattern.fullmatch(value):
        raise ConfigError(
            f"{flag} {value!r} is not accepted in an #SBATCH line",
            hint=f"use a value like {example}",
        )
    return value


_SBATCH_NAME = re.compile(r"--?[A-Za-z][A-Za-z0-9-]*")
_SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:@%+/=*\[\]-]*")
#: Options xfer sets itself (the array and its throttle, the log path, the environment).
_SBATCH_OWN = frozenset({"--array", "-a", "--export", "--output", "-o", "--wrap"})


def sbatch_extra_options(text: str) -> list[str]:
    """``--sbatch-extras`` as ``--name=value`` options, one per ``#SBATCH`` line.

    Takes ``--account=proj --qos high`` or upstream's ``#SBATCH --account=proj\\n#SBATCH
    --qos=high`` (a literal ``\\n`` is a line break, as upstream reads it). Values are
    limited to characters that cannot end the directive or reach a shell.
    """
    words: list[str] = []
    for raw in text.replace("\\n", "\n").splitlines():
        line = raw.strip()
        if line.startswith("#SBATCH"):
            line = line[len("#SBATCH") :]
        elif line.startswith("#"):
            continue
        try:
            words += shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f"--sbatch-extras {text!r}: {exc}") from None
    options: list[str] = []
    for word in words:
        if not word.startswith("-") and options and "=" not in options[-1]:
            options[-1] += f"={word}"  # "--qos high"
            continue
        options.append(word)
    for option in options:
        name, _, value = option.partition("=")
        if not _SBATCH_NAME.fullmatch(name) or not _SBATCH_VALUE.fullmatch(value):
            raise ConfigError(
                f"--sbatch-extras: {option!r} is not an sbatch option xfer can write",
                hint="write options as --name=value, e.g. --account=proj --qos=high",
            )
        if name in _SBATCH_OWN:
            raise ConfigError(
                f"--sbatch-extras: {name} is set by xfer itself",
                hint="--array-concurrency sets the throttle; logs go to RUN/logs",
            )
    return options


#: The functions worker.sh calls to requeue an array task (see xfer_core.bulk.scheduler).
WORKER_HOOKS = """\
# for worker.sh: this array task's id when it runs task $1, and how to requeue it
xfer_task_id() {
    [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && [ "${SLURM_ARRAY_TASK_ID:-}" = "$1" ] || return 1
    printf '%s_%s\\n' "$SLURM_ARRAY_JOB_ID" "$SLURM_ARRAY_TASK_ID"
}
xfer_requeue() { scontrol requeue "$1"; }
"""


def render_sbatch(run_dir: Path, resolved: ResolvedConfig, options: SlurmOptions) -> str:
    """``sbatch_array.sh``: the array job; each task sources ``worker.sh --task $SLURM_ARRAY_TASK_ID``."""
    job_name = _check_sbatch_value("--job-name", resolved.job_name, _JOB_NAME, "xfer-run1")
    time_limit = _check_sbatch_value("--time-limit", resolved.time_limit, _TIME, "24:00:00")
    mem = _check_sbatch_value("--mem", resolved.mem, _MEM, "8G")
    tasks = resolved.tasks
    concurrency = min(resolved.array_concurrency, tasks)
    lines = [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{tasks - 1}%{concurrency}",
        f"#SBATCH --time={time_limit}",
    ]
    if resolved.partition:
        part = _check_sbatch_value("--partition", resolved.partition, _PARTITION, "transfer")
        lines.append(f"#SBATCH --partition={part}")
    lines += [f"#SBATCH {option}" for option in sbatch_extra_options(options.extras)]
    lines += [
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={int(resolved.cpus_per_task)}",
        f"#SBATCH --mem={mem}",
        f"#SBATCH --output={_log_pattern(run_dir)}",
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:USR1@{int(resolved.signal_seconds)}",
        "# Generated by xfer. Submit with submit.sh, `xfer slurm submit`, or sbatch:",
        "#   sbatch RUN_DIR/sbatch_array.sh",
        "# `xfer slurm submit` submits only the tasks whose shards are not done.",
        "# The batch shell runs worker.sh itself, so USR1 (time limit) reaches its trap.",
        WORKER_HOOKS,
        f'. {sh(str(run_dir / "worker.sh"))} --task "$SLURM_ARRAY_TASK_ID"',
        "",
    ]
    return "\n".join(lines)


_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+-]+")


def _log_pattern(run_dir: Path) -> str:
    """Slurm's output path: absolute, so ``sbatch RUN/sbatch_array.sh`` works from anywhere
    (upstream's habit); relative to the run dir when the path has characters an
    ``#SBATCH`` line cannot carry (then submit from the run dir, as submit.sh does)."""
    path = f"{run_dir}/logs/slurm-%A_%a.out"
    return path if _PLAIN_PATH.fullmatch(str(run_dir)) else "logs/slurm-%A_%a.out"


def render_submit(run_dir: Path) -> str:
    """``submit.sh``: submit (or re-submit) the whole array by hand."""
    return "\n".join(
        [
            "#!/usr/bin/env bash",
            "# Submit this run's array job; tasks whose shards are done exit at once.",
            "# `xfer slurm submit --run-dir RUN` submits only tasks with work left and",
            "# records the job id in jobs.json. Extra arguments go to sbatch.",
            "set -euo pipefail",
            f"cd -- {sh(str(run_dir))}",
            'exec sbatch --parsable "$@" sbatch_array.sh',
            "",
        ]
    )


@hookimpl
def register_schedulers(register: Callable[[Scheduler], None]) -> None:
    register(SlurmScheduler())
