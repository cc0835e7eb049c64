"""rclone's "Standard" name encoding: how rclone spells object names internally.

rclone names every object in its Standard encoding (lib/encoder ``Standard =
EncodeZero | EncodeSlash | EncodeCtl | EncodeDel | EncodeDot``): control
characters 0x01-0x1F become the Unicode control pictures U+2401-U+241F, DEL
becomes U+2421, and a literal occurrence of one of those pictures, of U+2400 or
of the quote character U+201B itself is prefixed with U+201B ``‛``. (``／`` and
``．`` stay as they are: the local and S3 backends encode slash and dot names
themselves, so rclone already reads those characters as the encoded forms.)
``rclone lsjson`` prints names this way, and ``--files-from-raw`` matches its
lines against names in this form: a name with a tab, CR or newline must be
listed encoded or rclone silently skips it (checked against rclone 1.75).

Names are handled as bytes: invalid UTF-8 passes through unchanged, as in rclone.
"""

from __future__ import annotations

import re

QUOTE = "\u201b"
_SYMBOL = 0x2400
_DEL_SYMBOL = "\u2421"

#: Bytes that make a name need encoding (fast test before the slow path).
_NEEDS = re.compile(
    rb"[\x00-\x1f\x7f]"
    rb"|\xe2\x90[\x80-\x9f\xa1]"  # U+2400-U+241F, U+2421
    rb"|\xe2\x80\x9b"  # U+201B, the quote
)
_CONTROLS_BUT_LF = bytes([*range(0x0A), *range(0x0B, 0x20), 0x7F])
_ENCODED = re.compile(rb"\xe2\x80\x9b|\xe2\x90[\x80-\x9f\xa1]")


def _encode(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20:
            out.append(chr(_SYMBOL + code))
        elif code == 0x7F:
            out.append(_DEL_SYMBOL)
        elif ch in (QUOTE, _DEL_SYMBOL) or _SYMBOL <= code <= _SYMBOL + 0x1F:
            out.append(QUOTE + ch)
        else:
            out.append(ch)
    return "".join(out)


def rclone_standard_name(raw: bytes) -> bytes:
    """The ``/``-separated name ``raw`` as rclone spells it (for ``--files-from-raw``)."""
    if _NEEDS.search(raw) is None:
        return raw
    return _encode(raw.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def rclone_name_list(names: list[bytes]) -> bytes:
    """``names`` as rclone spells them, one per line: a ``--files-from-raw`` list."""
    if not names:
        return b""
    joined = b"\n".join(names)
    # one C-level scan of the whole batch; names needing work are rare
    if (
        joined.count(b"\n") != len(names) - 1
        or len(joined.translate(None, _CONTROLS_BUT_LF)) != len(joined)
        or b"\xe2\x90" in joined  # a control picture (or a neighbour of one)
        or b"\xe2\x80\x9b" in joined  # the quote
    ):
        joined = b"\n".join([rclone_standard_name(n) for n in names])
    return joined + b"\n"


def _decode(text: str) -> str:
    out = []
    chars = iter(text)
    for ch in chars:
        if ch == QUOTE:
            nxt = next(chars, None)
            if nxt is None:
                out.append(ch)
            elif nxt in (QUOTE, _DEL_SYMBOL) or (_SYMBOL <= ord(nxt) <= _SYMBOL + 0x1F):
                out.append(nxt)
            else:
                out.append(ch + nxt)
            continue
        code = ord(ch)
        if _SYMBOL <= code <= _SYMBOL + 0x1F:
            out.append(chr(code - _SYMBOL))
        elif ch == _DEL_SYMBOL:
            out.append("\x7f")
        else:
            out.append(ch)
    return "".join(out)


def rclone_raw_name(standard: bytes) -> bytes:
    """Undo :func:`rclone_standard_name`: the object's real name from rclone's spelling
    (e.g. a ``Path`` from ``rclone lsjson``)."""
    if _ENCODED.search(standard) is None:
        return standard
    return _decode(standard.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
