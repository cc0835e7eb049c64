"""Streaming JSONL reader and writer for manifest records.

The reader yields records one at a time (memory stays flat for any manifest
size) and fails on the first bad line with ``FILE:LINE: reason``. The writer
buffers encoded lines and writes atomically: the file appears complete under
its real name or not at all.
"""

from __future__ import annotations

import base64
import operator
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import msgspec

from xfer_core.atomic import atomic_write
from xfer_core.errors import ManifestError
from xfer_core.manifest.record import (
    MAX_META_DEPTH,
    PATH_B64,
    SCHEMA,
    ManifestRecord,
    check_relative_path,
    meta_too_deep,
)

_decoder = msgspec.json.Decoder(ManifestRecord)
_size = operator.attrgetter("size")


def decode_line(line: bytes, where: str) -> ManifestRecord:
    """Decode and check one manifest line; ``where`` is ``FILE:LINE`` for the error."""
    try:
        record = _decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        # msgspec raises this (not DecodeError) for invalid UTF-8 inside a string
        raise ManifestError(f"{where}: not valid JSON (invalid UTF-8: {exc.reason})") from None
    except RecursionError:
        raise ManifestError(
            f"{where}: nested too deeply (meta may nest {MAX_META_DEPTH} levels)"
        ) from None
    if record.schema != SCHEMA:
        raise ManifestError(
            f"{where}: unknown schema {record.schema!r} (this xfer reads {SCHEMA!r})"
        )
    if record.size < 0:
        raise ManifestError(f"{where}: negative size {record.size}")
    if record.meta and meta_too_deep(record.meta):
        raise ManifestError(f"{where}: meta nests deeper than {MAX_META_DEPTH} levels")
    problem = check_relative_path(record.path)
    raw = record.meta.get(PATH_B64) if record.meta else None
    if problem is None and raw is not None:
        # the exact-bytes name is what gets copied: it must be as safe as ``path``
        try:
            name = base64.b64decode(raw, validate=True)
        except (TypeError, ValueError):
            raise ManifestError(f"{where}: meta.{PATH_B64} is not base64 text") from None
        problem = check_relative_path(os.fsdecode(name))
    if problem is not None:
        raise ManifestError(f"{where}: {problem}")
    return record


def read_manifest(path: str | os.PathLike[str]) -> Iterator[ManifestRecord]:
    """Yield the records of a manifest file in order; blank lines are skipped.

    Raises :class:`ManifestError` (``FILE:LINE: reason``) on the first bad line,
    and when the file cannot be opened.
    """
    name = os.fspath(path)
    try:
        fh = open(name, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        raise ManifestError(f"{name}: cannot read manifest ({exc.strerror})") from None
    try:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                yield decode_line(line, f"{name}:{lineno}")
    finally:
        fh.close()


class ManifestWriter:
    """Write records to a JSONL file atomically (temp file + rename on close).

    Use as a context manager; if the block raises, the target is left untouched::

        with ManifestWriter(out) as w:
            for rec in records:
                w.write(rec)
    """

    _FLUSH_AT = 1 << 20

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.count = 0
        self.total_bytes = 0
        self._encoder = msgspec.json.Encoder()
        self._buf = bytearray()
        self._cm = atomic_write(self.path, "wb")
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> ManifestWriter:
        self._fh = self._cm.__enter__()
        return self

    def write(self, record: ManifestRecord) -> None:
        """Append one record."""
        self._encoder.encode_into(record, self._buf, len(self._buf))
        self._buf += b"\n"
        self.count += 1
        self.total_bytes += record.size
        if len(self._buf) >= self._FLUSH_AT:
            self._flush()

    def write_batch(self, records: list[ManifestRecord]) -> None:
        """Append a list of records (one bulk encode: much faster than many ``write``)."""
        data = self._encoder.encode_lines(records)
        self.count += len(records)
        self.total_bytes += sum(map(_size, records))
        if not self._buf and len(data) >= self._FLUSH_AT:
            assert self._fh is not None, "ManifestWriter used outside 'with'"
            self._fh.write(data)  # big batch: skip the copy into the buffer
            return
        self._buf += data
        if len(self._buf) >= self._FLUSH_AT:
            self._flush()

    def write_all(self, records: Iterable[ManifestRecord]) -> None:
        """Append many records."""
        for record in records:
            self.write(record)

    def _flush(self) -> None:
        assert self._fh is not None, "ManifestWriter used outside 'with'"
        self._fh.write(self._buf)
        self._buf.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._flush()
        self._cm.__exit__(exc_type, exc, tb)


def write_manifest(path: str | os.PathLike[str], records: Iterable[ManifestRecord]) -> int:
    """Write all ``records`` to ``path`` atomically; returns how many were written."""
    with ManifestWriter(path) as writer:
        writer.write_all(records)
    return writer.count
