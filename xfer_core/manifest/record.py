"""The manifest record, ``xfer.manifest.v1``: one object to transfer.

The field set is seed 004's, so manifests written by other tools that use it
load unchanged. ``path`` is relative to ``source_root`` / ``dest_root`` and
``source`` / ``dest`` are the full object locations.

Names that are not valid UTF-8 cannot be carried in JSON text; their exact bytes
travel base64-encoded in ``meta["path_b64"]`` and ``path`` holds a readable form
(invalid bytes shown as ``\\xNN``). :func:`path_bytes` gives back the real name.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

SCHEMA = "xfer.manifest.v1"

#: ``meta`` key holding the base64 of a name that is not valid UTF-8.
PATH_B64 = "path_b64"
#: ``meta`` key set by ``manifest build --diff-dest``: why the object must be sent
#: (``missing``, ``size``, ``hash`` or ``mtime``: what differs at the destination).
DIFF = "diff"


class ManifestRecord(msgspec.Struct, forbid_unknown_fields=False):
    """One object. Unknown extra fields from other tools are ignored on read; missing
    optional fields read as their defaults. Every field is written, ``schema`` included,
    so each line is self-describing for the other tools that read this format."""

    path: str
    size: int
    schema: str = SCHEMA
    run_id: str = ""
    source_root: str = ""
    dest_root: str = ""
    source: str = ""
    dest: str = ""
    #: Modification time: RFC 3339 text (as rclone gives it) or POSIX seconds.
    mtime: str | float | None = None
    #: Content hashes by algorithm name (``md5``, ``sha1``, ...), lower-case hex.
    hashes: dict[str, str] = {}
    etag: str | None = None
    storage_class: str | None = None
    meta: dict[str, Any] = {}


def path_bytes(record: ManifestRecord) -> bytes:
    """The object's relative name as the exact bytes the source uses."""
    raw = record.meta.get(PATH_B64) if record.meta else None
    if raw is not None:
        return base64.b64decode(raw)
    return record.path.encode("utf-8")


def path_fields(name: bytes) -> tuple[str, dict[str, Any]]:
    """``(path, meta)`` for a name given as bytes: plain text when it is UTF-8,
    else a readable ``\\xNN`` form plus the exact bytes in ``meta[PATH_B64]``."""
    try:
        return name.decode("utf-8"), {}
    except UnicodeDecodeError:
        readable = name.decode("utf-8", "backslashreplace")
        return readable, {PATH_B64: base64.b64encode(name).decode("ascii")}


#: Deepest nesting accepted in ``meta`` (``{"a": [{"b": 1}]}`` is 3 levels deep).
MAX_META_DEPTH = 32


def meta_too_deep(meta: dict[str, Any]) -> bool:
    """True when ``meta`` nests containers deeper than :data:`MAX_META_DEPTH`."""
    level: list[Any] = [meta]
    for _ in range(MAX_META_DEPTH):
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, dict) else value)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return True


def check_relative_path(path: str) -> str | None:
    """Why ``path`` is refused as a manifest path, or None when it is acceptable.

    Absolute paths and any ``..`` component would let a manifest write outside
    the destination root.
    """
    if not path:
        return "empty path"
    if path.startswith("/"):
        return f"absolute path {path!r} (paths must be relative to the roots)"
    if "\x00" in path:
        return f"path {path!r} contains a NUL byte"
    if ".." in path.split("/"):
        return f"path {path!r} climbs out of the root ('..' component)"
    return None
