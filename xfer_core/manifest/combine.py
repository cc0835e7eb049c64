"""``manifest combine``: merge manifests and raw ``rclone lsjson`` parts into one manifest.

A part is either an ``xfer.manifest.v1`` JSONL file or the unmodified JSON
array that ``rclone lsjson -R`` printed (told apart by its first byte, ``[``).
An lsjson part's paths are relative to what was listed; a sidecar
``NAME.prefix`` file beside ``NAME.json`` (the convention of parallel listing
scripts) holds the prefix that was listed, and is put in front of its paths.
lsjson parts need ``source_root``/``dest_root`` (manifests carry their own).

Two records are the same object when they have the same destination root and
the same path. Exact duplicates (same size, mtime and hashes) are dropped
silently — overlapping listings are normal. Anything else with the same
path is a *conflict*: with ``on_conflict="error"`` (the default) every
conflict is reported and nothing is written (exit 1); with ``"first"`` the
first record seen (in part order) is kept and the conflicts are reported.

Records stream from the parts to the output; what is held in memory is one
entry per object (its key and a small signature, ~600 bytes with an RFC 3339
mtime and an MD5), for duplicate detection.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from xfer_core.atomic import atomic_write
from xfer_core.errors import ConfigError, ExitCode, ManifestError, TransferError, XferError
from xfer_core.manifest.build import new_run_id, normalize_dest
from xfer_core.manifest.jsonl import ManifestWriter, read_manifest
from xfer_core.manifest.lister import join_location
from xfer_core.manifest.record import PATH_B64, SCHEMA, ManifestRecord, check_relative_path

#: Conflicts kept verbatim in a result (all are counted, all go to ``conflicts_out``).
MAX_KEPT_CONFLICTS = 1000


class Conflict(msgspec.Struct):
    """Two records for the same destination object that disagree."""

    path: str
    dest: str
    kept: str
    dropped: str
    #: ``size 10 != 12``, ``mtime ...``, ``md5 ...``
    reason: str


class CombineResult(msgspec.Struct):
    """What ``combine_manifests`` did."""

    out: str
    parts: int
    records: int
    duplicates: int
    conflicts: int
    conflict_list: list[Conflict] = []


def record_key(rec: ManifestRecord) -> tuple[str, str]:
    """Identity of the destination object: (dest root, exact name)."""
    raw = rec.meta.get(PATH_B64) if rec.meta else None
    return rec.dest_root, ("\x00" + raw) if raw else rec.path


def _compact_key(rec: ManifestRecord, roots: dict[str, int]) -> str | tuple[int, str]:
    """:func:`record_key` in less memory: the name alone for the first root seen."""
    root, name = record_key(rec)
    index = roots.setdefault(root, len(roots))
    return name if index == 0 else (index, name)


_Signature = tuple[int, str | float | None, tuple[tuple[str, str], ...]]


def _signature(rec: ManifestRecord) -> _Signature:
    if not rec.hashes:
        return rec.size, rec.mtime, ()
    return rec.size, rec.mtime, tuple((sys.intern(k), v) for k, v in sorted(rec.hashes.items()))


def _difference(a: _Signature, b: _Signature) -> str | None:
    """Why two signatures disagree, or None when they describe the same object."""
    if a[0] != b[0]:
        return f"size {a[0]} != {b[0]}"
    if a[1] != b[1]:
        return f"mtime {a[1]} != {b[1]}"
    ha, hb = dict(a[2]), dict(b[2])
    for name in sorted(set(ha) & set(hb)):
        if ha[name].lower() != hb[name].lower():
            return f"{name} {ha[name]} != {hb[name]}"
    return None


def is_lsjson_part(path: str | os.PathLike[str]) -> bool:
    """True when the file is an ``rclone lsjson`` array (first non-blank byte ``[``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip()
    except OSError as exc:
        raise ManifestError(f"{os.fspath(path)}: cannot read ({exc.strerror})") from None
    return head.startswith(b"[")


def lsjson_prefix(path: Path) -> str:
    """The listed prefix from ``NAME.prefix`` beside the part, or ``""``."""
    sidecar = path.with_suffix(".prefix")
    if not sidecar.is_file():
        return ""
    prefix = sidecar.read_text(encoding="utf-8").strip().strip("/")
    if prefix:
        problem = check_relative_path(prefix)
        if problem is not None:
            raise ManifestError(f"{sidecar}: {problem}")
    return prefix


def read_lsjson_part(
    path: Path, source_root: str, dest_root: str, run_id: str
) -> Iterator[ManifestRecord]:
    """Manifest records from one raw lsjson part (directories skipped)."""
    from xfer_core.manifest.lsjson import item_to_entry, parse_lsjson_lines

    prefix = lsjson_prefix(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        for item in parse_lsjson_lines(fh, str(path)):
            if item.IsDir:
                continue
            try:
                e = item_to_entry(item, prefix)
            except XferError as exc:
                raise ManifestError(f"{path}: {exc.message}") from None
            yield ManifestRecord(
                path=e.path,
                size=e.size,
                schema=SCHEMA,
                run_id=run_id,
                source_root=source_root,
                dest_root=dest_root,
                source=join_location(source_root, e.path),
                dest=join_location(dest_root, e.path),
                mtime=e.mtime,
                hashes=e.hashes,
                etag=e.etag,
                storage_class=e.storage_class,
            )


def expand_parts(parts: Sequence[str | os.PathLike[str]], parts_dir: str | None) -> list[Path]:
    """The part files: those given, then ``*.json``/``*.jsonl`` of ``parts_dir`` in name order."""
    found = [Path(p) for p in parts]
    if parts_dir is not None:
        d = Path(parts_dir)
        if not d.is_dir():
            raise ConfigError(f"--parts-dir {d}: not a directory")
        found += sorted(p for p in d.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
    if not found:
        raise ConfigError("no parts to combine", hint="give PART files or --parts-dir DIR")
    return found


def combine_manifests(
    parts: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    parts_dir: str | None = None,
    source_root: str | None = None,
    dest_root: str | None = None,
    run_id: str | None = None,
    on_conflict: str = "error",
    conflicts_out: str | os.PathLike[str] | None = None,
) -> CombineResult:
    """Merge ``parts`` into ``out``; see the module docstring for the conflict policy.

    Raises :class:`~xfer_core.errors.TransferError` (exit 1, nothing written)
    on conflicts under the ``error`` policy, :class:`ManifestError` (exit 2) on a
    bad part line.
    """
    if on_conflict not in ("error", "first"):
        raise ConfigError(f"--on-conflict must be 'error' or 'first', not {on_conflict!r}")
    files = expand_parts(parts, parts_dir)
    src_root = normalize_dest(source_root) if source_root else None
    dst_root = normalize_dest(dest_root) if dest_root else None
    lsjson = [is_lsjson_part(p) for p in files]
    if any(lsjson) and (src_root is None or dst_root is None):
        first = files[lsjson.index(True)]
        raise ConfigError(
            f"{first} is a raw rclone lsjson part: combine needs --source-root and --dest-root",
            hint="e.g. --source-root s3src:bucket --dest-root s3dst:bucket",
        )
    rid = run_id or new_run_id()
    # per object: key -> (signature, part index, line); ~600 bytes (see the docs)
    seen: dict[str | tuple[int, str], tuple[_Signature, int, int]] = {}
    roots: dict[str, int] = {}
    conflicts: list[Conflict] = []
    n_conflicts = duplicates = 0
    aborted = False
    encode = msgspec.json.Encoder().encode
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(atomic_write(conflicts_out, "wb")) if conflicts_out else None
        try:
            with ManifestWriter(out) as writer:
                for index, (part, raw) in enumerate(zip(files, lsjson, strict=True)):
                    records = (
                        read_lsjson_part(part, src_root or "", dst_root or "", rid)
                        if raw
                        else read_manifest(part)
                    )
                    for lineno, rec in enumerate(records, 1):
                        key = _compact_key(rec, roots)
                        sig = _signature(rec)
                        prior = seen.get(key)
                        if prior is None:
                            seen[key] = (sig, index, lineno)
                            writer.write(rec)
                            continue
                        reason = _difference(prior[0], sig)
                        if reason is None:
                            duplicates += 1
                            continue
                        n_conflicts += 1
                        kept = f"{files[prior[1]]}#{prior[2]}"
                        c = Conflict(rec.path, rec.dest, kept, f"{part}#{lineno}", reason)
                        if log is not None:
                            log.write(encode(c) + b"\n")
                        if len(conflicts) < MAX_KEPT_CONFLICTS:
                            conflicts.append(c)
                if n_conflicts and on_conflict == "error":
                    raise _Abort
        except _Abort:
            aborted = True
    if aborted:
        raise CombineConflictError(
            f"{n_conflicts} conflicting record(s) (same path, different size/mtime/hash); "
            f"{os.fspath(out)} not written",
            hint="inspect them (--conflicts-out FILE), or pass --on-conflict first "
            "to keep the first record of each path",
            conflicts=conflicts,
        )
    return CombineResult(
        out=os.fspath(out),
        parts=len(files),
        records=writer.count,
        duplicates=duplicates,
        conflicts=n_conflicts,
        conflict_list=conflicts,
    )


class _Abort(Exception):
    """Leave the writer's block so the output is discarded."""


class CombineConflictError(TransferError):
    """Conflicts under the ``error`` policy (exit 1); ``conflicts`` holds the first ones."""

    def __init__(self, message: str, *, hint: str, conflicts: list[Conflict]) -> None:
        super().__init__(message, hint=hint, exit_code=ExitCode.FAILED)
        self.conflicts = conflicts
