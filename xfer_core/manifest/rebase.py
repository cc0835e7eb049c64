"""``manifest rebase``: rewrite a manifest's roots for a host that sees source or destination differently.

Only ``source_root``/``dest_root`` and the full ``source``/``dest`` locations
change; ``path`` (and everything else) is kept, so a rebased manifest shards
into the same objects. Streaming, atomic output; ``--in`` may equal ``--out``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import msgspec

from xfer_core.errors import ConfigError
from xfer_core.manifest.build import normalize_dest
from xfer_core.manifest.jsonl import ManifestWriter, read_manifest
from xfer_core.manifest.lister import join_location


class RebaseResult(msgspec.Struct):
    """What ``rebase_manifest`` did."""

    out: str
    records: int
    #: Records whose source or destination root changed.
    changed: int
    #: Old root -> new root, for every root seen.
    roots: dict[str, str] = {}


def parse_map(text: str) -> tuple[str, str]:
    """``OLD=NEW`` (split at the first ``=``) as a pair; both sides non-empty."""
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise ConfigError(
            f"--map {text!r}: expected OLD=NEW",
            hint="e.g. --map /mnt/data/set=weka-s3:set",
        )
    return old, new


def map_root(root: str, maps: Sequence[tuple[str, str]]) -> str:
    """``root`` with the longest matching ``OLD`` prefix replaced by ``NEW`` (whole components)."""
    for old, new in sorted(maps, key=lambda m: len(m[0]), reverse=True):
        if root == old:
            return new
        base = old if old.endswith(("/", ":")) else old + "/"
        if root.startswith(base):
            return join_location(new, root[len(base) :])
    return root


def rebase_manifest(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    source_root: str | None = None,
    dest_root: str | None = None,
    maps: Sequence[tuple[str, str]] = (),
) -> RebaseResult:
    """Rewrite roots: ``source_root``/``dest_root`` set them outright; ``maps`` remap prefixes.

    An explicit root wins over a map for its side. Raises
    :class:`~xfer_core.errors.ManifestError` (nothing written) on a bad input line.
    """
    if source_root is None and dest_root is None and not maps:
        raise ConfigError(
            "nothing to rebase",
            hint="give --source-root NEW and/or --dest-root NEW, or --map OLD=NEW",
        )
    new_src = normalize_dest(source_root) if source_root is not None else None
    new_dst = normalize_dest(dest_root) if dest_root is not None else None
    seen: dict[str, str] = {}
    changed = 0
    with ManifestWriter(out_path) as writer:
        for rec in read_manifest(in_path):
            src = new_src if new_src is not None else map_root(rec.source_root, maps)
            dst = new_dst if new_dst is not None else map_root(rec.dest_root, maps)
            seen.setdefault(rec.source_root, src)
            seen.setdefault(rec.dest_root, dst)
            if src != rec.source_root or dst != rec.dest_root:
                changed += 1
                rec = msgspec.structs.replace(
                    rec,
                    source_root=src,
                    dest_root=dst,
                    source=join_location(src, rec.path),
                    dest=join_location(dst, rec.path),
                )
            writer.write(rec)
    return RebaseResult(out=os.fspath(out_path), records=writer.count, changed=changed, roots=seen)
