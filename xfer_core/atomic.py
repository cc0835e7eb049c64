"""Atomic file writes: a temp file in the same directory, fsync, then rename.

A crash or Ctrl-C at any point leaves either the old file or the new one under
the real name, never a truncated one. Every output file of xfer goes through here:
one file with :func:`atomic_write`, a set of files that belong together (the shards
of a manifest and the meta file describing them) with :func:`staging_dir`, written
there, :func:`fsync_files` and :func:`install_files`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Literal, overload


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@overload
def atomic_write(
    path: str | os.PathLike[str], mode: Literal["wb"] = "wb", *, perms: int | None = None
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
@overload
def atomic_write(
    path: str | os.PathLike[str], mode: Literal["w"], *, perms: int | None = None
) -> contextlib.AbstractContextManager[IO[str]]: ...


def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, perms: int | None = None
) -> contextlib.AbstractContextManager[IO[Any]]:
    """Open a temp file beside ``path`` for writing; rename it over ``path`` on success.

    On any exception (including KeyboardInterrupt) the temp file is removed and
    ``path`` is left untouched. ``perms`` defaults to ``0o666 & ~umask`` like ``open()``.
    """
    return _atomic_write(Path(path), mode, perms)


@contextlib.contextmanager
def _atomic_write(path: Path, mode: str, perms: int | None) -> Iterator[IO[Any]]:
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, perms if perms is not None else 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, perms: int | None = None
) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb", perms=perms) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, perms: int | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), perms=perms)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file (or directory) that is already written to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_files(paths: Iterable[str | os.PathLike[str]]) -> None:
    """:func:`fsync_path` of every path, a few at a time: concurrent fsyncs share the file
    system's journal commits, much faster than one by one."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(fsync_path, paths))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename in directory ``path`` durable (where the file system allows it)."""
    with contextlib.suppress(OSError):
        fsync_path(path)


@contextlib.contextmanager
def staging_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """A private temp directory beside ``out`` for :func:`install_files`; removed on exit
    with whatever was not installed."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def install_files(
    staged: Path,
    out: Path,
    names: Sequence[str],
    *,
    last: str,
    stale: Callable[[str], bool] = lambda name: False,
) -> None:
    """Move the finished files ``names`` and ``last`` from ``staged`` into directory ``out``.

    ``last`` describes the set (a meta file): readers trust the set only when it is
    there. A new ``out`` is one rename of ``staged``. Into an existing one: the old
    ``last`` goes first (so it never describes a half-replaced set), then ``names``,
    then files of ``out`` for which ``stale(name)`` holds and that are not in
    ``names`` (left by an earlier, larger set) are removed, then ``last`` comes in.
    Every file must be fsynced already (:func:`fsync_files`).
    """
    if not out.exists():
        os.rename(staged, out)
        fsync_dir(out.parent)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out / last)
    fsync_dir(out)
    keep = set(names)
    for name in names:
        os.replace(staged / name, out / name)
    for entry in os.scandir(out):
        if entry.name not in keep and entry.name != last and stale(entry.name):
            os.unlink(entry.path)
    os.replace(staged / last, out / last)
    fsync_dir(out)
