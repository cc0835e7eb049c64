"""Line numbers of the keys of a TOML document, for ``FILE:LINE: key: problem`` messages.

TOML parsers give values, not positions. :func:`key_lines` scans the (already
syntax-checked) text once and maps each concrete key path -- ``("clusters", 1,
"sync_dirs", 0, "alias")`` -- to the line where it is defined: table and
array-of-tables headers, ``key = value`` lines, inline-table keys and array
elements. Multi-line strings and arrays are followed, so a ``key =`` inside a
string is never taken for a key.
"""

from __future__ import annotations

import contextlib
import json

KeyPath = tuple[str | int, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        self.aot_counts: dict[KeyPath, int] = {}
        #: The first key assigned twice (path, line of the second assignment), if any.
        self.duplicate: tuple[KeyPath, int] | None = None

    # -- low level ---------------------------------------------------------
    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.text[j] if j < len(self.text) else ""

    def advance(self, k: int = 1) -> None:
        for _ in range(k):
            if self.i < len(self.text):
                if self.text[self.i] == "\n":
                    self.line += 1
                self.i += 1

    def skip_ws(self, newlines: bool = False) -> None:
        while True:
            c = self.peek()
            if c in (" ", "\t", "\r") or (newlines and c == "\n"):
                self.advance()
            elif newlines and c == "#":
                self.skip_comment()
            else:
                return

    def skip_comment(self) -> None:
        while self.peek() not in ("", "\n"):
            self.advance()

    def record(self, path: KeyPath, line: int | None = None) -> None:
        self.lines.setdefault(path, self.line if line is None else line)

    # -- strings and keys --------------------------------------------------
    def string(self) -> str:
        """Consume a string of any of TOML's four kinds; return its (roughly decoded) text."""
        q = self.peek()
        multi = self.peek(1) == q and self.peek(2) == q
        if multi:
            self.advance(3)
        else:
            self.advance()
        start = self.i
        while self.i < len(self.text):
            c = self.peek()
            if c == "\\" and q == '"':
                self.advance(2)
                continue
            if c == q and (not multi or (self.peek(1) == q and self.peek(2) == q)):
                end = self.i
                self.advance(3 if multi else 1)
                if multi:  # up to two more quotes belong to the content
                    for _ in range(2):
                        if self.peek() == q:
                            self.advance()
                            end += 1
                raw = self.text[start:end]
                if q == '"' and not multi:
                    try:
                        return str(json.loads(f'"{raw}"'))
                    except ValueError:
                        return raw
                return raw
            self.advance()
        return self.text[start:]

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.skip_ws()
            c = self.peek()
            if c in ('"', "'"):
                parts.append(self.string())
            else:
                start = self.i
                while self.peek() in _BARE and self.peek():
                    self.advance()
                if self.i == start:
                    return parts
                parts.append(self.text[start : self.i])
            self.skip_ws()
            if self.peek() != ".":
                return parts
            self.advance()

    # -- values ------------------------------------------------------------
    def value(self, path: KeyPath) -> None:
        self.skip_ws()
        c = self.peek()
        if c == "[":
            self.advance()
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() in ("]", ""):
                    self.advance()
                    return
                before = self.i
                self.record((*path, index))
                self.value((*path, index))
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.advance()
                    index += 1
                elif self.i == before:  # not TOML: make progress anyway
                    self.advance()
        elif c == "{":
            self.advance()
            while True:
                self.skip_ws()
                if self.peek() in ("}", "", "\n"):
                    self.advance()
                    return
                if self.peek() == ",":
                    self.advance()
                    continue
                self.key_value(path)
        elif c in ('"', "'"):
            self.string()
        else:
            while self.peek() not in ("", ",", "]", "}", "\n", "#"):
                self.advance()

    def key_value(self, table: KeyPath) -> None:
        line = self.line
        parts = self.key()
        self.skip_ws()
        if not parts or self.peek() != "=":
            self.skip_comment()
            return
        self.advance()
        path = (*table, *parts)
        if path in self.lines and self.duplicate is None:
            self.duplicate = (path, line)
        for k in range(1, len(parts)):  # dotted keys define their intermediate tables
            self.record((*table, *parts[:k]), line)
        self.record(path, line)
        self.value(path)

    # -- headers -----------------------------------------------------------
    def header(self) -> KeyPath:
        aot = self.peek(1) == "["
        self.advance(2 if aot else 1)
        parts = self.key()
        self.skip_ws()
        self.advance(2 if aot else 1)
        concrete: KeyPath = ()
        for k, part in enumerate(parts):
            concrete = (*concrete, part)
            if aot and k == len(parts) - 1:
                index = self.aot_counts.get(concrete, 0)
                self.aot_counts[concrete] = index + 1
                self.record(concrete)
                concrete = (*concrete, index)
            elif concrete in self.aot_counts:
                concrete = (*concrete, self.aot_counts[concrete] - 1)
        self.record(concrete)
        return concrete

    def document(self) -> dict[KeyPath, int]:
        table: KeyPath = ()
        while self.i < len(self.text):
            self.skip_ws(newlines=True)
            c = self.peek()
            if not c:
                break
            if c == "[":
                table = self.header()
            else:
                before = self.i
                self.key_value(table)
                if self.i == before:  # not something we understand: skip the line
                    self.skip_comment()
                    self.advance()
            self.skip_ws()
            if self.peek() == "#":
                self.skip_comment()
        return self.lines


def _scan(text: str) -> _Scanner:
    scanner = _Scanner(text)
    # best effort: on a problem, keep what was found before it
    with contextlib.suppress(IndexError, ValueError):
        scanner.document()
    return scanner


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map every key path defined in the TOML ``text`` to its 1-based line number.

    Best effort on text that is not valid TOML: whatever was found before the
    problem is returned, and it never raises.
    """
    return _scan(text).lines


def duplicate_key(text: str) -> tuple[KeyPath, int] | None:
    """The first key assigned twice in ``text`` and the line of its second assignment."""
    return _scan(text).duplicate


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]


def format_key_path(path: KeyPath) -> str:
    """``("clusters", 1, "sync_dirs", 0)`` → ``clusters[1].sync_dirs[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if part and set(part) <= _BARE else json.dumps(part)
            out += f".{text}" if out else text
    return out
