"""``xfer slurm render`` and ``xfer slurm submit``: a run dir's scripts, and its job array."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from xfer_core.bulk.render import RenderOptions
    from xfer_core.bulk.scheduler import Submission

slurm_app = typer.Typer(
    name="slurm",
    help="Render a run dir's Slurm scripts and submit its job array.",
    no_args_is_help=True,
)

# Options shared with `xfer run` (same names, same defaults).
RunDir = Annotated[
    Path, typer.Option("--run-dir", "-r", help="The run dir (holds manifest, shards/, state/).")
]
Concurrency = Annotated[
    int, typer.Option("--array-concurrency", "-C", min=1, help="Shards running at once (%C).")
]
JobName = Annotated[str, typer.Option("--job-name", help="Slurm job name.")]
TimeLimit = Annotated[
    str, typer.Option("--time-limit", help="Slurm time limit per array task (--time).")
]
Partition = Annotated[str | None, typer.Option("--partition", help="Slurm partition.")]
Cpus = Annotated[int, typer.Option("--cpus-per-task", min=1, help="CPUs per array task.")]
Mem = Annotated[str, typer.Option("--mem", help="Memory per array task (e.g. 8G).")]
Image = Annotated[
    str | None,
    typer.Option("--rclone-image", help="Container image with rclone (container runtimes)."),
]
RcloneConfig = Annotated[
    Path | None,
    typer.Option(
        "--rclone-config",
        help="rclone.conf with the remotes (mode 0600; mounted read-only, never copied).",
    ),
]
RcloneFlags = Annotated[
    str | None,
    typer.Option("--rclone-flags", help='Extra rclone flags, one string: "--transfers 32 ...".'),
]
Runtime = Annotated[
    str | None,
    typer.Option(
        "--runtime",
        help="host | pyxis | enroot | apptainer | podman | docker "
        "(default: pyxis with --rclone-image, else host).",
    ),
]
MaxAttempts = Annotated[
    int, typer.Option("--max-attempts", min=1, help="Attempts per shard per submission.")
]
Engine = Annotated[str, typer.Option("--engine", help="Shard engine plugin (default rclone).")]
Verify = Annotated[
    str,
    typer.Option(
        "--verify",
        help="hash: size + hash where both sides have one (default); size: sizes only.",
    ),
]
MaxArraySize = Annotated[
    int | None,
    typer.Option(
        "--max-array-size",
        min=1,
        help="Override Slurm's MaxArraySize (default: from `scontrol show config`, else 1001).",
    ),
]


def render_options(
    *,
    num_shards: int | None,
    array_concurrency: int,
    job_name: str,
    time_limit: str,
    partition: str | None,
    cpus_per_task: int,
    mem: str,
    rclone_image: str | None,
    rclone_config: Path | None,
    rclone_flags: str | None,
    runtime: str | None,
    max_attempts: int,
    engine: str,
    verify: str,
    max_array_size: int | None,
) -> RenderOptions:
    """The :class:`RenderOptions` of the command-line options."""
    from xfer_core.bulk.render import RenderOptions

    return RenderOptions(
        num_shards=num_shards,
        array_concurrency=array_concurrency,
        job_name=job_name,
        time_limit=time_limit,
        partition=partition,
        cpus_per_task=cpus_per_task,
        mem=mem,
        rclone_image=rclone_image,
        rclone_config=str(rclone_config) if rclone_config else None,
        rclone_flags=rclone_flags or "",
        runtime=runtime,
        max_attempts=max_attempts,
        engine=engine,
        verify=verify,
        max_array_size=max_array_size,
    )


@slurm_app.command("render")
def render_cmd(
    run_dir: RunDir,
    num_shards: Annotated[
        int | None,
        typer.Option("--num-shards", "-n", min=1, help="Expected shard count (checked)."),
    ] = None,
    array_concurrency: Concurrency = 16,
    job_name: JobName = "xfer",
    time_limit: TimeLimit = "24:00:00",
    partition: Partition = None,
    cpus_per_task: Cpus = 4,
    mem: Mem = "8G",
    rclone_image: Image = None,
    rclone_config: RcloneConfig = None,
    rclone_flags: RcloneFlags = None,
    runtime: Runtime = None,
    max_attempts: MaxAttempts = 3,
    engine: Engine = "rclone",
    verify: Verify = "hash",
    max_array_size: MaxArraySize = None,
) -> None:
    """Write worker.sh, sbatch_array.sh, submit.sh and config.resolved.json into the run dir.

    The run dir must hold shards (`xfer manifest shard --outdir RUN/shards`). With more
    shards than MaxArraySize, each array task runs several shards.

    Example:

        xfer slurm render --run-dir run --num-shards 512 --array-concurrency 96 \\
            --job-name s3-xfer --time-limit 24:00:00 --partition transfer \\
            --cpus-per-task 4 --mem 8G --rclone-image rclone/rclone:latest \\
            --rclone-config ~/.config/rclone/rclone.conf
    """
    from xfer_core.bulk.render import render_run
    from xfer_core.output import current

    out = current()
    resolved = render_run(
        run_dir,
        render_options(
            num_shards=num_shards,
            array_concurrency=array_concurrency,
            job_name=job_name,
            time_limit=time_limit,
            partition=partition,
            cpus_per_task=cpus_per_task,
            mem=mem,
            rclone_image=rclone_image,
            rclone_config=rclone_config,
            rclone_flags=rclone_flags,
            runtime=runtime,
            max_attempts=max_attempts,
            engine=engine,
            verify=verify,
            max_array_size=max_array_size,
        ),
    )
    if out.json:
        import msgspec

        out.emit_json({"event": "rendered", **msgspec.to_builtins(resolved)})
        return
    root = Path(resolved.run_dir)
    out.info(
        f"rendered {root}: {resolved.num_shards} shards in {resolved.tasks} array tasks "
        f"(runtime {resolved.runtime}, engine {resolved.engine})"
    )
    for name in ("worker.sh", "sbatch_array.sh", "submit.sh", "config.resolved.json"):
        out.info(f"  {root / name}")
    out.info(f"next: xfer slurm submit --run-dir {root}")


def print_submission(sub: Submission | None, run_dir: Path) -> None:
    """Tell the user what was submitted and the commands to follow it."""
    from xfer_core.output import current

    out = current()
    if sub is None:
        out.event("submitted", job_id=None, shards=[], message="every shard is done")
        out.info(f"{run_dir}: every shard is done; nothing to submit")
        return
    if out.json:
        out.event(
            "submitted",
            scheduler=sub.scheduler,
            job_id=sub.job_id,
            shards=sub.shards,
            tasks=sub.tasks,
            commands=sub.hints,
        )
        return
    print(sub.job_id)
    out.info(
        f"submitted job {sub.job_id}: {len(sub.shards)} shards in {len(sub.tasks)} array tasks"
    )
    for cmd in sub.hints:
        out.info(f"  {cmd}")
    out.info(f"  xfer status --run-dir {run_dir}")


@slurm_app.command("submit")
def submit_cmd(
    run_dir: RunDir,
    array_concurrency: Annotated[
        int | None,
        typer.Option(
            "--array-concurrency", "-C", min=1, help="Override the rendered throttle (%C)."
        ),
    ] = None,
) -> None:
    """Submit the run dir's job array: only tasks whose shards are not done.

    Prints the job id (stdout) and the squeue / sacct / scontrol commands for it; the
    id is recorded in RUN/jobs.json. Submitting again resubmits only unfinished shards.

    Example:

        xfer slurm submit --run-dir run
    """
    from xfer_core.bulk.submit import submit_run

    sub = submit_run(run_dir, "slurm", concurrency=array_concurrency)
    print_submission(sub, run_dir.resolve())


def register(app: typer.Typer) -> None:
    """Add the ``slurm`` group."""
    app.add_typer(slurm_app)
