"""What a tree-walking backend must change at the destination: a pure function of two listings.

Backends that cannot delegate the decision to rsync (sftp, and plugins built
the same way) list both sides -- with the pair's excludes already applied, so
excluded paths are never sent nor deleted -- and call :func:`plan_sync`.

The skip rule is rsync's ``--update`` quick check, so every backend sends the
same files:

- the destination lacks the file, or holds another kind of entry → send;
- the destination file is newer than the source → skip (never overwrite newer work);
- with ``checksum``: sizes differ → send; equal sizes → compare content;
- otherwise: size or mtime (whole seconds) differs → send.

A destination directory in the way of a file or link is removed with its content only
with ``delete`` (rsync: "cannot delete non-empty directory" without ``--delete``); an
empty one always. A file that is not sent because it is up to date (not because the destination is
newer) still gets the source's mode and mtime when they differ, as ``rsync -pt`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import msgspec

EntryKind = Literal["file", "dir", "link"]


class Entry(msgspec.Struct, frozen=True):
    """One listed path: kind, size, whole-second mtime, permission bits, link target."""

    kind: EntryKind
    size: int = 0
    mtime: int = 0
    mode: int = 0
    target: str = ""


@dataclass
class Plan:
    """Destination changes, in the order they must happen."""

    #: Destination entries of another kind than the source's (file, directory, symlink),
    #: also listed in ``mkdirs``/``send``/``links``. The backend makes the new entry
    #: beside the old one first and swaps it in (never deleting before the replacement
    #: is ready); a directory is replaced only once empty: with ``delete`` its content
    #: is in ``delete``, which runs before the swap.
    replace: list[str] = field(default_factory=list)
    #: Non-empty destination directories that a source file or symlink would replace,
    #: without ``delete``: left alone and reported as failed, as rsync does ("cannot
    #: delete non-empty directory").
    blocked: list[str] = field(default_factory=list)
    #: Directories to create, parents first.
    mkdirs: list[str] = field(default_factory=list)
    #: Files to send.
    send: list[str] = field(default_factory=list)
    #: Files of equal size and mtime to compare by content (``checksum`` only).
    compare: list[str] = field(default_factory=list)
    #: Symlinks to (re)create.
    links: list[str] = field(default_factory=list)
    #: Destination entries absent at the source (``delete`` only), children first.
    delete: list[str] = field(default_factory=list)
    #: Up-to-date files whose mode or mtime differs from the source's: set them.
    file_attrs: list[str] = field(default_factory=list)
    #: Directories whose mode/mtime must be set once their content is in place, deepest first.
    dir_attrs: list[str] = field(default_factory=list)
    #: Source files and symlinks already up to date.
    skipped: int = 0

    def send_compared(self, path: str, src: dict[str, Entry]) -> None:
        """Send ``path`` after all (a compared file whose content differs): its directory
        gets its mtime back afterwards, like every directory written into."""
        self.send.append(path)
        parent = _parent(path)
        if parent not in self.dir_attrs and parent in src:
            self.dir_attrs = sorted([*self.dir_attrs, parent], key=lambda p: (-_depth(p), p))

    def send_bytes(self, src: dict[str, Entry]) -> int:
        """Bytes of the files to send."""
        return sum(src[p].size for p in self.send)


def _depth(path: str) -> int:
    return path.count("/")


def _parent(path: str) -> str:
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else ""


def needs_send(src: Entry, dst: Entry | None, *, checksum: bool) -> bool | None:
    """True: send; False: up to date; None: same size and mtime, compare content (checksum)."""
    if dst is None or dst.kind != "file":
        return True
    if dst.mtime > src.mtime:
        return False
    if checksum:
        return True if dst.size != src.size else None
    return dst.size != src.size or dst.mtime != src.mtime


def attrs_differ(src: Entry, dst: Entry | None) -> bool:
    """An up-to-date destination file whose mode or mtime is not the source's (and not newer)."""
    return (
        dst is not None
        and dst.mtime <= src.mtime
        and (dst.mode, dst.mtime) != (src.mode, src.mtime)
    )


def plan_sync(
    src: dict[str, Entry], dst: dict[str, Entry], *, delete: bool = False, checksum: bool = False
) -> Plan:
    """The changes that make ``dst`` hold ``src`` (keys: relative paths; ``""`` is the root)."""
    plan = Plan()
    touched: set[str] = set()
    not_empty = {_parent(p) for p in dst if p}
    for path in sorted(src, key=lambda p: (_depth(p), p)):
        s = src[path]
        d = dst.get(path)
        if d is not None and d.kind != s.kind:
            if d.kind == "dir" and path in not_empty and not delete:
                plan.blocked.append(path)
                continue
            plan.replace.append(path)
            touched.add(_parent(path))
            d = None
        if s.kind == "dir":
            if d is None:
                if path:
                    plan.mkdirs.append(path)
                    touched.add(_parent(path))
                touched.add(path)
            elif d.mode != s.mode or d.mtime != s.mtime:
                touched.add(path)
        elif s.kind == "link":
            if d is None or d.kind != "link" or d.target != s.target:
                plan.links.append(path)
                touched.add(_parent(path))
            else:
                plan.skipped += 1  # up to date, like a file: counted the same way
        else:
            decision = needs_send(s, d, checksum=checksum)
            if decision is None:
                plan.compare.append(path)
            elif decision:
                plan.send.append(path)
                touched.add(_parent(path))
            else:
                plan.skipped += 1
                if attrs_differ(s, d):
                    plan.file_attrs.append(path)
    if delete:
        # the content of a directory being replaced goes too (before the swap)
        gone = [p for p in dst if p and p not in src]
        plan.delete = sorted(gone, key=lambda p: (-_depth(p), p))
        touched.update(_parent(p) for p in gone)
    # a directory whose content changes gets its mtime changed by the server: set it back
    plan.dir_attrs = sorted(
        (p for p in touched if p in src and src[p].kind == "dir"), key=lambda p: (-_depth(p), p)
    )
    return plan
