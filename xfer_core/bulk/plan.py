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
- **lookups**, per shard and remote side, as the cost model chose
  (:mod:`xfer_core.manifest.locality`): the LIST pages of its directories, or one
  ``HEAD`` per object; none at the destination when the shard's records are all
  known to need sending (``--diff-dest``). On the source side of a server-side
  copy the per-object ``HEAD`` is the one the copy makes anyway. Directory pages
  assume the destination already mirrors the source (an upper bound: a fresh
  destination lists nearly nothing).
- **per rclone run**: one ``HEAD`` (the bucket); one ``PUT`` per run of uploads (the
  bucket or directory marker).
- **verification**: nothing more -- the copy's own checks are the verification;
  with ``--verify check`` one more listing of the shard's directories (and a
  ``HEAD``) per shard.

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

__all__ = ["MULTIPART_CUTOFF", "Plan", "estimate", "plan_from_analysis", "plan_from_shards"]

if TYPE_CHECKING:
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
    schema: str = PLAN_SCHEMA


def is_remote(root: str) -> bool:
    """An rclone remote (``name:path``) rather than a local path."""
    if root.startswith("/"):
        return False
    head, sep, _ = root.partition(":")
    return bool(sep) and "/" not in head


def _remote_name(root: str) -> str:
    return root.partition(":")[0]


def _route(source_root: str, dest_root: str) -> tuple[str, bool, bool, bool]:
    """(route, source remote, dest remote, server-side)."""
    src, dst = is_remote(source_root), is_remote(dest_root)
    server_side = src and dst and _remote_name(source_root) == _remote_name(dest_root)
    if src and dst:
        route = "s3->s3 (server-side)" if server_side else "s3->s3"
    else:
        route = f"{'s3' if src else 'local'}->{'s3' if dst else 'local'}"
    return route, src, dst, server_side


def estimate(
    *,
    source_root: str,
    dest_root: str,
    objects: int,
    total_bytes: int,
    multipart_objects: int,
    parts: int,
    shards: list[ShardPlan],
    shard_pages: list[int],
    verify: str = "hash",
) -> Plan:
    """The plan of a run: see the module docstring. ``shard_pages[i]`` is the LIST
    pages of shard i's directories (for the lookup and a ``--verify check``)."""
    route, src, dst, server_side = _route(source_root, dest_root)
    req = dict.fromkeys(OPERATIONS, 0)
    single = objects - multipart_objects
    if dst and src and server_side:
        req["COPY"] += objects
        req["HEAD"] += 2 * objects
    elif dst:
        req["PUT"] += single + parts
        req["POST"] += 2 * multipart_objects
        req["HEAD"] += objects
        if src:
            req["GET"] += objects
    elif src:
        req["GET"] += objects
    lookups = 0
    for shard, pages in zip(shards, shard_pages, strict=True):
        mine = 0
        per = shard.requests
        kind = "LIST" if shard.lookup == "list" else "HEAD"
        if dst and shard.check_dest:
            req[kind] += per
            mine += per
        if src and not (server_side and shard.lookup == "objects"):
            req[kind] += per
            mine += per
        if dst:
            req["HEAD"] += 1
        if verify == "check":
            extra = pages * (int(src) + int(dst))
            req["LIST"] += extra
            req["HEAD"] += int(dst)
            mine += extra
        lookups += mine
    if dst and objects and not server_side:
        req["PUT"] += 1
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
    if any(s.lookup == "list" and s.check_dest for s in shards) and dst:
        notes.append(
            "listing pages assume the destination already mirrors the source: a fresh "
            "destination lists less"
        )
    if src and dst and not server_side:
        notes.append("a copy between two remotes is not measured: GET + PUT + HEAD per object")
    return Plan(
        source_root=source_root,
        dest_root=dest_root,
        route=route,
        shards=len(shards),
        objects=objects,
        bytes=total_bytes,
        bytes_moved=moved,
        requests={k: v for k, v in req.items() if v},
        total_requests=total,
        lookups=lookups,
        rates=rates,
        per_shard=shards,
        notes=notes,
    )


def plan_from_shards(meta: ShardMeta, analysis: Analysis, *, verify: str = "hash") -> Plan:
    """The plan of a sharded run (exact per-shard lookups from ``shards.meta.json``)."""
    shards = [
        ShardPlan(
            index=s.index,
            records=s.records,
            lookup=s.lookup,
            check_dest=s.check_dest,
            requests=s.lookup_requests,
        )
        for s in meta.shards
    ]
    return estimate(
        source_root=meta.source_root,
        dest_root=meta.dest_root,
        objects=meta.total_records,
        total_bytes=meta.total_bytes,
        multipart_objects=analysis.multipart_objects,
        parts=analysis.multipart_parts,
        shards=shards,
        shard_pages=[s.list_pages for s in meta.shards],
        verify=verify,
    )


def plan_from_analysis(analysis: Analysis, shards: int | None = None) -> Plan:
    """An estimate before sharding: ``shards`` (default: the suggested count) locality
    shards, each listing about ``1/shards`` of the directories plus two parents."""
    n = max(1, shards or analysis.suggested_shards or 1)
    pages = [math.ceil(analysis.dir_pages / n) + 2] * n
    records = [analysis.records // n + (1 if i < analysis.records % n else 0) for i in range(n)]
    plans = []
    for i in range(n):
        lookup, cost = ("list", pages[i]) if pages[i] <= records[i] else ("objects", records[i])
        plans.append(
            ShardPlan(index=i, records=records[i], lookup=lookup, check_dest=True, requests=cost)
        )
    return estimate(
        source_root=analysis.source_root,
        dest_root=analysis.dest_root,
        objects=analysis.records,
        total_bytes=analysis.total_bytes,
        multipart_objects=analysis.multipart_objects,
        parts=analysis.multipart_parts,
        shards=plans,
        shard_pages=pages,
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
