"""Atomic file writes: a temp file in the same directory, fsync, then rename.

A crash or Ctrl-C at any point leaves either the old file or the new one under
the real name, never a truncated one. Every output file of xfer goes through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
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
