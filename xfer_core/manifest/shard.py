"""Byte-balanced, deterministic sharding of a manifest (``xfer manifest shard``).

Two layouts (``layout=``, names in :data:`LAYOUTS`):

- ``locality`` (the default): contiguous, byte-balanced ranges of the paths
  sorted by directory, so a shard touches a few directories; objects heavier
  than a fair share get a shard each. See :mod:`xfer_core.manifest.locality`.
- ``lpt``: the greedy LPT below; the best balance, but every shard holds files
  of every directory.

Either way each shard's metadata carries the request cost model's inputs and
choice (directories touched, LIST pages, lookup mode; see
:mod:`xfer_core.manifest.locality`).

LPT model: every object has a weight ``size + object_overhead`` (small objects are
not free). Objects are taken heaviest first (ties: CRC-32 of the path bytes, then
the later line first) and each goes to the lightest shard so far (ties: fewer
records, then lower shard index) -- greedy LPT with a heap. An object heavier
than a fair share therefore ends up alone in its shard.

Memory: the first pass keeps one packed Python int per record (size, path CRC,
index) and spools the names to an anonymous temp file; no record objects are
kept. The second pass streams the manifest again and copies each raw line into
its shard, so records are never re-encoded and stay byte-identical.

Output (in ``outdir``): ``shard_%06d.jsonl`` (the records), ``shard_%06d.files``
(one name per line, exact bytes, for ``rclone copy --files-from-raw``) and
``shards.meta.json`` (:class:`ShardMeta`), written last. The ``.files`` lists
spell names the way rclone does internally (its Standard encoding, see
:mod:`xfer_core.manifest.rclone_names`): a name with a tab, CR or newline is
listed as ``tab␉name``, so every name -- newlines included -- fits on one line
and rclone finds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import re
import tempfile
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import IO

import msgspec

from xfer_core.atomic import atomic_write_bytes, fsync_files, install_files, staging_dir
from xfer_core.errors import ManifestError, XferError
from xfer_core.manifest.analyze import (
    Analysis,
    analyze_sorted_sizes,
    suggest,
)
from xfer_core.manifest.jsonl import decode_line
from xfer_core.manifest.locality import (
    DIR_SEP,
    FILE_SEP,
    RunPages,
    choose_lookup,
    locality_assign,
    route_sides,
    touch_stats,
)
from xfer_core.manifest.rclone_names import rclone_name_list
from xfer_core.manifest.record import DIFF, PATH_B64, SCHEMA, ManifestRecord, meta_too_deep
from xfer_core.manifest.roots import check_manifest_roots

#: Our shards.meta.json. Upstream xfer's shards.meta.json is named ``xfer.shards.v1``
#: with other contents; our own files of that name (before this one) are still read.
SHARDS_SCHEMA = "xfer.shardmeta.v1"
OLD_SHARDS_SCHEMA = "xfer.shards.v1"
#: Shard layouts of the ``bytes`` strategy by name: the first is the default.
LAYOUTS = {"locality": "locality-ranges", "lpt": "lpt-heap"}
META_NAME = "shards.meta.json"
#: Most shards one run may have (the shard index is packed into 24 bits).
MAX_SHARDS = 1 << 24
_MAX_RECORDS = 1 << 32

_STALE = re.compile(r"shard_\d{6,}\.(jsonl|files)\Z")

# Heap entries are single ints: load << _LOAD_SHIFT | records << _SHARD_BITS | shard,
# so heap order is (load, records, shard) without tuples.
_SHARD_BITS = 24
_LOAD_SHIFT = 64
_ONE_RECORD = 1 << _SHARD_BITS
_SHARD_MASK = _ONE_RECORD - 1
_COUNT_MASK = (1 << (_LOAD_SHIFT - _SHARD_BITS)) - 1
_LOW32 = 0xFFFFFFFF
_FLUSH_AT = 1 << 17
_CHANGED = (
    "the record count differs between the two passes over the manifest: it changed while "
    "being sharded, or a line holds more than one JSON object"
)


def jsonl_name(index: int) -> str:
    """File name of shard ``index``'s records."""
    return f"shard_{index:06d}.jsonl"


def files_name(index: int) -> str:
    """File name of shard ``index``'s ``--files-from-raw`` list."""
    return f"shard_{index:06d}.files"


class ShardInfo(msgspec.Struct, frozen=True):
    """One shard as recorded in ``shards.meta.json``."""

    index: int
    jsonl: str
    files: str
    records: int
    bytes: int
    #: bytes + records * object_overhead
    weight: int
    #: sha256 of the shard's .jsonl bytes: the shard's identity for run state.
    sha256: str
    #: sha256 of the .files list.
    files_sha256: str
    #: Directories holding the shard's records.
    dirs: int = 0
    #: LIST pages to list those directories and their parents (whole directories).
    list_pages: int = 0
    #: Records the manifest says must be sent (``meta.diff``, from ``--diff-dest``).
    send: int = 0
    #: The cost model's choice for looking at what a side holds: ``list`` its
    #: directories or ``objects`` (one request each).
    lookup: str = "list"
    #: Requests of that lookup, both remote sides together.
    lookup_requests: int = 0
    #: False when every record must be sent: the destination is not looked at.
    check_dest: bool = True
    #: The deepest directory (``/``-separated, ``""``: the root) holding all of the
    #: shard's records: the copy runs there, so it lists no parent directory.
    subdir: str = ""


class ShardMeta(msgspec.Struct, frozen=True):
    """``shards.meta.json``: the sharding of one manifest."""

    manifest: str
    num_shards: int
    #: How the shard count was chosen: ``num-shards``, ``target-shard-bytes`` or ``auto``.
    sizing: str
    total_records: int
    total_bytes: int
    object_overhead: int
    total_weight: int
    largest_weight: int
    #: max(ceil(total_weight / num_shards), largest_weight): no sharding can do better.
    lower_bound: int
    max_weight: int
    min_weight: int
    #: max_weight / lower_bound (1.0 is optimal).
    imbalance: float
    source_root: str
    dest_root: str
    shards: list[ShardInfo]
    method: str = "lpt-heap"
    schema: str = SHARDS_SCHEMA


class _MetaHead(msgspec.Struct):
    """The fields that tell shards.meta.json files apart (ours, ours before, upstream's)."""

    schema: str = ""
    manifest: str | None = None
    num_shards: int | None = None
    strategy: str | None = None


class UpstreamRunDirError(XferError):
    """The shards (or run dir) were written by upstream xfer (FluidNumerics/xfer)."""


_meta_encoder = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(ShardMeta)
_record_decoder = msgspec.json.Decoder(ManifestRecord)


def load_shard_meta(outdir: str | os.PathLike[str], *, check_files: bool = True) -> ShardMeta:
    """Read ``outdir/shards.meta.json``; with ``check_files`` also require every
    listed shard file to exist. Raises :class:`XferError` (exit 2) when it cannot."""
    path = Path(outdir) / META_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise XferError(
            f"{path}: cannot read shard metadata ({exc.strerror})",
            hint="run `xfer manifest shard` first (an interrupted run leaves no meta)",
        ) from None
    try:
        head = msgspec.json.decode(data, type=_MetaHead)
    except msgspec.DecodeError as exc:
        raise XferError(f"{path}: not valid shard metadata ({exc})") from None
    if head.schema == OLD_SHARDS_SCHEMA and head.manifest is None:
        raise UpstreamRunDirError(
            f"{path}: upstream xfer's shard metadata ({head.num_shards} shards, strategy "
            f"{head.strategy or '?'}), not xfer's",
            hint=f"resume the run dir with `xfer run --run-dir {path.parent.parent}`: its "
            "manifest is re-sharded and its .done markers are verified, not trusted",
        )
    if head.schema not in (SHARDS_SCHEMA, OLD_SHARDS_SCHEMA):
        raise XferError(
            f"{path}: unknown schema {head.schema!r} (this xfer reads {SHARDS_SCHEMA!r} "
            f"and {OLD_SHARDS_SCHEMA!r})",
            hint="written by another tool or a newer xfer; re-run `xfer manifest shard`",
        )
    try:
        meta = _meta_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise XferError(f"{path}: not valid shard metadata ({exc})") from None
    if check_files:
        for info in meta.shards:
            for name in (info.jsonl, info.files):
                if not (path.parent / name).is_file():
                    raise XferError(
                        f"{path}: lists {name}, which is missing; re-run the shard step"
                    )
    return meta


def _scan(
    name: str,
    fh: IO[bytes],
    spool: IO[bytes],
    keys: list[int],
    bases: list[bytes],
    folders: dict[bytes, tuple[bytes, list[int]]],
    send: list[int],
    sizes: array[int],
) -> tuple[int, int, str, str, bool, int]:
    """Pass 1: validate every line, append one sort key per record and spool its
    name as rclone spells it; ``sizes`` gets each record's size, ``bases`` its
    name's last component, ``folders`` maps each directory (as in the name) to its
    directory key (:func:`~xfer_core.manifest.locality.dir_of`) and the indices of
    its records, ``send`` the index of each record the manifest says must be sent.
    Returns (records, total_bytes, source_root, dest_root, saw_blank_lines,
    dir_pages: :class:`~xfer_core.manifest.locality.RunPages` of the records'
    directories)."""
    decode = _record_decoder.decode
    crc32 = zlib.crc32
    low32 = _LOW32
    append = keys.append
    names: list[bytes] = []
    add_name = names.append
    add_base = bases.append
    add_size = sizes.append
    known = folders
    sep_key = DIR_SEP
    index = 0
    src: str | None = None
    dst = ""
    blank = False
    pages = RunPages()
    dirs: list[str] = []
    add_dir = dirs.append
    for lineno, line in enumerate(fh, 1):
        try:
            rec = decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            if not line.strip():
                blank = True
                continue
            rec = decode_line(line, f"{name}:{lineno}")  # raises with the shared message
        path = rec.path
        if (
            rec.schema != SCHEMA
            or rec.size < 0
            or not path
            or path[0] == "/"
            or "\x00" in path
            or ".." in path
            or (rec.meta and (PATH_B64 in rec.meta or meta_too_deep(rec.meta)))
        ):
            # raises the shared message, unless the path was only suspicious ("a..b");
            # exact-bytes names (meta.path_b64) always take the full check
            rec = decode_line(line, f"{name}:{lineno}")
        if rec.source_root != src or rec.dest_root != dst:
            if src is not None:
                raise ManifestError(
                    f"{name}:{lineno}: roots {rec.source_root!r} -> {rec.dest_root!r} differ "
                    f"from the first record's {src!r} -> {dst!r}; one shard set needs one "
                    "pair of roots",
                    hint="split the manifest by root, or `xfer manifest rebase` it to common roots",
                )
            src, dst = rec.source_root, rec.dest_root
        try:
            raw = path.encode() if not rec.meta or PATH_B64 not in rec.meta else _b64_name(rec)
        except (UnicodeEncodeError, ValueError, TypeError) as exc:
            raise ManifestError(
                f"{name}:{lineno}: path is not valid Unicode text ({exc})"
            ) from None
        size = rec.size
        try:
            add_size(size)
        except OverflowError:
            raise ManifestError(
                f"{name}:{lineno}: size {size} is not plausible (>= 2**64)"
            ) from None
        append((size << 64) | ((low32 ^ crc32(raw)) << 32) | index)
        add_name(raw)
        head, _, base = raw.rpartition(b"/")
        folder = known.get(head)
        if folder is None:  # one shared key object per directory
            folder = known[head] = (head.replace(b"/", sep_key), [])
        folder[1].append(index)
        add_base(base)
        add_dir(path.rpartition("/")[0])
        if rec.meta and DIFF in rec.meta:
            send.append(index)
        index += 1
        if not index & 4095:
            spool.write(rclone_name_list(names))
            names.clear()
            pages.add(dirs)
            dirs.clear()
            if index >= _MAX_RECORDS:
                raise ManifestError(f"{name}:{lineno}: more than {_MAX_RECORDS} records")
    spool.write(rclone_name_list(names))
    pages.add(dirs)
    return index, sum(sizes), src or "", dst, blank, pages.pages


def _locality_order(
    folders: dict[bytes, tuple[bytes, list[int]]], bases: list[bytes]
) -> tuple[list[int], list[bytes]]:
    """Record indices in :func:`~xfer_core.manifest.locality.sort_key` order, and the
    directory key of each: directories in key order (a directory's files sort before
    its sub-directories, so ``key + FILE_SEP`` orders them), then each directory's
    records by name (stable: equal names keep manifest order)."""
    order: list[int] = []
    dirs: list[bytes] = []
    file_sep = FILE_SEP
    for key, members in sorted(folders.values(), key=lambda entry: entry[0] + file_sep):
        if len(members) > 1:
            members.sort(key=bases.__getitem__)
        order += members
        dirs += [key] * len(members)
    return order, dirs


def _b64_name(rec: ManifestRecord) -> bytes:
    import base64

    return base64.b64decode(rec.meta[PATH_B64], validate=True)


def _lpt(
    keys: list[int], records: int, num_shards: int, overhead: int
) -> tuple[array[int], list[int]]:
    """Assign records (keys sorted ascending, taken from the end) to shards.

    Returns the per-record shard array and the final heap entries."""
    assign = array("I", [0]) * records
    heap = list(range(num_shards))
    replace = heapq.heapreplace
    # the key's size field already sits at the load's bit position (both << 64)
    add = (overhead << _LOAD_SHIFT) + _ONE_RECORD
    shard_mask, low32, size_bits = _SHARD_MASK, _LOW32, -(1 << _LOAD_SHIFT)
    for key in reversed(keys):
        top = heap[0]
        assign[key & low32] = top & shard_mask
        replace(heap, top + (key & size_bits) + add)
    return assign, heap


#: ``--strategy`` names (upstream xfer's): the ``method`` recorded in shards.meta.json.
#: (``bytes`` records its layout instead, see :data:`LAYOUTS`).
STRATEGIES = {"bytes": "byte-balanced", "count": "round-robin", "hash": "name-hash"}


def _assign_simple(
    strategy: str, keys: list[int], records: int, num_shards: int, overhead: int
) -> tuple[array[int], list[int]]:
    """``count``/``hash`` placement, in :func:`_lpt`'s result format.

    count: records dealt round-robin from the largest down (counts differ by at most
    one, bytes spread). hash: crc32 of the name modulo the shard count (a name keeps
    its shard when other records come and go)."""
    assign = array("I", [0]) * records
    loads = [0] * num_shards
    counts = [0] * num_shards
    low32 = _LOW32
    for rank, key in enumerate(reversed(keys)):
        if strategy == "count":
            shard = rank % num_shards
        else:
            shard = (((key >> 32) & low32) ^ low32) % num_shards
        assign[key & low32] = shard
        loads[shard] += (key >> 64) + overhead
        counts[shard] += 1
    heap = [(loads[s] << _LOAD_SHIFT) | (counts[s] << _SHARD_BITS) | s for s in range(num_shards)]
    return assign, heap


def _locality(
    keys: list[int],
    sizes: array[int],
    order: list[int],
    dirs: list[bytes],
    num_shards: int,
    overhead: int,
) -> tuple[array[int], list[int]]:
    """Contiguous ranges of the sorted paths (:func:`~xfer_core.manifest.locality.locality_assign`).

    Returns the per-record shard array and heap-like entries (load, records, shard)."""
    weights = list(map(overhead.__add__, sizes)) if overhead else sizes
    heaviest = (key & _LOW32 for key in reversed(keys))
    assign, loads, counts = locality_assign(order, dirs, weights, heaviest, num_shards)
    heap = [(loads[s] << _LOAD_SHIFT) | (counts[s] << _SHARD_BITS) | s for s in range(num_shards)]
    return assign, heap


def _lookup_stats(
    order: list[int],
    dirs: list[bytes],
    assign: array[int],
    send: list[int],
    heap: list[int],
    roots: tuple[str, str],
) -> list[dict[str, object]]:
    """Per shard: the cost model's inputs and choice (fields of :class:`ShardInfo`)."""
    from collections import Counter

    num_shards = len(heap)
    src, dst, server_side = route_sides(*roots)
    dir_count, list_pages, subdirs = touch_stats(order, dirs, assign, num_shards)
    records = [0] * num_shards
    for entry in heap:
        records[entry & _SHARD_MASK] = (entry >> _SHARD_BITS) & _COUNT_MASK
    sending = Counter(map(assign.__getitem__, send))
    sends = [sending[s] for s in range(num_shards)]
    out: list[dict[str, object]] = []
    for s in range(num_shards):
        check_dest = sends[s] < records[s]
        mode, cost = choose_lookup(
            records[s],
            list_pages[s],
            src=src,
            dst=dst,
            server_side=server_side,
            check_dest=check_dest,
        )
        out.append(
            {
                "dirs": dir_count[s],
                "list_pages": list_pages[s],
                "send": sends[s],
                "lookup": mode,
                "lookup_requests": cost,
                "check_dest": check_dest,
                "subdir": subdirs[s],
            }
        )
    return out


def shard_manifest(
    in_path: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    *,
    num_shards: int | None = None,
    target_shard_bytes: int | None = None,
    auto: bool = False,
    object_overhead: int | None = None,
    progress: Callable[[str], None] | None = None,
    strategy: str = "bytes",
    trust_roots: bool = False,
    layout: str = "locality",
    on_analysis: Callable[[Analysis], None] | None = None,
) -> ShardMeta:
    """Split the manifest ``in_path`` into byte-balanced shards in ``outdir``.

    Exactly one of ``num_shards``, ``target_shard_bytes`` (shards of about that
    weight) or ``auto`` (the count :func:`~xfer_core.manifest.analyze.suggest`
    gives) chooses the shard count. ``object_overhead`` defaults to the
    suggested bytes-equivalent cost of one object for this manifest's profile.

    Same input and options give byte-identical files. The outdir appears
    complete or the old one stays valid: files are written to a temp dir first,
    the old meta is removed before any shard file is replaced, stale shard files
    of a previous run are removed, and the new meta is moved in last.

    ``progress`` is called with a short line as each phase starts. ``strategy``
    (upstream's names): ``bytes`` balances weight (the default), ``count`` object
    counts, ``hash`` places by a hash of the name (see :data:`STRATEGIES`). ``layout``
    (``bytes`` only) is a key of :data:`LAYOUTS`: ``locality`` (contiguous ranges of
    the sorted paths, the default) or ``lpt`` (greedy LPT). The roots must be local
    paths or plain ``remote:path`` unless ``trust_roots``
    (:func:`~xfer_core.manifest.roots.check_manifest_roots`), checked before
    anything is written. ``on_analysis`` is called with the manifest's
    :class:`~xfer_core.manifest.analyze.Analysis` (what
    :func:`~xfer_core.manifest.analyze.analyze_manifest` gives), taken from the same
    pass over the manifest (``xfer run`` reads it once).

    Raises :class:`XferError` (exit 2) for bad lines (``FILE:LINE``), an empty
    manifest and a bad shard count.
    """
    say = progress or (lambda _line: None)
    chosen = [num_shards is not None, target_shard_bytes is not None, auto]
    if sum(chosen) != 1:
        raise XferError("give exactly one of --num-shards, --target-shard-bytes or --auto")
    if num_shards is not None and num_shards < 1:
        raise XferError(f"--num-shards must be at least 1, not {num_shards}")
    if target_shard_bytes is not None and target_shard_bytes < 1:
        raise XferError(f"--target-shard-bytes must be positive, not {target_shard_bytes}")
    if object_overhead is not None and object_overhead < 0:
        raise XferError(f"--object-overhead must not be negative, not {object_overhead}")
    if strategy not in STRATEGIES:
        raise XferError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if layout not in LAYOUTS:
        raise XferError(f"unknown shard layout {layout!r} (known: {', '.join(LAYOUTS)})")
    name = os.fspath(in_path)
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise XferError(f"{out}: exists and is not a directory")
    try:
        fh = open(name, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ManifestError(f"{name}: cannot read manifest ({exc.strerror})") from None
    with fh:
        before = os.fstat(fh.fileno())
        spool_dir = out.parent if out.parent.is_dir() else None
        with tempfile.TemporaryFile(dir=spool_dir) as spool:
            keys: list[int] = []
            bases: list[bytes] = []
            folders: dict[bytes, tuple[bytes, list[int]]] = {}
            send: list[int] = []
            sizes = array("Q")
            say(f"reading {name} ...")
            records, total_bytes, src_root, dst_root, blank, dir_pages = _scan(
                name, fh, spool, keys, bases, folders, send, sizes
            )
            if records == 0:
                raise ManifestError(f"{name}: the manifest has no records; nothing to shard")
            check_manifest_roots(
                name, {"source_root": src_root, "dest_root": dst_root}, trusted=trust_roots
            )
            keys.sort()
            analysis = analyze_sorted_sizes(
                in_path, [key >> 64 for key in keys], (src_root, dst_root), dir_pages
            )
            if on_analysis is not None:
                on_analysis(analysis)
            small, large = analysis.small_objects, analysis.large_bytes
            advice = suggest(records, total_bytes, small, large, object_overhead)
            overhead = advice.object_overhead
            total_weight = total_bytes + records * overhead
            if auto:
                sizing, n = "auto", advice.shards
            elif target_shard_bytes is not None:
                sizing = "target-shard-bytes"
                n = min(records, max(1, -(-total_weight // target_shard_bytes)))
            else:
                assert num_shards is not None
                sizing, n = "num-shards", num_shards
            _check_shard_count(name, n, records)
            largest = (keys[-1] >> 64) + overhead
            say(f"placing {records:,} records into {n:,} shards ...")
            order, dirs = _locality_order(folders, bases)
            del folders, bases
            if strategy != "bytes":
                assign, heap = _assign_simple(strategy, keys, records, n, overhead)
            elif layout == "lpt":
                assign, heap = _lpt(keys, records, n, overhead)
            else:
                assign, heap = _locality(keys, sizes, order, dirs, n, overhead)
            del keys, sizes
            stats = _lookup_stats(order, dirs, assign, send, heap, (src_root, dst_root))
            del order, dirs
            spool.seek(0)
            fh.seek(0)
            say(f"writing {n:,} shards ...")
            with staging_dir(out) as tmp:
                shards = _write_shards(fh, spool, assign, blank, heap, overhead, tmp)
                shards = [msgspec.structs.replace(s, **stats[s.index]) for s in shards]
                if os.fstat(fh.fileno()).st_mtime_ns != before.st_mtime_ns:
                    raise XferError(f"{name}: the manifest changed while it was being sharded")
                weights = [s.weight for s in shards]
                lower = max(-(-total_weight // n), largest)
                meta = ShardMeta(
                    manifest=os.path.abspath(name),
                    num_shards=n,
                    sizing=sizing,
                    total_records=records,
                    total_bytes=total_bytes,
                    object_overhead=overhead,
                    total_weight=total_weight,
                    largest_weight=largest,
                    lower_bound=lower,
                    max_weight=max(weights),
                    min_weight=min(weights),
                    imbalance=round(max(weights) / lower, 6) if lower else 1.0,
                    source_root=src_root,
                    dest_root=dst_root,
                    shards=shards,
                    method=LAYOUTS[layout] if strategy == "bytes" else STRATEGIES[strategy],
                )
                atomic_write_bytes(tmp / META_NAME, _meta_encoder.encode(meta) + b"\n")
                install_files(
                    tmp, out, _names(shards), last=META_NAME, stale=lambda n: bool(_STALE.match(n))
                )
    return meta


def _check_shard_count(name: str, n: int, records: int) -> None:
    if n > records:
        raise XferError(
            f"{n} shards for {records} object(s) in {name}: a shard would be empty",
            hint=f"use --num-shards {records} or fewer",
        )
    if n > MAX_SHARDS:
        raise XferError(f"{n} shards is more than the {MAX_SHARDS} one run supports")


def _names(shards: list[ShardInfo]) -> list[str]:
    return [n for s in shards for n in (s.jsonl, s.files)]


def _write_shards(
    fh: IO[bytes],
    spool: IO[bytes],
    assign: array[int],
    has_blank: bool,
    heap: list[int],
    overhead: int,
    tmp: Path,
) -> list[ShardInfo]:
    """Pass 2: copy each raw line to its shard's .jsonl and its name to the .files list.

    ``assign[i]`` is record i's shard."""
    n = len(heap)
    paths = [tmp / jsonl_name(i) for i in range(n)]
    lists = [tmp / files_name(i) for i in range(n)]
    bufs = [bytearray() for _ in range(n)]
    fbufs = [bytearray() for _ in range(n)]
    digests = [hashlib.sha256() for _ in range(n)]
    fdigests = [hashlib.sha256() for _ in range(n)]
    with _ShardFiles(paths, lists, keep_open=_fd_budget(2 * n)) as files:

        def flush(s: int) -> None:
            files.write(s, bufs[s], fbufs[s])
            digests[s].update(bufs[s])
            fdigests[s].update(fbufs[s])
            bufs[s].clear()
            fbufs[s].clear()

        pos = 0
        names_in = iter(spool)
        for lines in _line_chunks(fh):
            if has_blank:
                lines = [ln for ln in lines if ln.strip()]
            k = len(lines)
            ids = assign[pos : pos + k]
            pos += k
            if len(ids) != k:
                raise XferError(_CHANGED)
            names = list(islice(names_in, k))
            # group the chunk by shard with C-level sort/itemgetter (stable: manifest order kept)
            if k > 1:
                pick = itemgetter(*sorted(range(k), key=ids.__getitem__))
                lines, names, sids = pick(lines), pick(names), pick(ids)
            else:
                sids = ids
            a = 0
            while a < k:
                s = sids[a]
                b = bisect_right(sids, s, a)
                buf = bufs[s]
                buf += b"\n".join(lines[a:b])
                buf += b"\n"
                fbufs[s] += b"".join(names[a:b])
                if len(buf) >= _FLUSH_AT:
                    flush(s)
                a = b
        if pos != len(assign):
            raise XferError(_CHANGED)
        for s in range(n):
            flush(s)
    fsync_files([*paths, *lists])
    infos = []
    for entry in heap:
        s = entry & _SHARD_MASK
        records = (entry >> _SHARD_BITS) & _COUNT_MASK
        weight = entry >> _LOAD_SHIFT
        infos.append(
            ShardInfo(
                index=s,
                jsonl=jsonl_name(s),
                files=files_name(s),
                records=records,
                bytes=weight - records * overhead,
                weight=weight,
                sha256=digests[s].hexdigest(),
                files_sha256=fdigests[s].hexdigest(),
            )
        )
    infos.sort(key=lambda i: i.index)
    return infos


def _line_chunks(fh: IO[bytes], size: int = 1 << 24) -> Iterator[list[bytes]]:
    """The file's lines (without their newline), a list per ``size`` bytes read."""
    rest = b""
    while True:
        data = fh.read(size)
        if not data:
            if rest:
                yield [rest]
            return
        lines = data.split(b"\n")
        lines[0] = rest + lines[0]
        rest = lines.pop()
        if lines:
            yield lines


def _fd_budget(wanted: int) -> bool:
    """True when ``wanted`` more files may stay open (raising the soft limit if allowed)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + 64
    if soft == resource.RLIM_INFINITY or need <= soft:
        return True
    if hard == resource.RLIM_INFINITY or need <= hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            return True
    return False


class _ShardFiles:
    """Append-only shard outputs: kept open when the fd limit allows, else reopened."""

    def __init__(self, paths: list[Path], lists: list[Path], *, keep_open: bool):
        self._paths = paths
        self._lists = lists
        self._fds: dict[Path, int] = {}
        self._keep = keep_open

    def __enter__(self) -> _ShardFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _append(self, path: Path, data: bytearray) -> None:
        fd = self._fds.get(path)
        if fd is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
            if self._keep:
                self._fds[path] = fd
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            if not self._keep:
                os.close(fd)

    def write(self, shard: int, records: bytearray, names: bytearray) -> None:
        self._append(self._paths[shard], records)
        self._append(self._lists[shard], names)
