"""``xfer run``: build → analyze → shard → render, and with ``--submit`` run it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xfer_core.cli.batch_cmd import print_submission
from xfer_core.cli.render_opts import RunDir, with_render_options
from xfer_core.output import human_bytes

if TYPE_CHECKING:
    from xfer_core.bulk.render import RenderOptions
    from xfer_core.output import Output


def _stage_printer(out: Output) -> Callable[[str, dict[str, object]], None]:
    def on_stage(name: str, details: dict[str, object]) -> None:
        out.event(name, **details)
        if name == "manifest":
            if details.get("reused"):
                out.info(
                    f"manifest: reusing {details['path']} (same source and dest; "
                    "--rebuild lists the source again)"
                )
            else:
                out.info(
                    f"manifest: {details['objects']} objects, "
                    f"{human_bytes(float(details['bytes']))} listed in {details['seconds']} s"  # type: ignore[arg-type]
                )
                if "to_send" in details:
                    out.info(
                        f"diff: {details['to_send']} of them missing or different at the "
                        "destination"
                    )
        elif name == "dest_listing" and not details["listed"]:
            out.info(f"destination: not listed ({details['error']}); each shard looks it up")
        elif name == "dest_listing":
            out.info(
                f"destination: listed once ({details['missing']:,} of {details['objects']:,} "
                "objects missing there), cheaper than the shards' own lookups "
                f"(~{details['plain_lookups']:,} of {details['plain_requests']:,} requests); "
                "--no-diff-dest keeps them"
            )
        elif name == "analyze":
            out.info(
                f"analyze: profile {details['profile']}, "
                f"suggested {details['suggested_shards']} shards"
            )
        elif name == "shard":
            out.info(f"shard: {details['shards']} shards (imbalance {details['imbalance']})")
        elif name == "render":
            why = details.get("runtime_reason")
            out.info(
                f"render: runtime {details['runtime']}{f' ({why})' if why else ''}, "
                f"engine {details['engine']}, {details['tasks']} tasks"
            )
        elif name == "plan":
            from xfer_core.bulk.plan import load_plan, plan_lines

            plan = load_plan(Path(str(details["run_dir"])))
            for line in plan_lines(plan) if plan is not None else []:
                out.info(line)

    return on_stage


def summarize_local(run_dir: Path, started: float) -> int:
    """Print the outcome of a finished local run; the exit code (0 all done, 1 otherwise)."""
    from xfer_core.bulk.state import load_run_state
    from xfer_core.output import current

    out = current()
    state = load_run_state(run_dir)
    t = state.totals
    seconds = time.monotonic() - started
    failed = [s for s in state.shards if s.status != "done"]
    out.event(
        "summary",
        run_dir=str(run_dir),
        shards=t.shards,
        done=t.done,
        failed=len(failed),
        objects=t.records_done,
        bytes=t.bytes_done,
        seconds=round(seconds, 3),
        failures=[{"shard": s.index, "reason": s.last_error} for s in failed],
    )
    if not out.json:
        rate = t.bytes_done / seconds if seconds > 0 else 0.0
        line = (
            f"{t.done}/{t.shards} shards done: {t.records_done} objects, "
            f"{human_bytes(t.bytes_done)} in {seconds:.1f} s ({human_bytes(rate)}/s)"
        )
        out.info(line)
        for s in failed[:20]:
            out.info(f"  shard {s.index}: {s.status}: {s.last_error or 'not run'}")
        if failed:
            out.info(f"details: xfer status --run-dir {run_dir}; logs in {run_dir / 'logs'}")
    return 0 if not failed else 1


@with_render_options(array_concurrency=4)
def run_cmd(
    run_dir: RunDir = Path("run"),
    source: Annotated[
        str | None,
        typer.Option("--source", "-s", help="Local dir or rclone remote:path to copy from."),
    ] = None,
    dest: Annotated[
        str | None,
        typer.Option("--dest", "-d", help="Local dir or rclone remote:path to copy to."),
    ] = None,
    num_shards: Annotated[
        int | None,
        typer.Option(
            "--num-shards",
            "-n",
            min=1,
            help="Number of shards (a re-run keeps the last count; first run: as --auto).",
        ),
    ] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="Shard count from `manifest analyze`.")
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="A scheduler plugin: local, slurm, ... (`xfer plugins`; default: the first "
            "batch scheduler that is reachable, e.g. slurm when slurmctld answers, else local).",
        ),
    ] = None,
    submit: Annotated[
        bool,
        typer.Option(
            "--submit/--no-submit",
            help="Start it: local runs in the foreground; slurm submits the array.",
        ),
    ] = False,
    extra_lsjson_flags: Annotated[
        str,
        typer.Option(
            "--extra-lsjson-flags",
            help='Extra rclone lsjson flags for the listing, shell-quoted: "--fast-list".',
        ),
    ] = "",
    rebuild: Annotated[
        bool,
        typer.Option("--rebuild", help="List the source again even if RUN/manifest.jsonl exists."),
    ] = False,
    diff_dest: Annotated[
        bool | None,
        typer.Option(
            "--diff-dest/--no-diff-dest",
            help="--diff-dest: list the destination too and send only what is missing or "
            "different there (the manifest is built afresh; see `manifest build "
            "--diff-dest`). --no-diff-dest: never list it; each shard looks up what it "
            "holds. Default: list it once when that costs fewer requests than the "
            "shards' lookups (the manifest keeps every object).",
            show_default=False,
        ),
    ] = None,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="Prepare the run and print its plan (requests, bytes, time at a few rates); "
            "submit nothing, even with --submit.",
        ),
    ] = False,
    *,
    render: RenderOptions,
) -> None:
    """List a source into a manifest, shard it, render the worker, and with --submit run it.

    Re-running the same command resumes: the manifest is reused (--rebuild lists
    again), sharding is deterministic, and only shards that are not done run.
    Without --source/--dest, a rendered run dir is (re)submitted as it is.
    Without --rclone-flags, the engine gets what it takes of the flags `manifest
    analyze` suggests (rclone: all of them). Every prepared run gets RUN/plan.json:
    the requests, bytes and time it is expected to cost (--plan prints it and stops).
    When a freshly listed source's shards would spend more than 5% of the plan's
    requests looking the destination up (many small shards of a flat prefix), the
    run lists the destination once instead and says so; shards whose objects are
    all missing there do not look at it (--no-diff-dest: never).

    Examples:

        xfer run --run-dir ~/xfer-runs/demo --source ~/data --dest ~/data-copy --num-shards 4 --submit

        xfer run --run-dir run_002 --source ~/data --dest ~/data-copy --num-shards 2 --plan

        xfer run --run-dir run_003 --source ~/data --dest ~/data-copy --num-shards 2 --no-diff-dest --plan

        xfer run --run-dir run_001 --source s3src:bucket/set --dest s3dst:bucket/set \\
            --num-shards 512 --array-concurrency 96 --rclone-image rclone/rclone:latest \\
            --rclone-config ~/.config/rclone/rclone.conf --partition transfer --submit
    """
    import msgspec

    from xfer_core.bulk.pipeline import PrepareOptions, pick_scheduler, prepare_run
    from xfer_core.bulk.render import load_resolved
    from xfer_core.bulk.submit import refuse_if_alive, submit_run
    from xfer_core.bulk.upstream import adopt
    from xfer_core.errors import ConfigError
    from xfer_core.output import current

    out = current()
    started = time.monotonic()
    root = run_dir.resolve()
    if (source is None) != (dest is None):
        raise ConfigError("give both --source and --dest (or neither, to resume a run dir)")
    checked = os.path.lexists(root)
    if checked:
        from xfer_core.bulk.rundir import check_run_dir

        check_run_dir(root)  # once, before anything is printed, read or moved in it
    adopted = adopt(root)
    if adopted is not None:
        out.info(
            f"{root} is an upstream xfer run dir: its manifest is re-sharded by xfer; "
            + (
                "its shards carry other roots than manifest.jsonl (a rebase): their records "
                "are the manifest now (the old one: manifest.upstream.jsonl); "
                if adopted.from_shards
                else ""
            )
            + f"{adopted.unverified_done} .done marker(s) set aside unverified in "
            f"{adopted.state_dir or 'state.upstream'} (those shards run again: rclone skips "
            "what arrived, then each is verified before it is marked done)"
        )
        num_shards = num_shards or adopted.num_shards
        if source is None and dest is None:
            from xfer_core.bulk.pipeline import manifest_roots
            from xfer_core.bulk.upstream import render_values

            roots = manifest_roots(root / "manifest.jsonl")
            source = adopted.config.get("source_root") or (roots[0] if roots else None)
            dest = adopted.config.get("dest_root") or (roots[1] if roots else None)
            values = render_values(adopted.config)
            if render.runtime not in (None, "pyxis"):
                values.pop("pyxis_extra", None)
            render = msgspec.structs.replace(render, **values)
    if diff_dest is not None and source is None:
        flag = "--diff-dest" if diff_dest else "--no-diff-dest"
        raise ConfigError(
            f"{flag} decides how the manifest is built: give --source and --dest with it "
            "(a run dir resumed without them keeps its manifest as it is)"
        )
    chosen, why = pick_scheduler(scheduler)
    out.event("scheduler", name=chosen, reason=why)
    out.info(f"scheduler: {chosen} ({why})")
    if submit or rebuild:
        # before listing or re-rendering anything: a live array still reads them
        refuse_if_alive(root, "re-listing the source" if rebuild else "submitting again")
    if source is not None and dest is not None:
        render = msgspec.structs.replace(render, scheduler=chosen)
        prepared = prepare_run(
            root,
            PrepareOptions(
                source=source,
                dest=dest,
                num_shards=num_shards,
                auto=auto,
                rebuild=rebuild,
                extra_lsjson_flags=extra_lsjson_flags,
                diff_dest=diff_dest,
            ),
            render,
            on_stage=_stage_printer(out),
            checked=checked,
        )
        if prepared.resolved is None:
            out.event("summary", run_dir=str(root), shards=0, objects=0, bytes=0)
            out.info(f"{dest} already holds every object of {source}: nothing to send")
            return
    else:
        load_resolved(root)
    if plan:
        from xfer_core.bulk.plan import load_plan, plan_lines

        found = load_plan(root)
        if found is None:
            raise ConfigError(f"{root}: no plan.json", hint="prepare it with --source and --dest")
        if out.json:
            out.emit_json(found)
        elif source is None:
            for line in plan_lines(found):
                out.info(line)
        return
    if not submit:
        out.info(f"ready: {root} (scheduler {chosen}); start it with:")
        out.info(f"  xfer run --run-dir {root} --scheduler {chosen} --submit")
        return
    # the run dir was checked and the queue asked above: not again
    sub = submit_run(root, chosen, concurrency=render.array_concurrency, checked=True)
    if sub is None or sub.finished:
        if sub is None:
            out.info(f"{root}: every shard is done; nothing to run")
        raise typer.Exit(summarize_local(root, started))
    print_submission(sub, root)


def register(app: typer.Typer) -> None:
    """Add ``run``."""
    app.command("run")(run_cmd)
