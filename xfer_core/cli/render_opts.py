"""The options of a rendered run (worker, runtime, batch resources), declared once.

Batch resources (job name, time limit, partition/queue, CPUs, memory) are what every
batch scheduler asks for; each scheduler writes them into its own job files. What
only one scheduler knows is its own option (``-O NAME=VALUE``, declared by the
plugin's ``Options``). ``xfer run`` and ``xfer slurm render`` take the same options with the same names and
help. :func:`with_render_options` adds them to a command's signature and hands the
command one :class:`~xfer_core.bulk.render.RenderOptions` built from them, so a new
option is declared and mapped here only.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from xfer_core.bulk.render import RenderOptions

WORKER = "Worker options"
BATCH = "Batch scheduler options"

RunDir = Annotated[
    Path, typer.Option("--run-dir", "-r", help="The run dir (holds manifest, shards/, state/).")
]

#: Every command that acts on roots read from a manifest or shards.meta.json takes it.
TrustRootsOption = Annotated[
    bool,
    typer.Option(
        "--trust-manifest-roots",
        help="Accept rclone connection strings (`:backend,opt=…:`, `name,opt=…:`) as roots "
        "read from the manifest; without it only local paths and remote:path (docs/security.md).",
    ),
]


def _declared(
    array_concurrency: Annotated[
        int,
        typer.Option(
            "--array-concurrency",
            "-C",
            min=1,
            help="Shards running at once (%C).",
            rich_help_panel=WORKER,
        ),
    ] = 16,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="host | pyxis | enroot | apptainer | podman | docker "
            "(default: pyxis with --rclone-image, else host).",
            rich_help_panel=WORKER,
        ),
    ] = None,
    rclone_image: Annotated[
        str | None,
        typer.Option(
            "--rclone-image",
            help="Container image with rclone (container runtimes).",
            rich_help_panel=WORKER,
        ),
    ] = None,
    rclone_config: Annotated[
        Path | None,
        typer.Option(
            "--rclone-config",
            help="rclone.conf with the remotes (mode 0600; mounted read-only, never copied).",
            rich_help_panel=WORKER,
        ),
    ] = None,
    rclone_flags: Annotated[
        str | None,
        typer.Option(
            "--rclone-flags",
            help='Extra rclone flags, one string: "--transfers 32 ...".',
            rich_help_panel=WORKER,
        ),
    ] = None,
    split_transfers: Annotated[
        bool,
        typer.Option(
            "--split-transfers/--no-split-transfers",
            help="On the local scheduler, --transfers/--checkers of --rclone-flags are this "
            "machine's total, split across the shards running at once (16 transfers, 2 at a "
            "time: 8 each; at least 1); --no-split-transfers gives each shard the full "
            "value. A batch scheduler's tasks (each its own allocation) always get the full value.",
            rich_help_panel=WORKER,
        ),
    ] = True,
    engine: Annotated[
        str,
        typer.Option(
            "--engine", help="Shard engine plugin (default rclone).", rich_help_panel=WORKER
        ),
    ] = "rclone",
    verify: Annotated[
        str,
        typer.Option(
            "--verify",
            help="hash: size + hash where both sides have one (default); size: sizes only; "
            "check: hash, and list the destination again after the copy (rclone check).",
            rich_help_panel=WORKER,
        ),
    ] = "hash",
    max_attempts: Annotated[
        int,
        typer.Option(
            "--max-attempts",
            min=1,
            help="Attempts per shard per submission.",
            rich_help_panel=WORKER,
        ),
    ] = 3,
    job_name: Annotated[
        str, typer.Option("--job-name", help="Job name.", rich_help_panel=BATCH)
    ] = "xfer",
    time_limit: Annotated[
        str,
        typer.Option(
            "--time-limit",
            help="Time limit per array task ([D-]HH:MM:SS); the worker gets USR1 shortly "
            "before it and requeues its task while attempts are left.",
            rich_help_panel=BATCH,
        ),
    ] = "24:00:00",
    partition: Annotated[
        str | None,
        typer.Option(
            "--partition", help="Partition (Slurm) or queue of the job.", rich_help_panel=BATCH
        ),
    ] = None,
    cpus_per_task: Annotated[
        int,
        typer.Option("--cpus-per-task", min=1, help="CPUs per array task.", rich_help_panel=BATCH),
    ] = 4,
    mem: Annotated[
        str,
        typer.Option("--mem", help="Memory per array task (e.g. 8G).", rich_help_panel=BATCH),
    ] = "8G",
    max_array_size: Annotated[
        int | None,
        typer.Option(
            "--max-array-size",
            min=1,
            help="Most array tasks per submission (default: the scheduler's limit, e.g. "
            "Slurm's MaxArraySize); above it each task runs several shards.",
            rich_help_panel=BATCH,
        ),
    ] = None,
    scheduler_option: Annotated[
        list[str] | None,
        typer.Option(
            "--scheduler-option",
            "-O",
            metavar="NAME=VALUE",
            help="An option of the scheduler plugin (repeatable), e.g. -O extras='--qos=high' "
            "for slurm; `xfer plugins --json` lists each scheduler's options.",
            rich_help_panel=BATCH,
        ),
    ] = None,
    sbatch_extras: Annotated[
        str,
        typer.Option(
            "--sbatch-extras",
            help="Upstream xfer's name of -O extras=... (slurm): '--account=proj --qos=high' "
            "or '#SBATCH --account=proj\\n#SBATCH --qos=high'.",
            rich_help_panel=BATCH,
        ),
    ] = "",
    pyxis_extra: Annotated[
        str,
        typer.Option(
            "--pyxis-extra",
            help="More srun flags for the pyxis runtime, e.g. '--container-writable' "
            "(placed after `srun`).",
            rich_help_panel=WORKER,
        ),
    ] = "",
    container_conf_path: Annotated[
        str | None,
        typer.Option(
            "--container-conf-path",
            "--rclone-conf-in-container",
            help="Accepted for upstream xfer; not needed: the rclone.conf is mounted at its own "
            "path in the container and passed with --config.",
            rich_help_panel=WORKER,
        ),
    ] = None,
) -> None:
    """Only a signature: the shared options as Typer reads them (copied into commands)."""


SHARED = tuple(inspect.signature(_declared, eval_str=True).parameters.values())


CONF_PATH_NOTE = (
    "xfer mounts rclone.conf read-only at its own path in the container and passes it with "
    "--config, so no in-container path is needed"
)


def mapped(flag: str, value: object, how: str) -> None:
    """Say in one line that an upstream flag was accepted and what xfer does instead."""
    from xfer_core.output import current

    current().info(f"{flag} {value}: accepted for upstream xfer; {how}")


def render_options(values: dict[str, Any]) -> RenderOptions:
    """The :class:`RenderOptions` of the shared options' values (by parameter name)."""
    from xfer_core.bulk.render import RenderOptions, check_batch_values

    config = values["rclone_config"]
    conf_path = values.pop("container_conf_path")
    if conf_path is not None:
        mapped("--container-conf-path", conf_path, CONF_PATH_NOTE)
    sched_options = scheduler_options(values.pop("scheduler_option") or [])
    extras = values.pop("sbatch_extras")
    if extras:
        sched_options.setdefault("extras", extras)
    values["scheduler_options"] = sched_options
    options = RenderOptions(
        **{
            **values,
            "rclone_config": str(config) if config else None,
            "rclone_flags": values["rclone_flags"] or "",
        }
    )
    check_batch_values(options)  # before anything is listed or written
    return options


def scheduler_options(pairs: list[str]) -> dict[str, str]:
    """``-O NAME=VALUE`` options as a dict (checked later against the scheduler's Options)."""
    from xfer_core.errors import ConfigError

    found: dict[str, str] = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or not name.isidentifier():
            raise ConfigError(
                f"--scheduler-option {pair!r}: write NAME=VALUE", hint="e.g. -O extras=--qos=high"
            )
        found[name] = value
    return found


def with_render_options(**defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the shared options; it receives them as ``render: RenderOptions``.

    ``defaults`` changes a default for this command (``array_concurrency=4``). The
    command's own options come first in ``--help``, then the shared ones.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(func).parameters
        unknown = set(defaults) - {p.name for p in SHARED}
        if unknown or "render" not in own:
            raise TypeError(f"{func.__name__}: unknown options {unknown} or no `render` parameter")
        shared = [p.replace(default=defaults.get(p.name, p.default)) for p in SHARED]
        # the command's annotations are strings (postponed); `render`'s type is only
        # imported for type checkers, so evaluate the others one by one, as Typer would
        mine = [
            p.replace(annotation=eval(p.annotation, func.__globals__))
            if isinstance(p.annotation, str)
            else p
            for p in own.values()
            if p.name != "render"
        ]
        params = [*mine, *shared]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {p.name: kwargs.pop(p.name) for p in shared}
            return func(**kwargs, render=render_options(values))

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        # Typer also reads get_type_hints(): give it the evaluated annotations
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
