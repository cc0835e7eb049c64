"""``xfer run`` as a library call: build → analyze → shard → render (→ submit).

Re-running on the same run dir resumes: the manifest is reused when its roots
match (unless ``rebuild``), sharding is deterministic (same manifest and options
give the same shards, so ``.done`` files stay valid), and a submission runs only
the shards that are not done.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from xfer_core.atomic import atomic_write_bytes
from xfer_core.bulk.engine import ShardEngine
from xfer_core.bulk.render import RenderOptions, ResolvedConfig, check_rclone_config, render_run
from xfer_core.bulk.rundir import check_run_dir, make_run_dir, no_group_write
from xfer_core.errors import ConfigError, XferError

if TYPE_CHECKING:
    from xfer_core.manifest.shard import ShardMeta

#: Called with a stage name and its details (for progress lines / JSON events).
StageHook = Callable[[str, dict[str, object]], None]


class PrepareOptions(msgspec.Struct, kw_only=True):
    """What ``xfer run`` needs besides the render options."""

    source: str
    dest: str
    num_shards: int | None = None
    auto: bool = False
    #: List the source again even when RUN/manifest.jsonl has the same roots.
    rebuild: bool = False
    #: True: list the destination too and keep only what is missing or different
    #: there (:mod:`xfer_core.manifest.diff`); the manifest is always built afresh.
    #: False: never list it (each shard looks the destination up itself). None
    #: (auto): when a fresh manifest's shards would spend more on lookups than one
    #: listing (:func:`~xfer_core.bulk.plan.dest_listing_choice`), list it once and
    #: mark the records missing there (the manifest keeps every record).
    diff_dest: bool | None = None
    #: Without user flags, give the engine what it takes of the flags ``manifest
    #: analyze`` suggests (:meth:`~xfer_core.bulk.engine.ShardEngine.suggested_flags`).
    suggested_flags: bool = True
    #: Extra ``rclone lsjson`` flags for the listing (``--extra-lsjson-flags``), as typed.
    extra_lsjson_flags: str = ""


class Prepared(msgspec.Struct, kw_only=True):
    """What :func:`prepare_run` did."""

    #: None when a ``diff_dest`` listing found nothing to send (nothing was rendered).
    resolved: ResolvedConfig | None
    manifest_reused: bool
    objects: int
    bytes: int


def manifest_roots(path: Path) -> tuple[str, str] | None:
    """The source and dest roots of the manifest's first record (None: empty or unreadable)."""
    from xfer_core.manifest.jsonl import read_manifest

    try:
        for record in read_manifest(path):
            return record.source_root, record.dest_root
    except XferError:
        return None
    return None


def _previous_shard_count(root: Path, checked: bool) -> int | None:
    """The shard count of the run dir's current sharding (a re-run keeps it), if any."""
    from xfer_core.manifest.shard import load_shard_meta

    if not os.path.lexists(root):
        return None
    if not checked:
        check_run_dir(root)
    try:
        return load_shard_meta(root / "shards", check_files=False).num_shards
    except XferError:
        return None


def _verify_mode(name: str, roots: tuple[str, str], flags: list[str], verify: str) -> str:
    """How the engine verifies the shards (``check`` adds listings to the request plan)."""
    from xfer_core.bulk.engine import EngineContext
    from xfer_core.registry import get_registry

    engine: ShardEngine = get_registry().get("shard_engine", name)
    ctx = EngineContext(source_root=roots[0], dest_root=roots[1], flags=tuple(flags), verify=verify)
    return engine.verify_mode(ctx)


def pick_scheduler(requested: str | None, env: dict[str, str] | None = None) -> tuple[str, str]:
    """``(name, why)``: ``requested``, else the first installed batch scheduler (by
    name) that is reachable now, else ``local``. ``why`` is printed, so the choice is
    never silent."""
    if requested:
        return requested, "--scheduler"
    from xfer_core.bulk.scheduler import Scheduler
    from xfer_core.registry import get_registry

    reasons = []
    for sched in get_registry().all("scheduler"):
        if sched.name == "local" or not isinstance(sched, Scheduler):
            continue
        avail = sched.reachable(env)
        if avail.ok:
            said = avail.reason or f"{sched.name} is reachable"
            return sched.name, f"the default: {said}; --scheduler local runs here instead"
        reasons.append(f"{sched.name} is not reachable ({avail.reason})")
    if not reasons:
        return "local", "the default: no batch scheduler is installed"
    return "local", f"the default: {'; '.join(reasons)}"


@no_group_write()
def prepare_run(
    run_dir: str | os.PathLike[str],
    prep: PrepareOptions,
    render: RenderOptions,
    *,
    on_stage: StageHook | None = None,
    env: dict[str, str] | None = None,
    checked: bool = False,
) -> Prepared:
    """Build (or reuse) the manifest, analyze it, shard it and render the scripts.

    ``checked``: the caller ran :func:`check_run_dir` on an existing ``run_dir`` in
    this command; it is not checked again (a missing one is created and checked)."""
    from xfer_core.manifest.analyze import Analysis
    from xfer_core.manifest.build import build_manifest, normalize_dest
    from xfer_core.manifest.lister import ListOptions, select_lister, split_flags
    from xfer_core.manifest.roots import check_root_credentials
    from xfer_core.manifest.shard import shard_manifest

    def stage(name: str, **details: object) -> None:
        if on_stage is not None:
            on_stage(name, details)

    root = Path(run_dir).resolve()
    checked = checked and os.path.lexists(root)
    if prep.num_shards is not None and prep.auto:
        raise ConfigError("give --num-shards N or --auto, not both")
    if prep.num_shards is None and not prep.auto:
        previous = _previous_shard_count(root, checked)
        if previous is None:
            # upstream xfer's default was a fixed 256 (empty shards for small trees): the
            # analysis' suggestion instead, said in one line
            from xfer_core.output import current

            current().info(
                "no --num-shards: using the count `manifest analyze` suggests (--auto); "
                "upstream xfer's default was 256"
            )
            prep = msgspec.structs.replace(prep, auto=True)
        else:
            prep = msgspec.structs.replace(prep, num_shards=previous)
    # the roots come from the command line: trusted (connection strings included), but
    # credentials inside them are refused before anything is written
    check_root_credentials(prep.source, "source")
    given = (select_lister(prep.source).normalize_root(prep.source), normalize_dest(prep.dest))
    if not checked:
        make_run_dir(root)
        checked = True
    # fail on a bad rclone.conf before listing anything
    conf = check_rclone_config(render.rclone_config) if render.rclone_config else None
    manifest = root / "manifest.jsonl"
    reused = False
    fresh = prep.rebuild or prep.diff_dest
    roots = manifest_roots(manifest) if manifest.is_file() and not fresh else None
    if roots is not None and roots == given:
        reused = True
        stage("manifest", reused=True, path=str(manifest))
    else:
        if prep.extra_lsjson_flags.strip() and select_lister(prep.source).name != "rclone":
            from xfer_core.output import current

            current().warn(
                f"--extra-lsjson-flags ignored: {prep.source} is listed by the "
                f"{select_lister(prep.source).name} lister, not rclone lsjson"
            )
        options = ListOptions(
            rclone_config=conf, extra_flags=tuple(split_flags(prep.extra_lsjson_flags))
        )
        listed = root / ".manifest.full.jsonl" if prep.diff_dest else manifest
        try:
            result = build_manifest(prep.source, prep.dest, listed, options=options)
            kept = None
            if prep.diff_dest:
                from xfer_core.manifest.diff import diff_manifest

                kept = diff_manifest(listed, manifest, options=options).kept
        finally:
            if prep.diff_dest:
                listed.unlink(missing_ok=True)
        stage(
            "manifest",
            reused=False,
            path=str(manifest),
            objects=result.objects,
            bytes=result.bytes,
            seconds=round(result.seconds, 3),
            **({} if kept is None else {"to_send": kept}),
        )
        if kept == 0:
            return Prepared(resolved=None, manifest_reused=False, objects=0, bytes=0)
    # one pass over the manifest: the shard step's reading gives the analysis too
    analyses: list[Analysis] = []

    def shard() -> ShardMeta:
        return shard_manifest(
            manifest,
            root / "shards",
            num_shards=prep.num_shards,
            auto=prep.auto,
            trust_roots=True,
            on_analysis=analyses.append,
        )

    meta = shard()
    analysis = analyses[0]
    atomic_write_bytes(
        root / "analysis.json", msgspec.json.format(msgspec.json.encode(analysis)) + b"\n"
    )
    stage(
        "analyze",
        objects=analysis.records,
        bytes=analysis.total_bytes,
        profile=analysis.profile,
        suggested_shards=analysis.suggested_shards,
    )
    if prep.suggested_flags and not render.rclone_flags:
        from xfer_core.registry import get_registry

        # the suggestions are rclone flags: each engine takes what its tool understands
        engine: ShardEngine = get_registry().get("shard_engine", render.engine)
        flags = shlex.join(engine.suggested_flags(analysis))
        render = msgspec.structs.replace(render, rclone_flags=flags)
    render = msgspec.structs.replace(render, source_root=given[0], dest_root=given[1])
    listing = "diff-dest" if prep.diff_dest else ""
    if reused:
        from xfer_core.bulk.plan import load_plan

        # the manifest (and its marks) is the one the last preparation made: so is this
        last_plan = load_plan(root)
        listing = last_plan.dest_listing if last_plan is not None else ""
    if prep.diff_dest is None and not reused and render.engine == "rclone":
        # auto: one listing of the destination when the shards' lookups cost more
        from xfer_core.bulk.plan import dest_listing_choice
        from xfer_core.bulk.render import parse_flags
        from xfer_core.manifest.diff import diff_manifest

        verify = _verify_mode(render.engine, given, parse_flags(render.rclone_flags), render.verify)
        choice = dest_listing_choice(analysis, meta, verify=verify)
        if choice.list_dest:
            details: dict[str, object] = {
                "plain_lookups": choice.plain.lookups,
                "plain_requests": choice.plain.total_requests,
                "listing_pages": choice.listing_pages,
            }
            try:
                found = diff_manifest(manifest, manifest, options=options, keep_all=True)
            except XferError as exc:
                # e.g. a bucket that does not exist yet: the plain mode (its copies create it)
                stage("dest_listing", listed=False, error=str(exc), **details)
            else:
                meta = shard()
                listing = "auto"
                stage(
                    "dest_listing",
                    listed=True,
                    objects=found.records,
                    missing=found.missing,
                    **details,
                )
    stage("shard", shards=meta.num_shards, imbalance=round(meta.imbalance, 4))
    resolved = render_run(root, render, env=env, checked=checked)
    stage(
        "render",
        runtime=resolved.runtime,
        runtime_reason=resolved.runtime_reason,
        engine=resolved.engine,
        tasks=resolved.tasks,
        rclone_flags=resolved.rclone_flags,
        split_flags=resolved.split_flags,
    )
    from xfer_core.bulk.plan import make_plan, with_shard_flags, write_plan

    verify = _verify_mode(
        resolved.engine,
        (resolved.source_root, resolved.dest_root),
        resolved.rclone_flags,
        render.verify,
    )
    plan = make_plan(analysis, meta, verify=verify, dest_listing=listing)
    if resolved.engine != "rclone":
        note = f"the request model is the rclone engine's; engine {resolved.engine} may differ"
        plan = msgspec.structs.replace(plan, notes=[*plan.notes, note])
    plan = with_shard_flags(plan, resolved)
    write_plan(root, plan)
    stage(
        "plan",
        run_dir=str(root),
        route=plan.route,
        requests=plan.requests,
        total_requests=plan.total_requests,
        lookups=plan.lookups,
        bytes=plan.bytes,
        rates=msgspec.to_builtins(plan.rates),
        shards_at_once=plan.shards_at_once,
        machine_flags=plan.machine_flags,
        shard_flags=plan.shard_flags,
    )
    return Prepared(
        resolved=resolved,
        manifest_reused=reused,
        objects=analysis.records,
        bytes=analysis.total_bytes,
    )
