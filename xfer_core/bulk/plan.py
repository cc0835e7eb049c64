"""The request model of a bulk run, and its plan (``xfer run --plan``, ``RUN/plan.json``).

What a run will cost, counted before anything is submitted: requests by S3
operation, bytes, and the time at a few request and byte rates. Measured with
rclone 1.75 against an S3 server through :class:`~xfer_core.testing.faultproxy.FaultProxy`:

- **per object sent**: local → S3 ``PUT`` + ``HEAD`` (rclone reads each upload back
  to check its size and hash); S3 → S3 on one remote: a server-side ``COPY`` + 2
  ``HEAD`` (the source's metadata, the copy read back); S3 → local: ``GET``;
  between two remotes: ``GET`` + ``PUT`` + ``HEAD`` (not measured: the sum of the two).
  An upload of ``MULTIPART_CUTOFF`` or more is a multipart upload: ``POST`` to start,
  one ``PUT`` per ``CHUNK`` part, ``POST`` to finish.
- **lookups**, per shard, as the cost model chose and wrote into
  ``shards.meta.json`` (:mod:`xfer_core.manifest.locality`): the LIST pages of the
  directories below its sub-root on each remote side, or one ``HEAD`` per object;
  none at the destination when the shard's records are all known to need sending
  (``--diff-dest``). On the source side of a server-side copy the per-object
  ``HEAD`` is the one the copy makes anyway. Directory pages assume the
  destination already mirrors the source (an upper bound: a fresh destination
  lists nearly nothing).
- **per rclone run**: nothing when it lists the destination (the roots are given
  with a trailing ``/``, so rclone does not ``HEAD`` them to see whether they are
  files), nor when it does not look at the destination at all (the run listed it:
  ``--s3-no-check-bucket``); else, when it uploads, one ``PUT`` (rclone's bucket
  check before its first upload; a server-side copy makes one too, refused with
  409 by the test server and so not among the answered requests counted).
- **verification**: nothing more -- the copy's own checks are the verification;
  with ``--verify check`` one more listing of the shard's directories per shard.

Time at a rate: ``max(requests / requests_per_second, bytes / bytes_per_second)``:
requests and bytes overlap when there are enough parallel transfers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from xfer_core.atomic import atomic_write_bytes
from xfer_core.manifest.analyze import MULTIPART_CUTOFF
from xfer_core.manifest.locality import choose_lookup, route_sides

__all__ = ["MULTIPART_CUTOFF", "Plan", "make_plan"]

if TYPE_CHECKING:
    from xfer_core.bulk.render import ResolvedConfig
    from xfer_core.manifest.analyze import Analysis
    from xfer_core.manifest.shard import ShardMeta

PLAN_SCHEMA = "xfer.plan.v1"
PLAN_NAME = "plan.json"
#: (requests per second, bytes per second) the plan gives times for.
RATES: tuple[tuple[float, float], ...] = (
    (100.0, 100 * 2**20),
    (1_000.0, 2**30),
    (5_000.0, 10 * 2**30),
)
OPERATIONS = ("LIST", "HEAD", "GET", "PUT", "COPY", "POST")
#: Share of a plan's requests spent on lookups above which the plan suggests --diff-dest
#: (and ``xfer run`` considers listing the destination once on its own).
LOOKUP_SHARE = 0.05
#: ``xfer run`` lists the destination once on its own only when that saves at least
#: this many requests (a small run keeps the plain mode: nothing to gain).
AUTO_MIN_SAVING = 100


class RateTime(msgspec.Struct, frozen=True):
    requests_per_second: float
    bytes_per_second: float
    seconds: float


class ShardPlan(msgspec.Struct, frozen=True):
    index: int
    records: int
    lookup: str
    check_dest: bool
    requests: int


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """``RUN/plan.json``: what a run is expected to cost."""

    source_root: str
    dest_root: str
    #: ``local->s3``, ``s3->s3 (server-side)``, ``s3->local``, ``s3->s3``, ``local->local``.
    route: str
    shards: int
    objects: int
    bytes: int
    #: Bytes that travel through the transfer node (0 for a server-side copy).
    bytes_moved: int
    requests: dict[str, int]
    total_requests: int
    #: Lookup requests (listing pages or per-object HEADs) of source and destination.
    lookups: int
    rates: list[RateTime]
    per_shard: list[ShardPlan] = []
    notes: list[str] = []
    #: How the run learnt what the destination holds before its shards ran: ``""``
    #: (it did not: each shard looks), ``auto`` (listed once because that was
    #: cheaper; the manifest keeps every object) or ``diff-dest`` (listed once; the
    #: manifest holds only what was missing or different).
    dest_listing: str = ""
    #: The local scheduler: shards running at once on this machine (0: a batch
    #: scheduler's array tasks, each in its own allocation).
    shards_at_once: int = 0
    #: The engine's parallelism flags as given (``--transfers 16 --checkers 32``) and
    #: what each shard runs with: on the local scheduler the machine's total split
    #: across ``shards_at_once`` (``--no-split-transfers``: the full values).
    machine_flags: list[str] = []
    shard_flags: list[str] = []
    schema: str = PLAN_SCHEMA


def _route(source_root: str, dest_root: str) -> tuple[str, bool, bool, bool]:
    """(route, source remote, dest remote, server-side)."""
    src, dst, server_side = route_sides(source_root, dest_root)
    if src and dst:
        route = "s3->s3 (server-side)" if server_side else "s3->s3"
    else:
        route = f"{'s3' if src else 'local'}->{'s3' if dst else 'local'}"
    return route, src, dst, server_side


def make_plan(
    analysis: Analysis,
    meta: ShardMeta | None = None,
    *,
    shards: int | None = None,
    verify: str = "hash",
    dest_listing: str = "",
) -> Plan:
    """The plan of a run: see the module docstring.

    With ``meta`` (a sharded run), each shard's lookup is the one the cost model
    wrote into ``shards.meta.json``. Without it (``manifest analyze``, before
    sharding), ``shards`` (default: the suggested count) shards are assumed, each
    holding ``1/shards`` of the records and listing about ``1/shards`` of the
    directories' pages plus their common parent, looked up the way the cost model
    would choose. ``dest_listing``: see :attr:`Plan.dest_listing` (a note says it).
    """
    source_root = meta.source_root if meta else analysis.source_root
    dest_root = meta.dest_root if meta else analysis.dest_root
    route, src, dst, server_side = _route(source_root, dest_root)
    if meta is not None:
        per_shard = [
            ShardPlan(
                index=s.index,
                records=s.records,
                lookup=s.lookup,
                check_dest=s.check_dest,
                requests=s.lookup_requests,
            )
            for s in meta.shards
        ]
        pages = [s.list_pages for s in meta.shards]
    else:
        n = max(1, shards or analysis.suggested_shards or 1)
        page = math.ceil(analysis.dir_pages / n) + (1 if analysis.dir_pages > n else 0)
        pages = [page] * n
        per_shard = []
        for i in range(n):
            records = analysis.records // n + (1 if i < analysis.records % n else 0)
            mode, cost = choose_lookup(records, page, src=src, dst=dst, server_side=server_side)
            per_shard.append(
                ShardPlan(index=i, records=records, lookup=mode, check_dest=True, requests=cost)
            )
    objects = meta.total_records if meta else analysis.records
    total_bytes = meta.total_bytes if meta else analysis.total_bytes
    multipart_objects = analysis.multipart_objects
    req = dict.fromkeys(OPERATIONS, 0)
    single = objects - multipart_objects
    if dst and src and server_side:
        req["COPY"] += objects
        req["HEAD"] += 2 * objects
    elif dst:
        req["PUT"] += single + analysis.multipart_parts
        req["POST"] += 2 * multipart_objects
        req["HEAD"] += objects
        if src:
            req["GET"] += objects
    elif src:
        req["GET"] += objects
    lookups = 0
    for shard, shard_pages in zip(per_shard, pages, strict=True):
        req["LIST" if shard.lookup == "list" else "HEAD"] += shard.requests
        lookups += shard.requests
        if dst and not server_side and shard.lookup == "objects" and shard.check_dest:
            # the bucket check of uploads that do not list the destination (a shard that
            # does not look at it at all skips the check: --s3-no-check-bucket)
            req["PUT"] += 1
        if verify == "check":
            extra = shard_pages * (int(src) + int(dst))
            req["LIST"] += extra
            lookups += extra
    total = sum(req.values())
    moved = 0 if server_side else total_bytes
    rates = [
        RateTime(
            requests_per_second=r,
            bytes_per_second=b,
            seconds=round(max(total / r, moved / b), 1),
        )
        for r, b in RATES
    ]
    notes = []
    if dest_listing == "auto":
        sure = sum(s.records for s in per_shard if not s.check_dest)
        notes.append(
            "the destination was listed once for this run (its shards' own lookups would "
            f"have cost more; --no-diff-dest keeps them): {sure:,} of {objects:,} objects in "
            "shards that do not look at it; objects already there are compared by the copy"
        )
    if any(s.lookup == "list" and s.check_dest for s in per_shard) and dst:
        notes.append(
            "listing pages assume the destination already mirrors the source: a fresh "
            "destination lists less"
        )
    if src and dst and not server_side:
        notes.append("a copy between two remotes is not measured: GET + PUT + HEAD per object")
    if dst and lookups > LOOKUP_SHARE * total and any(s.check_dest for s in per_shard):
        notes.append(
            f"lookups are {lookups / total:.0%} of the requests: --diff-dest lists the "
            "destination once and the shards look nothing up there (or use fewer shards)"
        )
    return Plan(
        source_root=source_root,
        dest_root=dest_root,
        route=route,
        shards=len(per_shard),
        objects=objects,
        bytes=total_bytes,
        bytes_moved=moved,
        requests={k: v for k, v in req.items() if v},
        total_requests=total,
        lookups=lookups,
        rates=rates,
        per_shard=per_shard,
        notes=notes,
        dest_listing=dest_listing,
    )


class ListingChoice(msgspec.Struct, frozen=True):
    """Whether one listing of the destination for the run pays (:func:`dest_listing_choice`)."""

    list_dest: bool
    #: The plan of the plain mode (each shard looks the destination up itself).
    plain: Plan
    #: Requests the listing saves at most (when every object is missing there),
    #: the listing's own pages deducted.
    saving: int
    #: LIST pages of the destination listing, taking it to mirror the source.
    listing_pages: int


def dest_listing_choice(
    analysis: Analysis, meta: ShardMeta, *, verify: str = "hash"
) -> ListingChoice:
    """Should ``xfer run`` list the destination once before its shards run?

    Yes when the plain mode's lookups are more than :data:`LOOKUP_SHARE` of its
    requests and one listing (its pages: the source's, :attr:`Analysis.dir_pages`)
    plus the plan of shards that need not look at the destination (every record
    known missing there) costs at least :data:`AUTO_MIN_SAVING` requests less.
    The saving is the most the listing can bring (a fresh destination); at worst
    (the destination holds everything already) the run costs the listing's pages
    more than the plain mode.
    """
    plain = make_plan(analysis, meta, verify=verify)
    src, dst, server_side = route_sides(meta.source_root, meta.dest_root)
    listing = max(1, analysis.dir_pages)
    if not dst or not meta.shards:
        return ListingChoice(list_dest=False, plain=plain, saving=0, listing_pages=listing)
    shards = []
    for s in meta.shards:
        mode, cost = choose_lookup(
            s.records, s.list_pages, src=src, dst=dst, server_side=server_side, check_dest=False
        )
        shards.append(
            msgspec.structs.replace(
                s, send=s.records, check_dest=False, lookup=mode, lookup_requests=cost
            )
        )
    known = make_plan(analysis, msgspec.structs.replace(meta, shards=shards), verify=verify)
    saving = plain.total_requests - known.total_requests - listing
    heavy = plain.lookups > LOOKUP_SHARE * plain.total_requests
    return ListingChoice(
        list_dest=heavy and saving >= AUTO_MIN_SAVING,
        plain=plain,
        saving=saving,
        listing_pages=listing,
    )


def write_plan(run_dir: str | os.PathLike[str], plan: Plan) -> Path:
    path = Path(run_dir) / PLAN_NAME
    atomic_write_bytes(path, msgspec.json.format(msgspec.json.encode(plan)) + b"\n")
    return path


def load_plan(run_dir: str | os.PathLike[str]) -> Plan | None:
    """``RUN/plan.json``, or None when there is none (or it cannot be read)."""
    try:
        return msgspec.json.decode((Path(run_dir) / PLAN_NAME).read_bytes(), type=Plan)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def with_shard_flags(plan: Plan, resolved: ResolvedConfig) -> Plan:
    """``plan`` with the parallelism each shard runs with: on the local scheduler the
    machine's ``--transfers``/``--checkers`` split across the shards it runs at once
    (``--array-concurrency``, at most the shard count); a batch scheduler's tasks keep
    the full values."""
    from xfer_core.bulk.engine import share_flags

    machine = list(resolved.split_flags)
    if resolved.scheduler != "local":
        return msgspec.structs.replace(plan, machine_flags=machine, shard_flags=machine)
    at_once = max(1, min(resolved.array_concurrency, resolved.num_shards))
    return msgspec.structs.replace(
        plan,
        shards_at_once=at_once,
        machine_flags=machine,
        shard_flags=share_flags(machine, at_once) or machine,
    )


def plan_lines(plan: Plan) -> list[str]:
    """The plan as a few human lines."""
    from xfer_core.output import human_bytes

    ops = ", ".join(f"{k} {v:,}" for k, v in plan.requests.items())
    lines = [
        f"plan: {plan.objects:,} objects, {human_bytes(plan.bytes)} in {plan.shards:,} shards "
        f"({plan.route})",
        f"  requests: {plan.total_requests:,} ({ops}); lookups {plan.lookups:,}"
        if plan.total_requests
        else "  requests: none (local paths only)",
    ]
    modes: dict[str, int] = {}
    for s in plan.per_shard:
        key = s.lookup if s.check_dest else f"{s.lookup}, no destination check"
        modes[key] = modes.get(key, 0) + 1
    if modes:
        lines.append("  shards: " + ", ".join(f"{n:,} {m}" for m, n in sorted(modes.items())))
    if plan.shard_flags and plan.shard_flags != plan.machine_flags:
        lines.append(
            f"  per shard: {' '.join(plan.shard_flags)} ({' '.join(plan.machine_flags)} shared "
            f"by {plan.shards_at_once} shards at once on this machine; --no-split-transfers: "
            "each the full value)"
        )
    for r in plan.rates:
        lines.append(
            f"  at {r.requests_per_second:,.0f} req/s and {human_bytes(r.bytes_per_second)}/s: "
            f"~{_duration(r.seconds)}"
        )
    lines += [f"  note: {n}" for n in plan.notes]
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
