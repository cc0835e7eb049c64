"""``manifest build``: list a source with a lister plugin and write an ``xfer.manifest.v1`` file.

Streaming end to end: entries go from the lister straight into the atomic
:class:`~xfer_core.manifest.jsonl.ManifestWriter`, so memory does not grow with
the number of objects, and the output appears complete or not at all. A
listing with errors (an unreadable directory: objects may be missing) writes
nothing and fails, unless ``allow_errors`` is set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import time
from collections.abc import Callable, Iterator

import msgspec

from xfer_core.errors import ConfigError, ExitCode, TransferError
from xfer_core.manifest.jsonl import ManifestWriter
from xfer_core.manifest.lister import (
    ListEntry,
    ListOptions,
    ListProblem,
    is_remote,
    join_location,
    select_lister,
)
from xfer_core.manifest.record import SCHEMA, ManifestRecord
from xfer_core.manifest.roots import check_root_credentials

#: Problems kept verbatim in a result (the rest are only counted).
MAX_KEPT_PROBLEMS = 100
#: Records encoded at once (msgspec's encode_lines is far faster than one by one).
_BATCH = 4096


class BuildResult(msgspec.Struct):
    """What ``build_manifest`` did."""

    out: str
    lister: str
    run_id: str
    source_root: str
    dest_root: str
    objects: int
    bytes: int
    seconds: float
    #: Listing errors (objects may be missing): the build fails unless allowed.
    errors: int = 0
    #: Policy skips (symlinks, FIFOs): reported, not errors.
    skipped: int = 0
    #: The first problem lines, errors and skips alike.
    problems: list[str] = []


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic GC while streaming records.

    A listing allocates millions of short-lived, acyclic objects; reference
    counting frees them all, and the collector's scans of the in-flight batches
    cost more than a third of the build time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def new_run_id() -> str:
    """A file-name-safe run id: UTC time plus 6 random hex digits."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{os.urandom(3).hex()}"


def normalize_dest(dest: str) -> str:
    """The destination root as recorded: as given, without a trailing ``/``."""
    if not dest:
        raise ConfigError("--dest must not be empty")
    check_root_credentials(dest, "destination")
    if dest.endswith("/") and dest.rstrip("/") and not dest.endswith(":/"):
        return dest.rstrip("/")
    return dest


def _own_output(source_root: str, out: str | os.PathLike[str]) -> str | None:
    """``out`` relative to a local source root when the manifest is written inside it."""
    if is_remote(source_root) or not os.path.isabs(source_root):
        return None
    target = os.path.abspath(os.fspath(out))
    root = source_root.rstrip("/") + "/"
    return target[len(root) :] if target.startswith(root) else None


def _without_own_output(
    entries: Iterator[ListEntry], own: str, problem: Callable[[ListProblem], None]
) -> Iterator[ListEntry]:
    """Leave out the manifest being written (and its temp file) when it is inside the source."""
    directory, _, name = own.rpartition("/")
    temp_prefix = (directory + "/" if directory else "") + "." + name + "."
    for e in entries:
        if e.path == own or (e.path.startswith(temp_prefix) and e.path.endswith(".tmp")):
            problem(ListProblem(f"{e.path}: this build's own output, not listed", error=False))
            continue
        yield e


def build_manifest(
    source: str,
    dest: str,
    out: str | os.PathLike[str],
    *,
    lister: str = "auto",
    options: ListOptions | None = None,
    run_id: str | None = None,
    allow_errors: bool = False,
    on_problem: Callable[[ListProblem], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> BuildResult:
    """List ``source`` and write its manifest to ``out`` (atomically).

    ``lister`` is a lister plugin name or ``auto`` (posix for a local
    directory, rclone for ``remote:path``). ``on_problem`` sees every
    non-fatal problem as it happens; ``on_progress(objects, bytes)`` is called
    now and then. Raises :class:`~xfer_core.errors.XferError` (nothing written)
    when the listing fails or has errors and ``allow_errors`` is false.
    """
    if not source:
        raise ConfigError("--source must not be empty")
    check_root_credentials(source, "source")
    if lister == "auto" and not is_remote(source) and not os.path.isdir(source):
        what = "not a directory" if os.path.exists(source) else "no such directory"
        raise ConfigError(
            f"source {source}: {what}",
            hint="give a local directory or an rclone remote such as s3src:bucket/prefix",
        )
    chosen = select_lister(source, lister)
    opts = options if options is not None else ListOptions()
    run_id = run_id or new_run_id()
    source_root = chosen.normalize_root(source)
    dest_root = normalize_dest(dest)
    problems: list[str] = []
    counts = {"errors": 0, "skipped": 0}

    def problem(p: ListProblem) -> None:
        counts["errors" if p.error else "skipped"] += 1
        if len(problems) < MAX_KEPT_PROBLEMS:
            problems.append(p.message)
        if on_problem is not None:
            on_problem(p)

    opts = msgspec.structs.replace(opts, on_problem=problem, on_progress=on_progress)
    started = time.monotonic()
    src_prefix = chosen.join(source_root, "")
    dst_prefix = join_location(dest_root, "")
    entries = chosen.list(source, opts)
    own = _own_output(source_root, out)
    if own is not None:
        entries = _without_own_output(entries, own, problem)
    with paused_gc(), ManifestWriter(out) as writer:
        batch: list[ManifestRecord] = []
        add = batch.append
        for e in entries:
            add(
                ManifestRecord(
                    e.path,
                    e.size,
                    SCHEMA,
                    run_id,
                    source_root,
                    dest_root,
                    src_prefix + e.path,
                    dst_prefix + e.path,
                    e.mtime,
                    e.hashes,
                    e.etag,
                    e.storage_class,
                    e.meta,
                )
            )
            if len(batch) >= _BATCH:
                writer.write_batch(batch)
                batch.clear()
        writer.write_batch(batch)
        if counts["errors"] and not allow_errors:
            raise TransferError(
                f"listing {source_root} had {counts['errors']} error(s) (objects may be "
                "missing); no manifest written",
                hint="fix the permissions, or pass --allow-errors to write the manifest anyway",
                exit_code=ExitCode.FAILED,
            )
    return BuildResult(
        out=os.fspath(out),
        lister=chosen.name,
        run_id=run_id,
        source_root=source_root,
        dest_root=dest_root,
        objects=writer.count,
        bytes=writer.total_bytes,
        seconds=time.monotonic() - started,
        errors=counts["errors"],
        skipped=counts["skipped"],
        problems=problems,
    )
