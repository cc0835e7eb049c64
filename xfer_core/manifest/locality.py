"""Shards laid out for locality, and the per-shard request cost model.

**Layout** (``locality``, the default of :func:`~xfer_core.manifest.shard.shard_manifest`):
records are sorted by directory, then name (:func:`sort_key`: the files of one
directory are contiguous, and so is every subtree). Objects heavier than a fair
share (``weight > remaining weight / remaining shards``, taken heaviest first) get
a shard each. The rest is cut into contiguous ranges of about equal weight; a cut
moves to the nearest directory boundary when one lies within ``DIR_SLACK`` of a
fair share of the ideal point, so most shards own whole directories and each
shard touches only a few. A shard's weight is therefore at most a fair share plus
``2 × DIR_SLACK`` of it plus the heaviest remaining object.

**Cost model.** A shard's copy runs in its *sub-root*: the deepest directory
holding all of its records (made of plain names only, :data:`_PLAIN`), so it does
not list the directories above. It must find out what the destination already
holds (and, for a remote source, what the source holds). Per remote side it can

- ``list`` its directories: one LIST page (up to 1,000 entries) per page of the
  sub-root and of every directory below it on the way to its records (a directory
  lists *all* its entries -- files and sub-directories -- not only the shard's);
- ``objects``: one request (HEAD) per object (``--no-traverse``); on the source
  side of a server-side copy that HEAD is the one the copy makes anyway;

and the model picks the fewer requests for the route (:func:`lookup_requests`;
ties: list). (``--fast-list`` does not
apply: with ``--files-from`` rclone lists only the directories the list names,
measured.) When the
manifest says every record of the shard must be sent (a ``--diff-dest`` manifest:
each record is missing or different at the destination), the destination is not
looked at at all (``check_dest`` false: ``--no-check-dest``). The destination's
shape is taken to mirror the source's (an upper bound for a fresh destination).
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate, compress, count, islice, pairwise, repeat
from operator import floordiv, ne, neg, sub

#: Entries per LIST page (S3's ListObjectsV2 maximum, rclone's default --s3-list-chunk).
LIST_PAGE = 1000
#: A cut may move this share of a fair shard weight to reach a directory boundary.
DIR_SLACK = 0.03
#: Lookup modes, in tie-break order.
LOOKUPS = ("list", "objects")

#: Between directory components in a sort key, and between the directory and the name.
DIR_SEP = b"\x00\x02"
FILE_SEP = b"\x00\x01"
_SEP, _FILE = DIR_SEP, FILE_SEP


def sort_key(raw: bytes) -> bytes:
    """The locality order of one name: by directory (component-wise), files before
    sub-directories, then by name. Injective, since names never hold NUL."""
    head, sep, base = raw.rpartition(b"/")
    if not sep:
        return _FILE + base
    return head.replace(b"/", _SEP) + _FILE + base


def dir_of(key: bytes) -> bytes:
    """The directory part of a :func:`sort_key` (``b""`` for the root)."""
    return key[: key.rindex(_FILE)]


def _parent(d: bytes) -> bytes:
    cut = d.rfind(_SEP)
    return b"" if cut < 0 else d[:cut]


def _chain(d: bytes) -> list[bytes]:
    """``d`` and its parents up to the root, root first."""
    out = [d]
    while d:
        d = _parent(d)
        out.append(d)
    out.reverse()
    return out


def pages(entries: int) -> int:
    """LIST pages of a directory with ``entries`` entries (an empty one still costs one)."""
    return max(1, -(-entries // LIST_PAGE))


def locality_assign(
    order: Sequence[int],
    dirs: Sequence[bytes],
    weights: Sequence[int],
    heaviest: Iterable[int],
    num_shards: int,
) -> tuple[array[int], list[int], list[int]]:
    """Shard of each record (indexed like ``weights``), and each shard's weight and
    record count.

    ``order``: record indices in :func:`sort_key` order; ``dirs[p]``: the directory
    of ``order[p]``; ``heaviest``: record indices, heaviest first (a deterministic
    order; read only as far as heavy objects go). Shards ``0..k-1`` are the ranges in
    path order, then one shard per split-out heavy object, in path order.
    """
    n = len(weights)
    assign = array("I", [0]) * n
    total = real_total = sum(weights)
    real = weights
    if total == 0:  # nothing weighs anything: balance by count
        weights = [1] * n
        total = n
    big = bytearray(n)
    rest, left = num_shards, total
    heavy = 0
    for i in heaviest:
        if rest <= 1 or weights[i] * rest <= left:
            break
        big[i] = 1
        heavy += 1
        left -= weights[i]
        rest -= 1
    if heavy:
        seq = [p for p, i in enumerate(order) if not big[i]]
        seq_dirs = [dirs[p] for p in seq]
        seq_order = [order[p] for p in seq]
    else:
        seq_dirs, seq_order = list(dirs), list(order)
    m = len(seq_order)
    prefix = list(accumulate(map(weights.__getitem__, seq_order), initial=0))
    bounds = _boundaries(seq_dirs)
    bprefix = [prefix[k] for k in bounds]
    slack = DIR_SLACK * left / rest if rest else 0.0
    cuts = [0]
    for j in range(1, rest):
        target = left * j / rest
        cut = _nearest(prefix, target)
        lo, hi = bisect_left(bprefix, target - slack), bisect_right(bprefix, target + slack)
        if lo < hi:
            best = min(range(lo, hi), key=lambda b: (abs(bprefix[b] - target), b))
            cut = bounds[best]
        cut = min(max(cut, cuts[-1] + 1), m - (rest - j))
        cuts.append(cut)
    cuts.append(m)
    for s in range(rest):
        for i in seq_order[cuts[s] : cuts[s + 1]]:
            assign[i] = s
    counts = [b - a for a, b in pairwise(cuts)]
    loads = [prefix[b] - prefix[a] for a, b in pairwise(cuts)] if real_total else [0] * rest
    if heavy:
        s = rest
        for i in order:
            if big[i]:
                assign[i] = s
                loads.append(real[i])
                counts.append(1)
                s += 1
    return assign, loads, counts


class RunPages:
    """LIST pages to list each run of records in one directory, in manifest order
    (:attr:`~xfer_core.manifest.analyze.Analysis.dir_pages`): about one listing of
    every directory, with flat memory. :meth:`add` takes the records' directories
    a chunk at a time, in manifest order."""

    __slots__ = ("_done", "_last", "_run")

    def __init__(self) -> None:
        self._done = 0  # pages of the runs that have ended
        self._last: str | None = None
        self._run = 0  # records of the run that may go on

    def add(self, dirs: Sequence[str]) -> None:
        """Count the next records, whose directories are ``dirs``."""
        if not dirs:
            return
        bounds = [0, *_boundaries(dirs), len(dirs)]
        runs = list(map(sub, islice(bounds, 1, None), bounds))
        if dirs[0] == self._last:
            runs[0] += self._run
        else:
            runs.insert(0, self._run)
        self._run = runs.pop()
        self._last = dirs[-1]
        # ceil(run / LIST_PAGE) for each ended run, at C level
        self._done -= sum(map(floordiv, map(neg, runs), repeat(LIST_PAGE)))

    @property
    def pages(self) -> int:
        """The pages of every record added so far."""
        return self._done + -(-self._run // LIST_PAGE)


def _boundaries(dirs: Sequence[bytes] | Sequence[str]) -> list[int]:
    """Positions k where ``dirs[k]`` starts another directory than ``dirs[k - 1]``."""
    # C-level: one comparison per neighbour pair (the same object compares at once)
    return list(compress(count(1), map(ne, islice(dirs, 1, None), dirs)))


def _nearest(prefix: list[int], target: float) -> int:
    """The index k whose prefix[k] is nearest ``target`` (ties: the lower)."""
    k = bisect_left(prefix, target)
    if k > 0 and (k == len(prefix) or target - prefix[k - 1] <= prefix[k] - target):
        return k - 1
    return k


#: Directory names a shard's copy may be rooted in: spelled the same by every
#: rclone backend and in a shell word (anything else keeps the shard at a parent).
_PLAIN = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._+=@,~-]*\Z")


def touch_stats(
    order: Sequence[int], dirs: Sequence[bytes], assign: Sequence[int], num_shards: int
) -> tuple[list[int], list[int], list[str]]:
    """Per shard: (directories holding its records, LIST pages to list them, its
    sub-root). The sub-root is the deepest directory holding all of the shard's
    records (``""``: the root; only plain names, see :data:`_PLAIN`): its copy runs
    there, so it lists that directory and what lies below it on the way to its
    records, not the parents. Directory sizes count every entry of the whole
    manifest: its files and its distinct sub-directories."""
    n = len(order)
    # (start, end) of each directory's run
    groups = list(pairwise([0, *_boundaries(dirs), n])) if n else []
    files: dict[bytes, int] = {}
    for start, end in groups:
        files[dirs[start]] = files.get(dirs[start], 0) + (end - start)
    every: set[bytes] = {b""}
    for d in files:
        while d not in every:
            every.add(d)
            d = _parent(d)
    entries = {d: files.get(d, 0) for d in every}
    for d in every:
        if d:
            entries[_parent(d)] += 1
    dir_count = [0] * num_shards
    # LIST pages of the directories a shard lists, by depth (0: the root)
    by_depth: list[list[int]] = [[] for _ in range(num_shards)]
    last: list[list[bytes] | None] = [None] * num_shards
    common: list[list[bytes] | None] = [None] * num_shards
    at = list(map(assign.__getitem__, order))  # the shard of each position
    for start, end in groups:
        chain = _chain(dirs[start])
        here = set(at[start:end])
        for s in sorted(here) if len(here) > 1 else here:
            prev = last[s]
            shared = 0 if prev is None else _shared(prev, chain)
            dir_count[s] += 1
            depth_pages = by_depth[s]
            if len(depth_pages) < len(chain):
                depth_pages.extend([0] * (len(chain) - len(depth_pages)))
            for depth in range(shared, len(chain)):
                depth_pages[depth] += pages(entries[chain[depth]])
            last[s] = chain
            mine = common[s]
            common[s] = chain if mine is None else mine[: _shared(mine, chain)]
    list_pages = [0] * num_shards
    subdirs = [""] * num_shards
    for s in range(num_shards):
        top = common[s]
        parts = top[-1].split(_SEP) if top and top[-1] else []
        depth = 0
        while depth < len(parts) and _PLAIN.match(parts[depth]):
            depth += 1
        list_pages[s] = sum(by_depth[s][depth:])
        subdirs[s] = b"/".join(parts[:depth]).decode()
    return dir_count, list_pages, subdirs


def _shared(a: list[bytes], b: list[bytes]) -> int:
    """How many leading entries ``a`` and ``b`` share."""
    k, top = 0, min(len(a), len(b))
    while k < top and a[k] == b[k]:
        k += 1
    return k


def is_remote(root: str) -> bool:
    """An rclone remote (``name:path``) rather than a local path."""
    if root.startswith("/"):
        return False
    head, sep, _ = root.partition(":")
    return bool(sep) and "/" not in head


def route_sides(source_root: str, dest_root: str) -> tuple[bool, bool, bool]:
    """(source is remote, destination is remote, server-side copy: one remote)."""
    src, dst = is_remote(source_root), is_remote(dest_root)
    server_side = src and dst and source_root.partition(":")[0] == dest_root.partition(":")[0]
    return src, dst, server_side


def lookup_requests(
    mode: str,
    records: int,
    list_pages: int,
    *,
    src: bool = True,
    dst: bool = True,
    server_side: bool = False,
    check_dest: bool = True,
) -> int:
    """Requests a shard's lookup costs in ``mode``, both sides together: ``list``
    reads the LIST pages on each remote side it looks at; ``objects`` one HEAD per
    record on each, except the source of a server-side copy (the copy reads that
    HEAD anyway). The destination is not looked at without ``check_dest``."""
    look_dst = dst and check_dest
    if mode == "list":
        return list_pages * (int(src) + int(look_dst))
    return records * (int(look_dst) + int(src and not server_side))


def choose_lookup(
    records: int,
    list_pages: int,
    *,
    src: bool = True,
    dst: bool = True,
    server_side: bool = False,
    check_dest: bool = True,
) -> tuple[str, int]:
    """(mode, requests) with the fewer requests (ties: list): see :func:`lookup_requests`."""
    costs = [
        (
            lookup_requests(
                mode,
                records,
                list_pages,
                src=src,
                dst=dst,
                server_side=server_side,
                check_dest=check_dest,
            ),
            rank,
            mode,
        )
        for rank, mode in enumerate(LOOKUPS)
    ]
    cost, _, mode = min(costs)
    return mode, cost
