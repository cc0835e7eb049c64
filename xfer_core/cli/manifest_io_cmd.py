"""``xfer manifest build | rebase | combine | verify``: thin commands over ``xfer_core.manifest``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from xfer_core.cli.render_opts import TrustRootsOption
from xfer_core.output import human_bytes

if TYPE_CHECKING:
    from xfer_core.manifest.lister import ListOptions, ListProblem
    from xfer_core.output import Output

#: Problem lines printed one by one; the rest are counted in the summary.
_SHOW_PROBLEMS = 20

ListerOption = Annotated[
    str,
    typer.Option(
        "--lister",
        help="Lister plugin: auto (posix for local dirs, rclone for remote:path), posix, rclone.",
    ),
]
RcloneConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--rclone-config",
        help="rclone.conf with the remotes (must be mode 0600; mounted read-only in containers).",
        dir_okay=False,
        show_default=False,
    ),
]
RcloneImageOption = Annotated[
    str | None,
    typer.Option(
        "--rclone-image", help="Container image with rclone (for --runtime).", show_default=False
    ),
]
RuntimeOption = Annotated[
    str,
    typer.Option("--runtime", help="Runtime that runs rclone: host (default), podman, docker, ..."),
]
ExtraFlagsOption = Annotated[
    str,
    typer.Option(
        "--extra-lsjson-flags",
        help='Extra `rclone lsjson` flags, shell-quoted: "--fast-list --s3-list-chunk 5000".',
    ),
]
ParallelOption = Annotated[
    int,
    typer.Option(
        "--parallel",
        "-P",
        min=0,
        help="posix: directories scanned at once (0 = 8 on network file systems, 1 on local "
        "disks). rclone: top-level prefixes listed at once (0/1 = one lsjson -R).",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="JSON lines on stdout: progress events and a summary.")
]


def _list_options(
    *,
    rclone_config: Path | None,
    rclone_image: str | None,
    runtime: str,
    extra_lsjson_flags: str,
    parallel: int,
    symlinks: str = "skip",
    hashes: tuple[str, ...] | None = None,
) -> ListOptions:
    from xfer_core.bulk.render import check_rclone_config
    from xfer_core.manifest.lister import ListOptions, split_flags
    from xfer_core.output import current

    if rclone_image and runtime in ("", "host"):
        current().warn(
            f"--rclone-image {rclone_image} is ignored with --runtime host "
            "(pass --runtime podman|docker|apptainer|pyxis|enroot to run rclone in it)"
        )
    return ListOptions(
        hashes=hashes,
        rclone_config=check_rclone_config(str(rclone_config)) if rclone_config else None,
        rclone_image=rclone_image,
        runtime=runtime,
        extra_flags=split_flags(extra_lsjson_flags),
        parallel=parallel,
        symlinks=symlinks,
    )


def _upstream_lsjson_flags(
    source: str, lister: str, *, recursive: bool, fast_list: bool, no_modtime: bool, verbose: int
) -> list[str]:
    """Upstream xfer's listing switches as ``rclone lsjson`` flags (rclone lister only)."""
    from xfer_core.errors import ConfigError
    from xfer_core.manifest.lister import select_lister

    flags = (
        (["--max-depth", "1"] if not recursive else [])
        + (["--fast-list"] if fast_list else [])
        + (["--no-modtime"] if no_modtime else [])
        + ([f"-{'v' * min(verbose, 2)}"] if verbose else [])
    )
    if not flags:
        return flags
    # (only when there are flags: a missing source is build's own error, said better)
    chosen = lister if lister != "auto" else select_lister(source).name
    if chosen != "rclone":
        raise ConfigError(
            f"{' '.join(flags)}: rclone lsjson flags, but {source} is listed by the {chosen} lister",
            hint="pass --lister rclone to list it with rclone",
        )
    return flags


def _pyxis_extra(text: str, runtime: str) -> tuple[str, ...]:
    import shlex

    from xfer_core.errors import ConfigError
    from xfer_core.output import current

    if not text.strip():
        return ()
    if runtime != "pyxis":
        current().warn(f"--pyxis-extra ignored: the runtime is {runtime}, not pyxis")
        return ()
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise ConfigError(f"--pyxis-extra {text!r}: {exc}") from None


def _output(as_json: bool) -> Output:
    from xfer_core.output import Output, current

    out = current()
    if as_json and not out.json:
        return Output(json=True, quiet=out.quiet, verbose=out.verbose)
    return out


class _Reporter:
    """Progress (rich on a TTY, a plain line every 10 s otherwise, events with --json) and problems."""

    def __init__(self, out: Output, label: str) -> None:
        self.out = out
        self.label = label
        self.shown = 0
        self.hidden = 0
        self._last = time.monotonic()
        self._live: Any = None
        self._interval = 1.0 if out.json else (0.2 if out.is_tty else 10.0)

    def __enter__(self) -> _Reporter:
        if self.out.is_tty and not self.out.quiet:
            from rich.status import Status

            self._live = Status(f"{self.label}: starting", console=self.out.console)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def progress(self, objects: int, nbytes: int) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        text = f"{self.label}: {objects:,} objects, {human_bytes(nbytes)}"
        if self.out.json:
            self.out.event("progress", objects=objects, bytes=nbytes)
        elif self._live is not None:
            self._live.update(text)
        else:
            self.out.info(text)

    def problem(self, problem: ListProblem) -> None:
        if self.shown >= _SHOW_PROBLEMS and not self.out.json:
            self.hidden += 1
            return
        self.shown += 1
        kind = "error" if problem.error else "skipped"
        if self.out.json:
            self.out.event("problem", kind=kind, message=problem.message)
        else:
            self.out.warn(problem.message)


def _parse_hash(text: str) -> tuple[str, ...] | None:
    from xfer_core.errors import ConfigError

    value = text.strip().lower()
    if value == "auto":
        return None
    if value == "none":
        return ()
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names or not all(n.replace("-", "").isalnum() for n in names):
        raise ConfigError(f"--hash {text!r}: expected auto, none or names like md5,sha1")
    return names


def build(
    source: Annotated[
        str, typer.Option("--source", "-s", help="Local dir or rclone remote:path to list.")
    ],
    dest: Annotated[
        str, typer.Option("--dest", "-d", help="Destination root recorded in the manifest.")
    ],
    out_file: Annotated[
        Path, typer.Option("--out", "-o", help="Manifest to write (JSONL, atomic).", dir_okay=False)
    ],
    lister: ListerOption = "auto",
    rclone_config: RcloneConfigOption = None,
    rclone_image: RcloneImageOption = None,
    runtime: RuntimeOption = "host",
    extra_lsjson_flags: ExtraFlagsOption = "",
    parallel: ParallelOption = 0,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run id (default: UTC time + random).")
    ] = None,
    hash_: Annotated[
        str,
        typer.Option(
            "--hash",
            help="Hashes to record: auto (what the source gives cheaply: rclone remotes yes, "
            "posix no), none, or names (md5,sha1): posix then reads every file.",
        ),
    ] = "auto",
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks",
            help="posix: list symlink targets (default: skip symlinks and report each).",
        ),
    ] = False,
    allow_errors: Annotated[
        bool,
        typer.Option(
            "--allow-errors",
            help="Write the manifest even when some directories could not be read (still exit 1).",
        ),
    ] = False,
    diff_dest: Annotated[
        bool,
        typer.Option(
            "--diff-dest",
            help="Also list DEST once and keep only the objects missing there or different "
            "(size, or hash where both sides have one); each gets meta.diff.",
        ),
    ] = False,
    json: JsonOption = False,
    recursive: Annotated[
        bool,
        typer.Option(
            "--recursive/--no-recursive",
            help="List the whole tree (default), or only the top level (rclone --max-depth 1).",
        ),
    ] = True,
    fast_list: Annotated[
        bool,
        typer.Option(
            "--fast-list/--no-fast-list",
            help="rclone --fast-list: fewer listing requests, the whole listing held in "
            "rclone's memory (off unless given; upstream: on).",
        ),
    ] = False,
    no_modtime: Annotated[
        bool,
        typer.Option(
            "--no-modtime", help="rclone --no-modtime (when the remote's modtimes are unreliable)."
        ),
    ] = False,
    container_conf_path: Annotated[
        str | None,
        typer.Option(
            "--container-conf-path",
            help="Where a container runtime mounts --rclone-config (default /etc/xfer/rclone.conf).",
        ),
    ] = None,
    pyxis_extra: Annotated[
        str,
        typer.Option(
            "--pyxis-extra", help="More srun flags with --runtime pyxis (placed after `srun`)."
        ),
    ] = "",
    rclone_verbose: Annotated[
        int,
        typer.Option(
            "-v",
            count=True,
            help="Pass -v (-vv: -vv) to rclone lsjson; its log is shown when the listing fails.",
        ),
    ] = 0,
) -> None:
    """List SOURCE and write an `xfer.manifest.v1` manifest (one JSON line per object).

    The **posix** lister walks a local or mounted tree itself (parallel
    scandir, one stat per file): the fast path on a cluster that mounts the
    data. The **rclone** lister streams `rclone lsjson -R` for any rclone remote,
    on the host or in a container (`--runtime podman --rclone-image IMG`).
    Memory stays flat for any number of objects; the output is written
    atomically (complete or not at all).

    Symlinks, FIFOs and devices are skipped and reported; an unreadable
    directory is an error: nothing is written and the exit status is 1 (unless
    `--allow-errors`).

    With `--diff-dest` the destination is listed once too and only what is
    missing or different there is kept (a re-run then costs what changed); shards
    of such a manifest send without looking at the destination again.

    Exit status: 0 ok; 1 listing errors; 2 bad arguments or source not found;
    3 rclone or the remote unavailable.

    Examples:

        xfer manifest build --source /lustre/proj/dataset --dest s3dst:bucket/dataset --out run/manifest.jsonl

        xfer manifest build --source /lustre/proj/dataset --dest s3dst:bucket/dataset --out run/manifest.jsonl --hash md5 --diff-dest

        xfer manifest build --source s3src:bucket/dataset --dest s3dst:bucket/dataset --out run/manifest.jsonl --rclone-config ~/.config/rclone/rclone.conf --extra-lsjson-flags "--fast-list" --parallel 16

        xfer manifest build --source s3src:bucket/x --dest s3dst:bucket/x --out m.jsonl --runtime podman --rclone-image rclone/rclone:latest --rclone-config rclone.conf
    """
    import msgspec

    from xfer_core.errors import ExitCode
    from xfer_core.manifest.build import build_manifest

    out = _output(json)
    upstream = _upstream_lsjson_flags(
        source,
        lister,
        recursive=recursive,
        fast_list=fast_list,
        no_modtime=no_modtime,
        verbose=rclone_verbose,
    )
    options = _list_options(
        rclone_config=rclone_config,
        rclone_image=rclone_image,
        runtime=runtime,
        extra_lsjson_flags=extra_lsjson_flags,
        parallel=parallel,
        symlinks="follow" if follow_symlinks else "skip",
        hashes=_parse_hash(hash_),
    )
    if container_conf_path is not None and runtime in ("", "host"):
        from xfer_core.cli.render_opts import mapped

        mapped(
            "--container-conf-path",
            container_conf_path,
            "with --runtime host rclone reads --rclone-config where it is",
        )
    options = msgspec.structs.replace(
        options,
        extra_flags=(*upstream, *options.extra_flags),
        container_config=container_conf_path,
        pyxis_extra=_pyxis_extra(pyxis_extra, runtime),
    )
    listed = out_file.with_name(f".{out_file.name}.full") if diff_dest else out_file
    diff = None
    try:
        with _Reporter(out, f"listing {source}") as rep:
            result = build_manifest(
                source,
                dest,
                listed,
                lister=lister,
                options=options,
                run_id=run_id,
                allow_errors=allow_errors,
                on_problem=rep.problem,
                on_progress=rep.progress,
            )
        if diff_dest:
            from xfer_core.manifest.diff import diff_manifest

            # the destination with the rclone lister's options (config, runtime), not the
            # source's hash choice: verify lists what the manifest's records carry
            out.info(f"listing {dest} to keep what is missing or different there ...")
            diff = diff_manifest(listed, out_file, options=options)
    finally:
        if diff_dest:
            listed.unlink(missing_ok=True)
    if out.json:
        summary = msgspec.to_builtins(result)
        if diff is not None:
            summary["diff"] = msgspec.to_builtins(diff)
        out.emit_json({"event": "summary", **summary})
    else:
        if rep.hidden:
            out.warn(f"... and {rep.hidden} more problem(s)")
        rate = result.objects / result.seconds if result.seconds > 0 else 0.0
        extra = ""
        if result.skipped:
            extra += f"; {result.skipped} skipped (symlinks/special files)"
        if result.errors:
            extra += f"; {result.errors} listing error(s)"
        if diff is None:
            out.info(
                f"wrote {result.objects:,} objects ({human_bytes(result.bytes)}) to {result.out} "
                f"in {result.seconds:.1f} s ({rate:,.0f}/s, lister {result.lister}){extra}"
            )
        else:
            out.info(
                f"listed {result.objects:,} objects ({human_bytes(result.bytes)}) in "
                f"{result.seconds:.1f} s (lister {result.lister}){extra}; the destination holds "
                f"{diff.equal:,} of them: wrote {diff.kept:,} to {out_file} ({diff.missing:,} "
                f"missing, {diff.size:,} size, {diff.hash:,} hash)"
            )
    if result.errors:
        raise typer.Exit(int(ExitCode.FAILED))


def rebase(
    in_file: Annotated[Path, typer.Option("--in", "-i", help="Manifest to read.", dir_okay=False)],
    out_file: Annotated[
        Path, typer.Option("--out", "-o", help="Manifest to write (may be --in).", dir_okay=False)
    ],
    source_root: Annotated[
        str | None, typer.Option("--source-root", help="New source root for every record.")
    ] = None,
    dest_root: Annotated[
        str | None, typer.Option("--dest-root", help="New destination root for every record.")
    ] = None,
    maps: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="OLD=NEW: replace root prefix OLD by NEW (source and dest roots; repeatable).",
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Rewrite the roots of a manifest for a host that sees the data under other names.

    `source_root`/`dest_root` and the full `source`/`dest` locations change;
    `path` does not. Re-shard after rebasing. Exit status 2 on a bad manifest
    line (`FILE:LINE: reason`, nothing written).

    Examples:

        xfer manifest rebase --in run/manifest.jsonl --out run/manifest.rebased.jsonl --source-root weka-s3:dataset --dest-root s3dst:bucket/dataset

        xfer manifest rebase --in m.jsonl --out m2.jsonl --map /mnt/data=weka-s3:data --map s3dst:old=s3dst:new
    """
    from xfer_core.manifest.rebase import parse_map, rebase_manifest

    out = _output(json)
    pairs = [parse_map(m) for m in maps or []]
    result = rebase_manifest(
        in_file, out_file, source_root=source_root, dest_root=dest_root, maps=pairs
    )
    if out.json:
        import msgspec

        out.emit_json({"event": "summary", **msgspec.to_builtins(result)})
        return
    for old, new in result.roots.items():
        if old != new:
            out.info(f"  {old} -> {new}")
    out.info(f"rebased {result.changed:,} of {result.records:,} records -> {result.out}")
    if result.records and not result.changed:
        out.warn("no record changed: check --map OLD against the manifest's roots")


def combine(
    out_file: Annotated[
        Path, typer.Option("--out", "-o", help="Manifest to write (atomic).", dir_okay=False)
    ],
    parts: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Manifests (.jsonl) or raw `rclone lsjson` parts (.json arrays).",
            show_default=False,
            metavar="PART",
        ),
    ] = None,
    parts_dir: Annotated[
        Path | None,
        typer.Option(
            "--parts-dir",
            help="Also take every *.json/*.jsonl in DIR (a NAME.prefix sidecar names the "
            "prefix an lsjson part listed).",
            file_okay=False,
        ),
    ] = None,
    source_root: Annotated[
        str | None,
        typer.Option("--source-root", "--source", help="Source root of raw lsjson parts."),
    ] = None,
    dest_root: Annotated[
        str | None,
        typer.Option("--dest-root", "--dest", help="Destination root of raw lsjson parts."),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run id for records from lsjson parts.")
    ] = None,
    on_conflict: Annotated[
        str,
        typer.Option(
            "--on-conflict",
            help="error: report conflicts and write nothing (exit 1); first: keep the first "
            "record of each path and report the others.",
        ),
    ] = "error",
    conflicts_out: Annotated[
        Path | None,
        typer.Option("--conflicts-out", help="Write every conflict as JSON lines here."),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Merge manifests and raw `rclone lsjson` parts into one manifest.

    Exact duplicates (same destination path, size, mtime and hashes) are
    dropped. A *conflict* is the same path with a different size, mtime or
    hash: by default they are listed and nothing is written (exit 1);
    `--on-conflict first` keeps the first record (in PART order) and reports
    the rest. Memory: one small entry per object, for duplicate detection.

    Examples:

        xfer manifest combine part1.jsonl part2.jsonl --out run/manifest.jsonl

        xfer manifest combine --parts-dir parts/ --source-root s3src:bucket --dest-root s3dst:bucket --out run/manifest.jsonl

        xfer manifest combine a.jsonl b.jsonl --out m.jsonl --on-conflict first --conflicts-out conflicts.jsonl
    """
    import msgspec

    from xfer_core.manifest.combine import CombineConflictError, combine_manifests

    out = _output(json)
    try:
        result = combine_manifests(
            parts or [],
            out_file,
            parts_dir=str(parts_dir) if parts_dir is not None else None,
            source_root=source_root,
            dest_root=dest_root,
            run_id=run_id,
            on_conflict=on_conflict,
            conflicts_out=conflicts_out,
        )
    except CombineConflictError as exc:
        _show_conflicts(out, exc.conflicts)
        raise
    if out.json:
        summary = msgspec.to_builtins(result)
        summary.pop("conflict_list", None)
        out.emit_json({"event": "summary", **summary})
    _show_conflicts(out, result.conflict_list)
    if not out.json:
        out.info(
            f"combined {result.parts} part(s): {result.records:,} records -> {result.out} "
            f"({result.duplicates:,} duplicates dropped, {result.conflicts:,} conflicts)"
        )


def _show_conflicts(out: Output, conflicts: list[Any]) -> None:
    for i, c in enumerate(conflicts):
        if out.json:
            out.event("conflict", path=c.path, reason=c.reason, kept=c.kept, dropped=c.dropped)
        elif i < _SHOW_PROBLEMS:
            out.warn(f"conflict: {c.path!r}: {c.reason} ({c.kept} vs {c.dropped})")
    if not out.json and len(conflicts) > _SHOW_PROBLEMS:
        out.warn(f"... and {len(conflicts) - _SHOW_PROBLEMS} more conflict(s)")


def verify(
    in_file: Annotated[Path, typer.Option("--in", "-i", help="Manifest to check.", dir_okay=False)],
    dest: Annotated[
        str | None,
        typer.Option(
            "--dest", "-d", help="Destination to list (default: the manifest's dest_root)."
        ),
    ] = None,
    out_bad: Annotated[
        Path | None,
        typer.Option("--out-bad", help="Write missing/different records here (JSON lines)."),
    ] = None,
    size_only: Annotated[
        bool,
        typer.Option("--size-only", help="Check presence and size only, not hashes."),
    ] = False,
    lister: ListerOption = "auto",
    rclone_config: RcloneConfigOption = None,
    rclone_image: RcloneImageOption = None,
    runtime: RuntimeOption = "host",
    extra_lsjson_flags: ExtraFlagsOption = "",
    parallel: ParallelOption = 0,
    trust_manifest_roots: TrustRootsOption = False,
    json: JsonOption = False,
) -> None:
    """Check the destination against a manifest: missing, size- and hash-mismatched objects.

    The destination is listed with the same listers as `build`; hashes are
    compared where the manifest and the destination have the same type (posix
    destinations are read and hashed; `--size-only` skips that). Objects the
    manifest does not name are counted as extra, not as errors. A dest_root
    read from the manifest must be a local path or remote:path (see
    --trust-manifest-roots); the destination is printed before it is listed.

    Exit status: 0 all present and equal; 1 anything missing or different;
    2 bad manifest line or arguments; 3 rclone or the remote unavailable.

    Examples:

        xfer manifest verify --in run/manifest.jsonl

        xfer manifest verify --in run/manifest.jsonl --dest /scratch/copy --out-bad bad.jsonl

        xfer manifest verify --in run/manifest.jsonl --rclone-config rclone.conf --json
    """
    from xfer_core.errors import ExitCode
    from xfer_core.manifest.roots import redact_root
    from xfer_core.manifest.verify import verify_manifest

    out = _output(json)

    def show_dest(found: str) -> None:
        out.event("destination", dest=redact_root(found))
        out.info(f"destination: {redact_root(found)}")

    options = _list_options(
        rclone_config=rclone_config,
        rclone_image=rclone_image,
        runtime=runtime,
        extra_lsjson_flags=extra_lsjson_flags,
        parallel=parallel,
    )
    with _Reporter(out, f"listing {dest or 'destination'}") as rep:
        result = verify_manifest(
            in_file,
            dest=dest,
            out_bad=out_bad,
            lister=lister,
            options=options,
            check_hashes=not size_only,
            on_problem=rep.problem,
            on_progress=rep.progress,
            trust_roots=trust_manifest_roots,
            on_dest=show_dest,
        )
    if out.json:
        import msgspec

        out.emit_json({"event": "summary", "ok": result.ok, **msgspec.to_builtins(result)})
    else:
        verdict = "OK" if result.ok else "FAILED"
        out.info(
            f"verify {verdict}: {result.records:,} records against {result.dest}: "
            f"{result.verified:,} ok, {result.missing:,} missing, "
            f"{result.size_mismatch:,} size mismatch, {result.hash_mismatch:,} hash mismatch"
            + (
                f", {result.hash_unverified:,} without a common hash"
                if result.hash_unverified
                else ""
            )
            + (f", {result.extra:,} extra at destination" if result.extra else "")
            + (f"; bad records in {result.out_bad}" if result.out_bad else "")
        )
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILED))


def register(manifest_app: typer.Typer) -> None:
    """Add build/rebase/combine/verify to the ``manifest`` group."""
    manifest_app.command("build")(build)
    manifest_app.command("rebase")(rebase)
    manifest_app.command("combine")(combine)
    manifest_app.command("verify")(verify)
