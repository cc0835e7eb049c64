"""``xfer slurm render`` and ``xfer slurm submit``: a run dir's scripts, and its job array."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xfer_core.cli.render_opts import RunDir, TrustRootsOption, with_render_options

if TYPE_CHECKING:
    from xfer_core.bulk.render import RenderOptions
    from xfer_core.bulk.scheduler import Submission

batch_app = typer.Typer(
    name="slurm",
    help="Render a run dir's Slurm scripts and submit its job array.",
    no_args_is_help=True,
)


@batch_app.command("render")
@with_render_options()
def render_cmd(
    run_dir: RunDir,
    num_shards: Annotated[
        int | None,
        typer.Option("--num-shards", "-n", min=1, help="Expected shard count (checked)."),
    ] = None,
    source_root: Annotated[
        str | None,
        typer.Option(
            "--source-root", help="Source root (default: from --manifest, else from the shards)."
        ),
    ] = None,
    dest_root: Annotated[
        str | None,
        typer.Option(
            "--dest-root", help="Dest root (default: from --manifest, else from the shards)."
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="Manifest to read the roots from (e.g. after `xfer manifest rebase`).",
            dir_okay=False,
        ),
    ] = None,
    trust_manifest_roots: TrustRootsOption = False,
    *,
    render: RenderOptions,
) -> None:
    """Write worker.sh, the slurm plugin's job files and config.resolved.json into the run dir.

    The run dir must hold shards (`xfer manifest shard --outdir RUN/shards`). With more
    shards than MaxArraySize, each array task runs several shards. The roots come from
    shards/shards.meta.json and must be local paths or remote:path (see
    --trust-manifest-roots); they are printed.

    Example:

        xfer slurm render --run-dir run --num-shards 512 --array-concurrency 96 \\
            --job-name s3-xfer --time-limit 24:00:00 --partition transfer \\
            --cpus-per-task 4 --mem 8G --rclone-image rclone/rclone:latest \\
            --rclone-config ~/.config/rclone/rclone.conf
    """
    import msgspec

    from xfer_core.bulk.render import render_run
    from xfer_core.output import current

    out = current()
    if manifest is not None and (source_root is None or dest_root is None):
        from xfer_core.bulk.pipeline import manifest_roots
        from xfer_core.errors import ManifestError

        roots = manifest_roots(manifest)
        if roots is None:
            raise ManifestError(
                f"{manifest}: no record to read the source/dest roots from",
                hint="pass --source-root and --dest-root",
            )
        from xfer_core.manifest.roots import check_manifest_roots

        # roots read from a file are untrusted (a connection string can run commands)
        check_manifest_roots(
            str(manifest),
            {
                field: root
                for field, root, given in (
                    ("source_root", roots[0], source_root),
                    ("dest_root", roots[1], dest_root),
                )
                if given is None
            },
            trusted=trust_manifest_roots,
        )
        source_root, dest_root = source_root or roots[0], dest_root or roots[1]
    if (source_root is None) != (dest_root is None):
        from xfer_core.errors import ConfigError

        raise ConfigError("give both --source-root and --dest-root (or --manifest)")
    resolved = render_run(
        run_dir,
        msgspec.structs.replace(
            render,
            num_shards=num_shards,
            source_root=source_root,
            dest_root=dest_root,
            trust_manifest_roots=trust_manifest_roots,
            scheduler="slurm",
        ),
    )
    if out.json:
        out.emit_json({"event": "rendered", **msgspec.to_builtins(resolved)})
        return
    root = Path(resolved.run_dir)
    out.info(
        f"rendered {root}: {resolved.num_shards} shards in {resolved.tasks} array tasks "
        f"(runtime {resolved.runtime}: {resolved.runtime_reason}; engine {resolved.engine})"
    )
    out.info(f"  roots: {resolved.source_root} -> {resolved.dest_root}")
    for name in ("worker.sh", *resolved.job_files, "config.resolved.json"):
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


@batch_app.command("submit")
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

    Prints the job id (stdout) and the slurm plugin's commands to watch, throttle and
    cancel it; the id is recorded in RUN/jobs.json. Submitting again resubmits only unfinished shards.

    Example:

        xfer slurm submit --run-dir run
    """
    from xfer_core.bulk.submit import submit_run

    sub = submit_run(run_dir, "slurm", concurrency=array_concurrency)
    print_submission(sub, run_dir.resolve())


def register(app: typer.Typer) -> None:
    """Add the ``slurm`` group."""
    app.add_typer(batch_app)
