"""``manifest verify``: list the destination and check every manifest record against it.

The manifest is read into a dict (one key and a small tuple per record, ~400
bytes with one hash) and the destination is streamed through the same listers as ``build``;
each listed object is checked and removed from the dict, so what remains is
missing. Checks, in order: present, same size, and — where the manifest and
the destination both have a hash of the same type — the same hash. Records
with hashes that the destination could not give a common hash for are
counted as ``hash_unverified`` (not bad). Objects at the destination that the
manifest does not name are counted as ``extra`` (not bad).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable

import msgspec

from xfer_core.atomic import atomic_write
from xfer_core.errors import ConfigError
from xfer_core.manifest.build import normalize_dest, paused_gc
from xfer_core.manifest.jsonl import read_manifest
from xfer_core.manifest.lister import (
    ListEntry,
    ListOptions,
    ListProblem,
    is_remote,
    join_location,
    select_lister,
)
from xfer_core.manifest.record import PATH_B64
from xfer_core.manifest.roots import check_manifest_roots


class BadObject(msgspec.Struct, omit_defaults=True):
    """One record that is not at the destination as the manifest says."""

    path: str
    dest: str
    #: ``missing``, ``size`` or ``hash``
    problem: str
    expected_size: int
    actual_size: int | None = None
    hash_type: str | None = None
    expected_hash: str | None = None
    actual_hash: str | None = None
    meta: dict[str, str] = {}


class VerifyResult(msgspec.Struct):
    """Counts of a verification; ``ok`` is True when nothing is missing or different."""

    manifest: str
    dest: str
    lister: str
    records: int
    verified: int
    missing: int
    size_mismatch: int
    hash_mismatch: int
    hash_unverified: int
    extra: int
    seconds: float
    out_bad: str | None = None
    #: Listing problems at the destination (unreadable directories...).
    problems: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.size_mismatch or self.hash_mismatch)


def _key(path: str, meta: dict[str, str] | dict[str, object]) -> str:
    raw = meta.get(PATH_B64) if meta else None
    return "\x00" + str(raw) if raw else path


#: per record: (size, (type, hex, type, hex, ...) or None, path if the key is not it, meta or None)
_Expected = tuple[int, tuple[str, ...] | None, str | None, dict[str, str] | None]


def _flat_hashes(hashes: dict[str, str]) -> tuple[str, ...] | None:
    """Hashes as one flat tuple with interned type names (memory: one tuple per record)."""
    if not hashes:
        return None
    flat: list[str] = []
    for name in sorted(hashes):
        flat += (sys.intern(name.lower()), hashes[name].lower())
    return tuple(flat)


def verify_manifest(
    manifest: str | os.PathLike[str],
    *,
    dest: str | None = None,
    out_bad: str | os.PathLike[str] | None = None,
    lister: str = "auto",
    options: ListOptions | None = None,
    check_hashes: bool = True,
    on_problem: Callable[[ListProblem], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    trust_roots: bool = False,
    on_dest: Callable[[str], None] | None = None,
) -> VerifyResult:
    """Check the destination against ``manifest``; write the bad records to ``out_bad`` (JSONL).

    ``dest`` defaults to the manifest's ``dest_root`` (all records must share
    it). Hash types are those the manifest carries; with ``check_hashes=False``
    only presence and size are checked (the posix lister must read every file
    to hash it). A ``dest_root`` taken from the manifest must be a local path or
    a plain ``remote:path`` unless ``trust_roots``
    (:func:`~xfer_core.manifest.roots.check_manifest_roots`); ``on_dest`` is told
    the destination before it is listed. Raises :class:`~xfer_core.errors.ManifestError` on a bad
    manifest line and lister errors as they are; returns counts otherwise.
    """
    started = time.monotonic()
    expected: dict[str, _Expected] = {}
    roots: set[str] = set()
    hash_types: set[str] = set()
    records = 0
    with paused_gc():
        for rec in read_manifest(manifest):
            records += 1
            roots.add(rec.dest_root)
            flat = _flat_hashes(rec.hashes)
            if flat:
                hash_types.update(flat[::2])
            meta = {PATH_B64: rec.meta[PATH_B64]} if rec.meta and PATH_B64 in rec.meta else {}
            expected[_key(rec.path, meta)] = (
                rec.size,
                flat,
                rec.path if meta else None,
                meta or None,
            )
    if dest is None:
        if len(roots) > 1:
            raise ConfigError(
                f"{os.fspath(manifest)}: records have {len(roots)} different dest roots",
                hint="pass --dest DST to say which destination to check",
            )
        if not roots or not next(iter(roots)):
            raise ConfigError(
                f"{os.fspath(manifest)}: no dest_root in the manifest",
                hint="pass --dest DST",
            )
        dest = next(iter(roots))
        check_manifest_roots(os.fspath(manifest), {"dest_root": dest}, trusted=trust_roots)
    dest = normalize_dest(dest)
    if on_dest is not None:
        on_dest(dest)
    opts = options if options is not None else ListOptions()
    problems = [0]

    def problem(p: ListProblem) -> None:
        problems[0] += 1
        if on_problem is not None:
            on_problem(p)

    opts = msgspec.structs.replace(
        opts,
        hashes=tuple(sorted(hash_types)) if check_hashes else (),
        on_problem=problem,
        on_progress=on_progress,
    )
    local_missing = not is_remote(dest) and not os.path.exists(dest)
    lister_name = lister
    entries: Iterable[ListEntry] = ()
    counts = {"verified": 0, "size": 0, "hash": 0, "unverified": 0, "extra": 0}
    encode = msgspec.json.Encoder().encode
    with contextlib.ExitStack() as stack:
        bad = stack.enter_context(atomic_write(out_bad, "wb")) if out_bad is not None else None

        def report(b: BadObject) -> None:
            if bad is not None:
                bad.write(encode(b) + b"\n")

        if not local_missing:
            chosen = select_lister(dest, lister)
            lister_name = chosen.name
            entries = chosen.list(dest, opts)
        with paused_gc():
            for e in entries:
                key = _key(e.path, e.meta)
                got = expected.pop(key, None)
                if got is None:
                    counts["extra"] += 1
                    continue
                size, pairs, named, meta_or_none = got
                path = named or key
                meta = meta_or_none or {}
                hashes = dict(zip(pairs[::2], pairs[1::2], strict=True)) if pairs else {}
                location = join_location(dest, path)
                if e.size != size:
                    counts["size"] += 1
                    report(BadObject(path, location, "size", size, e.size, meta=meta))
                    continue
                if hashes and check_hashes:
                    common = sorted(set(hashes) & set(e.hashes))
                    if not common:
                        counts["unverified"] += 1
                    mismatch = next((h for h in common if e.hashes[h].lower() != hashes[h]), None)
                    if mismatch is not None:
                        counts["hash"] += 1
                        report(
                            BadObject(
                                path,
                                location,
                                "hash",
                                size,
                                e.size,
                                mismatch,
                                hashes[mismatch],
                                e.hashes[mismatch].lower(),
                                meta=meta,
                            )
                        )
                        continue
                counts["verified"] += 1
        for key, (size, _pairs, named, meta_or_none) in expected.items():
            path = named or key
            location = join_location(dest, path)
            report(BadObject(path, location, "missing", size, meta=meta_or_none or {}))
    return VerifyResult(
        manifest=os.fspath(manifest),
        dest=dest,
        lister=lister_name,
        records=records,
        verified=counts["verified"],
        missing=len(expected),
        size_mismatch=counts["size"],
        hash_mismatch=counts["hash"],
        hash_unverified=counts["unverified"],
        extra=counts["extra"],
        seconds=time.monotonic() - started,
        out_bad=os.fspath(out_bad) if out_bad is not None else None,
        problems=problems[0],
    )
