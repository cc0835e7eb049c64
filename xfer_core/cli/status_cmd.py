"""``xfer status`` and ``xfer retry``: the state of a run dir, and resubmitting what is not done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from xfer_core.output import Output, current, human_bytes

if TYPE_CHECKING:
    from xfer_core.bulk.state import RunState, ShardState
    from xfer_core.bulk.status import StatusReport

#: Shards listed per status in the human output (all of them are in --json).
_LIST_LIMIT = 20
#: Latest submissions listed in the human output.
_JOBS_SHOWN = 3

RunDirOption = Annotated[
    Path,
    typer.Option(
        "--run-dir",
        "-r",
        help="The run dir (holds shards/, state/, logs/).",
        file_okay=False,
        show_default=False,
    ),
]


# --- human output -------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def summary_lines(snap: StatusReport) -> list[str]:
    """The plain-text report: totals, rate, scheduler, the shards that need attention."""
    st, t = snap.state, snap.state.totals
    head = [
        f"run dir: {st.run_dir}  (max attempts {st.max_attempts})",
        f"shards: {t.shards} total, {t.done} done, {t.running} running, "
        f"{t.retrying} retrying, {t.failed} failed, {t.pending} pending",
        f"objects: {t.records_done}/{t.records} done ({_pct(t.records_done, t.records)}); "
        f"bytes: {human_bytes(t.bytes_done)} / {human_bytes(t.bytes)} ({_pct(t.bytes_done, t.bytes)}); "
        f"attempts: {t.attempts}",
    ]
    return head + _pending_lines(snap) + _info_lines(snap) + _shard_lines(st) + _verdict(st)


#: What Slurm's common pending reasons mean for a run, and what to do.


def _pending_lines(snap: StatusReport) -> list[str]:
    """Why the scheduler keeps tasks pending, first and explained (a run that waits
    forever must say so)."""
    from xfer_core.bulk.scheduler import JobState
    from xfer_core.registry import get_registry

    lines = []
    for view in snap.views:
        sched = get_registry().get("scheduler", view.scheduler)
        reasons: dict[str, int] = {}
        for job in view.jobs:
            if job.status == JobState.PENDING and job.reason:
                reasons[job.reason] = reasons.get(job.reason, 0) + 1
        for reason, n in sorted(reasons.items()):
            help_text = sched.pending_help(reason) or "see the scheduler's queue"
            lines.append(f"PENDING ({view.scheduler}): {n} task(s) wait for {reason}: {help_text}")
    return lines


def _info_lines(snap: StatusReport) -> list[str]:
    st, t, p = snap.state, snap.state.totals, snap.progress
    lines = []
    if p.bytes_per_second is not None and p.since is not None and p.until is not None:
        rate = f"rate: {human_bytes(p.bytes_per_second)}/s over the last {_duration(p.until - p.since)}"
        if p.eta_seconds is not None:
            rate += f"; ETA {_duration(p.eta_seconds)}"
        lines.append(rate)
    elif not st.complete:
        lines.append("rate: not known yet (no shard finished since the last submission)")
    if t.stale_done:
        lines.append(f"ignored: {t.stale_done} .done file(s) of an older sharding")
    return lines + _plan_lines(snap) + _scheduler_lines(snap)


def _plan_lines(snap: StatusReport) -> list[str]:
    """The run's plan (RUN/plan.json) beside what is done so far."""
    from xfer_core.bulk.plan import load_plan

    plan = load_plan(snap.state.run_dir)
    if plan is None:
        return []
    t, p = snap.state.totals, snap.progress
    mid = plan.rates[len(plan.rates) // 2]
    line = (
        f"plan: {plan.total_requests:,} requests, {human_bytes(plan.bytes)}; "
        f"~{_duration(mid.seconds)} at {mid.requests_per_second:,.0f} req/s and "
        f"{human_bytes(mid.bytes_per_second)}/s"
    )
    if plan.dest_listing:
        line += f"; the destination listed once for the run ({plan.dest_listing})"
    actual = f"actual: {human_bytes(t.bytes_done)} of {human_bytes(plan.bytes)} done"
    if p.since is not None and p.until is not None:
        actual += f" over {_duration(p.until - p.since)}"
    return [line, actual]


def _verdict(st: RunState) -> list[str]:
    if st.complete:
        return ["all shards done"]
    if st.totals.failed:
        return [
            f"{st.totals.failed} shard(s) failed for good; "
            "`xfer retry --include-failed` tries them again"
        ]
    return []


def _scheduler_lines(snap: StatusReport) -> list[str]:
    lines = []
    if len(snap.jobs) > _JOBS_SHOWN:
        lines.append(f"{len(snap.jobs) - _JOBS_SHOWN} earlier submission(s) (all in --json)")
    for job in snap.jobs[-_JOBS_SHOWN:]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.submitted_at))
        lines.append(
            f"job {job.job_id} ({job.scheduler}, {len(job.shards)} shard(s), submitted {when})"
        )
    for view in snap.views:
        label = f"{view.scheduler} scheduler"
        if view.states:
            parts = []
            for state, n in sorted(view.states.items()):
                reasons = sorted({j.reason for j in view.jobs if j.state == state and j.reason})
                why = f" ({', '.join(reasons)})" if reasons else ""
                parts.append(f"{n} {state.lower()}{why}")
            lines.append(f"{label}: {', '.join(parts)}")
        elif view.reachable:
            lines.append(f"{label}: no job of this run is queued or running")
        if view.message:
            lines.append(f"{label}: {view.message}")
    return lines


def _attempts(s: ShardState, max_attempts: int) -> str:
    """``2/3 attempts``, with ``, N interrupted`` (not counted) when some were stopped."""
    text = f"{s.attempts}/{max_attempts} attempts"
    return f"{text}, {s.interrupted} interrupted" if s.interrupted else text


def _shard_lines(st: RunState) -> list[str]:
    lines = []
    for status in ("failed", "retrying", "running"):
        shards = [s for s in st.shards if s.status == status]
        if not shards:
            continue
        lines.append(f"{status} shards:")
        for s in shards[:_LIST_LIMIT]:
            head = f"  shard {s.index} ({_attempts(s, st.max_attempts)})"
            if s.running is not None:
                r = s.running
                since = _duration(max(0.0, st.loaded_at - r.started_at))
                lines.append(f"{head}: attempt {r.attempt} on {r.host} pid {r.pid} for {since}")
            else:
                lines.append(f"{head}: {s.last_error}")
        if len(shards) > _LIST_LIMIT:
            lines.append(f"  ... and {len(shards) - _LIST_LIMIT} more (all in --json)")
    return lines


def _render_rich(snap: StatusReport) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    st, t = snap.state, snap.state.totals
    totals = Table(show_header=True, header_style="bold", title=f"xfer status: {st.run_dir}")
    for col in ("shards", "done", "running", "retrying", "failed", "pending", "objects", "bytes"):
        totals.add_column(col, justify="right")
    totals.add_row(
        str(t.shards),
        f"[green]{t.done}[/]",
        f"[cyan]{t.running}[/]",
        f"[yellow]{t.retrying}[/]",
        f"[red]{t.failed}[/]" if t.failed else "0",
        str(t.pending),
        f"{t.records_done}/{t.records}",
        f"{human_bytes(t.bytes_done)} / {human_bytes(t.bytes)} ({_pct(t.bytes_done, t.bytes)})",
    )
    parts: list[Any] = [totals]
    pending = _pending_lines(snap)
    if pending:  # a run that may wait forever says so first
        parts.append(Text("\n".join(pending), style="bold yellow"))
    attention = [s for s in st.shards if s.status in ("failed", "retrying", "running")]
    if attention:
        table = Table(show_header=True, header_style="bold")
        for col in ("shard", "status", "attempts", "bytes", "detail"):
            table.add_column(col, justify="right" if col in ("shard", "bytes") else "left")
        colour = {"failed": "red", "retrying": "yellow", "running": "cyan"}
        for s in attention[: _LIST_LIMIT * 3]:
            if s.running is not None:
                r = s.running
                detail = f"attempt {r.attempt} on {r.host} pid {r.pid}"
            else:
                detail = s.last_error or ""
            table.add_row(
                str(s.index),
                f"[{colour[s.status]}]{s.status}[/]",
                _attempts(s, st.max_attempts),
                human_bytes(s.bytes),
                Text(detail),
            )
        parts.append(table)
    parts.append(Text("\n".join(_info_lines(snap) + _verdict(st))))
    return Group(*parts)


def _emit(out: Output, snap: StatusReport, as_json: bool) -> None:
    if as_json:
        out.emit_json(snap.to_json())
    elif out.stdout.is_terminal:
        out.stdout.print(_render_rich(snap))
    else:
        print("\n".join(summary_lines(snap)), flush=True)


def status(
    run_dir: RunDirOption,
    json: Annotated[
        bool, typer.Option("--json", help="One JSON object (per refresh with --watch).")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until every shard is done or failed.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="Seconds between refreshes (--watch).")
    ] = 5.0,
    no_scheduler: Annotated[
        bool,
        typer.Option(
            "--no-scheduler", help="Do not ask the scheduler (its queue); the run dir alone."
        ),
    ] = False,
) -> None:
    """Show the state of a run: shards done/running/retrying/failed/pending, attempts,
    objects and bytes done, rate and ETA, the last error of each failed shard.

    Works from the run dir alone (any scheduler); for batch schedulers (slurm, ...)
    it adds what their queue says about the jobs of `jobs.json` (task states,
    pending reasons), or one line saying why it could not be asked.

    Rate and ETA: bytes of the shards finished since the latest submission
    (`.done` file times) divided by the time since that submission; ETA is the
    bytes still to do over that rate.

    Exit status: 0 when nothing failed for good (all done, or still going);
    1 when any shard failed MAX_ATTEMPTS times; 2 for a missing or broken run dir.
    With `--watch` it returns when every shard is done or failed for good (or on
    Ctrl-C) with the same codes.

    Examples:

        xfer status --run-dir run_001

        xfer status --run-dir run_001 --watch --interval 10

        xfer status --run-dir run_001 --json | jq .totals
    """
    from xfer_core.bulk.status import StatusReport, check_status_dir

    out = current()
    as_json = json or out.json
    check_status_dir(run_dir)
    snap = StatusReport(run_dir, ask_scheduler=not no_scheduler)
    if watch and not as_json and out.is_tty and out.stdout.is_terminal:
        snap = _watch_live(out, run_dir, snap, interval, not no_scheduler)
    else:
        _emit(out, snap, as_json)
        try:
            while watch and not snap.state.finished:
                time.sleep(interval)
                snap = StatusReport(run_dir, ask_scheduler=not no_scheduler)
                _emit(out, snap, as_json)
        except KeyboardInterrupt:
            pass
    raise typer.Exit(snap.exit_code)


def _watch_live(
    out: Output, run_dir: Path, snap: StatusReport, interval: float, ask: bool
) -> StatusReport:
    from rich.live import Live

    from xfer_core.bulk.status import StatusReport

    with Live(_render_rich(snap), console=out.stdout, auto_refresh=False) as live:
        try:
            while not snap.state.finished:
                time.sleep(interval)
                snap = StatusReport(run_dir, ask_scheduler=ask)
                live.update(_render_rich(snap), refresh=True)
        except KeyboardInterrupt:
            pass
    return snap


def retry(
    run_dir: RunDirOption,
    include_failed: Annotated[
        bool,
        typer.Option(
            "--include-failed",
            help="Also run shards that used up their attempts (each gets max_attempts more).",
        ),
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler", help="Scheduler to use (default: the one of the last submission)."
        ),
    ] = None,
    array_concurrency: Annotated[
        int | None,
        typer.Option("--array-concurrency", "-C", min=1, help="Override the rendered throttle."),
    ] = None,
) -> None:
    """Resubmit only what is not done: pending and retrying shards, and with
    `--include-failed` those that failed for good too.

    Uses the scheduler of the run's last submission (`jobs.json`): on Slurm it
    submits an array of just the tasks holding those shards and returns; on the
    local scheduler it runs them in the foreground. Refuses while a job of the run
    is still queued or running (wait with `xfer status --watch`, or cancel it).

    Exit status: 0 when submitted (Slurm) or when every shard ends done (local, or
    nothing left to do); 1 when shards are still failed (local) or when only
    permanently failed shards are left and `--include-failed` was not given.

    Examples:

        xfer retry --run-dir run_001

        xfer retry --run-dir run_001 --include-failed --array-concurrency 8
    """
    from xfer_core.bulk.status import plan_retry
    from xfer_core.bulk.submit import submit_run
    from xfer_core.cli.batch_cmd import print_submission
    from xfer_core.cli.run_cmd import summarize_local

    out = current()
    started = time.monotonic()
    plan = plan_retry(run_dir, include_failed=include_failed, scheduler=scheduler)
    root, chosen, todo = plan.root, plan.scheduler, plan.shards
    if not todo:
        t = plan.state.totals
        out.event("retry", scheduler=chosen, shards=[], done=t.done, failed=t.failed)
        if t.failed:
            out.info(
                f"{root}: nothing to retry: {t.done} done, {t.failed} failed for good "
                f"({t.running} running); add --include-failed to try those again"
            )
        else:
            out.info(f"{root}: nothing to retry ({t.done} done, {t.running} running)")
        raise typer.Exit(plan.exit_code)
    out.event("retry", scheduler=chosen, shards=todo)
    out.info(f"retrying {len(todo)} shard(s) on the {chosen} scheduler")
    # checked and refused above: not twice
    sub = submit_run(root, chosen, concurrency=array_concurrency, shards=todo, checked=True)
    if sub is not None and sub.finished:
        raise typer.Exit(summarize_local(root, started))
    print_submission(sub, root)


def register(app: typer.Typer) -> None:
    """Add ``status`` and ``retry`` to ``app``."""
    app.command("status")(status)
    app.command("retry")(retry)
