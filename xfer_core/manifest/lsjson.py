"""rclone's ``lsjson`` output as manifest entries: the format that ``manifest combine``
reads from parts and the ``rclone`` lister streams from a running rclone.

rclone prints a JSON array with one object per line; :func:`parse_lsjson_lines`
parses the lines as they arrive, so memory stays flat for any listing size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec

from xfer_core.errors import XferError
from xfer_core.manifest.lister import ListEntry, join_location
from xfer_core.manifest.rclone_names import rclone_raw_name
from xfer_core.manifest.record import check_relative_path


class LsjsonItem(msgspec.Struct):
    """The fields of one ``rclone lsjson`` object that a manifest needs."""

    Path: str
    Size: int = -1
    ModTime: str | None = None
    IsDir: bool = False
    Hashes: dict[str, str] | None = None
    Tier: str | None = None
    ETag: str | None = None
    Metadata: dict[str, str] | None = None


_item_decoder = msgspec.json.Decoder(LsjsonItem)


def parse_lsjson_lines(lines: Iterable[bytes], where: str) -> Iterator[LsjsonItem]:
    """Parse rclone's lsjson array incrementally: ``[``, one object per line (``,``), ``]``.

    ``where`` names the input in errors (``FILE`` or ``rclone lsjson SRC``);
    errors read ``WHERE:LINE: reason``.
    """
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line in (b"[", b"]"):
            continue
        if line.endswith(b","):
            line = line[:-1]
        try:
            item = _item_decoder.decode(line)
        except msgspec.ValidationError as exc:
            raise XferError(f"{where}:{lineno}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise XferError(
                f"{where}:{lineno}: not an rclone lsjson line ({exc})",
                hint="lsjson parts must be the unmodified output of `rclone lsjson`",
            ) from None
        yield item


class UnusableName(XferError):
    """An object name no manifest may carry (absolute, or with a ``..`` component)."""


def item_to_entry(item: LsjsonItem, prefix: str = "") -> ListEntry:
    """A :class:`ListEntry` from one lsjson object, its path under ``prefix``.

    Raises :class:`UnusableName` for a name that would escape the destination root.
    """
    listed = join_location(prefix, item.Path) if prefix else item.Path
    # rclone spells control characters as control pictures (its Standard name encoding)
    path = rclone_raw_name(listed.encode()).decode()
    problem = check_relative_path(path)
    if problem is not None:
        raise UnusableName(f"unusable object name: {problem}")
    hashes = {k.lower(): v for k, v in item.Hashes.items() if v} if item.Hashes else {}
    etag = item.ETag
    if etag is None and item.Metadata:
        etag = item.Metadata.get("etag") or None
    return ListEntry(
        path=path,
        size=max(item.Size, 0),
        mtime=item.ModTime,
        hashes=hashes,
        etag=etag,
        storage_class=item.Tier or None,
    )
