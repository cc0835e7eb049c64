"""Diff-aware manifests (``manifest build --diff-dest``): keep what the destination lacks.

After the source is listed, the destination is listed once (the same listers
as ``manifest verify``; an rclone remote with ``--no-mimetype --no-modtime``, so
S3 answers from its listing pages alone, without a HEAD per object) and only
the records that are missing there or differ are kept. Each kept record gets
``meta.diff``: ``missing``, ``size`` or ``hash``. Equal means the same size and,
where both sides have a hash of the same type, the same hash -- how ``rclone
copy --checksum`` decides (the rclone engine copies with ``--checksum`` under
``--verify hash``). A local source has no hashes unless built with ``--hash md5``:
then an object of the same size at the destination counts as equal.

Shards of such a manifest skip the destination check (``--no-check-dest``):
every record is known to need sending.

With ``keep_all`` (what ``xfer run`` does on its own when per-shard lookups
would cost more than one listing, see :func:`xfer_core.bulk.plan.dest_listing_choice`)
nothing is dropped: every record is written, and only those *missing* at the
destination get ``meta.diff`` = ``missing``. A shard of only such records skips
the destination check; every other shard's copy compares what is there as in
the plain mode (so no listing comparison ever decides that an object is done).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec

from xfer_core.manifest.jsonl import ManifestWriter, read_manifest
from xfer_core.manifest.lister import ListOptions, is_remote
from xfer_core.manifest.record import DIFF, PATH_B64
from xfer_core.manifest.verify import BadObject, verify_manifest

#: rclone lsjson flags for a destination listing that needs sizes and hashes only.
CHEAP_LISTING = ("--no-mimetype", "--no-modtime")


class DiffResult(msgspec.Struct):
    """What a diff kept: ``kept`` of ``records``, by reason."""

    records: int
    kept: int
    missing: int
    size: int
    hash: int
    equal: int


def _key(path: str, meta: dict[str, object] | None) -> str:
    raw = meta.get(PATH_B64) if meta else None
    return "\x00" + str(raw) if raw else path


def diff_manifest(
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dest: str | None = None,
    lister: str = "auto",
    options: ListOptions | None = None,
    keep_all: bool = False,
) -> DiffResult:
    """Write to ``out`` the records of ``manifest`` missing or different at the destination
    (``keep_all``: every record, those missing there marked; see the module docstring).

    ``out`` may be ``manifest``: it is replaced atomically."""
    opts = options if options is not None else ListOptions()
    target = dest
    if target is None:
        for rec in read_manifest(manifest):
            target = rec.dest_root
            break
    if target is not None and is_remote(target):
        opts = msgspec.structs.replace(opts, extra_flags=(*opts.extra_flags, *CHEAP_LISTING))
    reasons: dict[str, str] = {}
    folder = Path(out).resolve().parent
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".diff-", suffix=".jsonl") as bad:
        result = verify_manifest(
            manifest,
            dest=dest,
            out_bad=bad.name,
            lister=lister,
            options=opts,
            check_hashes=not keep_all,
        )
        decode = msgspec.json.Decoder(BadObject).decode
        with open(bad.name, "rb") as fh:
            for line in fh:
                b = decode(line)
                reasons[_key(b.path, dict(b.meta))] = b.problem
    counts = {"missing": 0, "size": 0, "hash": 0}
    with ManifestWriter(out) as writer:
        for rec in read_manifest(manifest):
            why = reasons.get(_key(rec.path, rec.meta))
            if why is not None:
                counts[why] = counts.get(why, 0) + 1
            if keep_all and why != "missing":
                writer.write(rec)  # the copy compares it, as in the plain mode
            elif why is not None:
                writer.write(msgspec.structs.replace(rec, meta={**rec.meta, DIFF: why}))
    kept = result.records if keep_all else sum(counts.values())
    return DiffResult(
        records=result.records,
        kept=kept,
        missing=counts["missing"],
        size=counts["size"],
        hash=counts["hash"],
        equal=result.records - kept,
    )
