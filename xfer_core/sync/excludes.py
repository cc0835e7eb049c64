"""One exclude matcher with rsync's pattern semantics, shared by every transfer backend.

:class:`ExcludeMatcher` decides exactly what ``rsync --exclude=PATTERN`` decides,
so the rsync backend (which passes :meth:`ExcludeMatcher.rsync_args` to rsync)
and the sftp backend (which walks the tree and asks :meth:`ExcludeMatcher.excluded`)
transfer the same set of files. The rules are those of rsync(1), "INCLUDE/EXCLUDE
PATTERN RULES", as implemented by rsync's ``exclude.c`` (``rule_matches``) and
``lib/wildmatch.c``:

- ``*`` matches anything but ``/``; ``**`` (two or more stars) matches anything,
  ``/`` included; ``?`` one character but ``/``; ``[...]`` a class (``!`` or ``^``
  negates, ranges, ``[:alpha:]``-style names; never matches ``/``); ``\\`` escapes
  the next character when the pattern has a wildcard (else it is literal).
- A pattern without ``/`` (a trailing one aside) and without ``**`` matches the
  final name component at any depth.
- A pattern with an inner ``/`` matches the end of the path, on a component
  boundary (``a/b`` matches ``a/b`` and ``x/a/b``); a leading ``/`` anchors it
  to the transfer root.
- A trailing ``/`` matches directories only; ``dir/***`` matches ``dir`` and
  everything below it; a pattern starting with ``**/`` also matches at the root.
- An excluded directory excludes everything below it (rsync does not descend).

Matching works on bytes (``os.fsencode``), as rsync does: ``?`` is one byte, so it
never matches a multi-byte UTF-8 character, exactly like rsync.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

from xfer_core.errors import ConfigError

if TYPE_CHECKING:
    from xfer_core.config.model import Cluster, Config, DirPair

__all__ = ["ExcludeMatcher", "compile_pattern", "merge_excludes", "rsync_exclude_arg"]

_SLASH = ord("/")
_STAR = ord("*")
_BACKSLASH = ord("\\")

# The [:name:] classes of rsync's wildmatch, ASCII only (ISASCII && is*()).
_POSIX_CLASSES: dict[bytes, frozenset[int]] = {
    b"alnum": frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
    b"alpha": frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
    b"blank": frozenset(b" \t"),
    b"cntrl": frozenset([*range(32), 127]),
    b"digit": frozenset(b"0123456789"),
    b"graph": frozenset(range(33, 127)),
    b"lower": frozenset(b"abcdefghijklmnopqrstuvwxyz"),
    b"print": frozenset(range(32, 127)),
    b"punct": frozenset(c for c in range(33, 127) if not chr(c).isalnum()),
    b"space": frozenset(b" \t\n\r\x0b\x0c"),
    b"upper": frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    b"xdigit": frozenset(b"0123456789ABCDEFabcdef"),
}


class _NeverMatches(Exception):
    """The pattern can match no path at all (rsync's ABORT_ALL on a malformed class)."""


def _parse_class(pat: bytes, i: int) -> tuple[frozenset[int], int]:
    """Parse the class starting after ``[`` at ``pat[i]``: (matched bytes, index after ``]``).

    Mirrors the ``case '['`` branch of rsync's ``dowild()`` byte for byte.
    """
    n = len(pat)

    def at(k: int) -> int:
        return pat[k] if k < n else 0

    p = i
    negate = at(p) in (ord("!"), ord("^"))
    if negate:
        p += 1
    members: set[int] = set()
    prev = 0
    ch = at(p)
    while True:
        if not ch:
            raise _NeverMatches
        if ch == _BACKSLASH:
            p += 1
            ch = at(p)
            if not ch:
                raise _NeverMatches
            members.add(ch)
        elif ch == ord("-") and prev and at(p + 1) and at(p + 1) != ord("]"):
            p += 1
            ch = at(p)
            if ch == _BACKSLASH:
                p += 1
                ch = at(p)
                if not ch:
                    raise _NeverMatches
            members.update(range(prev, ch + 1))
            ch = 0  # a range end cannot start another range
        elif ch == ord("[") and at(p + 1) == ord(":"):
            s = p + 2
            q = s
            while at(q) and at(q) != ord("]"):
                q += 1
            if not at(q):
                raise _NeverMatches
            if q - s - 1 < 0 or pat[q - 1] != ord(":"):
                # no ":]": the "[" is an ordinary member, scanning goes on after it
                members.add(ord("["))
                prev, p = ord("["), p + 1
                ch = at(p)
                if ch == ord("]"):
                    break
                continue
            name = pat[s : q - 1]
            if name not in _POSIX_CLASSES:
                raise _NeverMatches
            members.update(_POSIX_CLASSES[name])
            p = q
            ch = 0
        else:
            members.add(ch)
        prev = ch
        p += 1
        ch = at(p)
        if ch == ord("]"):
            break
    matched = frozenset(range(1, 256)) - members if negate else frozenset(members)
    return matched - {_SLASH}, p + 1


def _class_regex(members: frozenset[int]) -> bytes:
    if not members:
        raise _NeverMatches
    return b"[" + b"".join(re.escape(bytes([c])) for c in sorted(members)) + b"]"


def _wild_regex(pat: bytes) -> tuple[bytes, int]:
    """Translate a wildcard pattern to a regex; also return how many ``/`` it consumes."""
    out: list[bytes] = []
    slashes = 0
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        if c == _BACKSLASH:
            if i + 1 >= n:
                raise _NeverMatches  # a trailing backslash can match nothing
            lit = pat[i + 1]
            slashes += lit == _SLASH
            out.append(re.escape(bytes([lit])))
            i += 2
        elif c == ord("?"):
            out.append(b"[^/]")
            i += 1
        elif c == _STAR:
            j = i
            while j < n and pat[j] == _STAR:
                j += 1
            out.append(b"[^/]*" if j - i == 1 else b".*")
            i = j
        elif c == ord("["):
            members, i = _parse_class(pat, i + 1)
            out.append(_class_regex(members))
        else:
            slashes += c == _SLASH
            out.append(re.escape(bytes([c])))
            i += 1
    return b"".join(out), slashes


class _Rule:
    """One compiled pattern: regexes over ``b"/" + path`` (files) and ``b"/" + path + b"/"`` (dirs)."""

    __slots__ = ("dir_only", "dir_regex", "file_regex", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.file_regex: bytes | None = None
        self.dir_regex: bytes | None = None
        pat = os.fsencode(pattern)
        self.dir_only = len(pat) > 1 and pat.endswith(b"/")
        if self.dir_only:
            pat = pat[:-1]
        slash_cnt = pat.count(b"/")
        wild = any(c in pat for c in b"*[?")
        wild2 = wild and b"**" in pat
        wild2_prefix = wild2 and pat.startswith(b"**")
        wild3_suffix = wild2 and pat.endswith(b"***")
        anchored = pat.startswith(b"/")
        body = pat[1:] if anchored else pat
        try:
            if wild:
                core, consumed = _wild_regex(body)
            else:
                core, consumed = re.escape(body), slash_cnt
        except _NeverMatches:
            return
        # The texts matched are F = "/" + path and D = "/" + path + "/": the leading
        # "/" turns "start of path or after a slash" into "after a slash".
        if anchored:
            head = rb"\A/"
        elif wild2_prefix:
            head = rb"\A"  # rsync matches "**..." against "/" + path, from the start
        else:
            # rsync tries the start and after every "/"; a pattern with an inner "/"
            # and no "**" sees exactly the last slash_cnt+1 components, which is the
            # same unless a class swallowed a "/" (then it can never match).
            if slash_cnt and not wild2 and consumed != slash_cnt:
                return
            head = b"/"
        self.file_regex = None if self.dir_only else head + core + rb"\Z"
        # rsync matches a "/***"-suffixed pattern against "path/" for a directory.
        self.dir_regex = head + core + (rb"\Z" if wild3_suffix else rb"/\Z")


def compile_pattern(pattern: str) -> _Rule:
    """Check and compile one pattern (raises :class:`ConfigError` for unusable ones)."""
    if not pattern:
        raise ConfigError("empty exclude pattern", hint="remove the empty string from the list")
    if "\0" in pattern:
        raise ConfigError(f"exclude pattern {pattern!r} contains a NUL character")
    return _Rule(pattern)


def _alternation(regexes: Iterable[bytes]) -> re.Pattern[bytes] | None:
    parts = [b"(?:" + r + b")" for r in regexes]
    if not parts:
        return None
    return re.compile(b"|".join(parts), re.DOTALL)


def rsync_exclude_arg(pattern: str) -> str:
    """The rsync argument that excludes exactly ``pattern``.

    ``--exclude`` reads a leading ``"- "``/``"+ "`` as a rule prefix and a lone
    ``"!"`` as "clear the list"; such patterns go through ``--filter=- PATTERN``,
    which takes the rest of the string literally.
    """
    if pattern == "!" or pattern.startswith(("- ", "+ ")):
        return f"--filter=- {pattern}"
    return f"--exclude={pattern}"


class ExcludeMatcher:
    """Decides which relative paths are excluded, exactly as ``rsync --exclude`` would.

    Build once per pair from :func:`merge_excludes`; the patterns are compiled to two
    regexes (one for files, one for directories), so a call costs one regex search.
    ``relpath`` is ``/``-separated, relative to the pair's root, without a leading
    ``/``; ``str`` paths are encoded with :func:`os.fsencode` (non-UTF-8 names
    round-trip through surrogateescape), ``bytes`` are used as they are.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = list(patterns)
        rules = [compile_pattern(p) for p in self._patterns]
        self._file = _alternation(r.file_regex for r in rules if r.file_regex is not None)
        self._dir = _alternation(r.dir_regex for r in rules if r.dir_regex is not None)
        self._dir_cache: dict[bytes, bool] = {}

    @property
    def patterns(self) -> list[str]:
        """The patterns, in the order given (merged order from :func:`merge_excludes`)."""
        return list(self._patterns)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def __repr__(self) -> str:
        return f"ExcludeMatcher({self._patterns!r})"

    def matches(self, relpath: str | bytes, is_dir: bool) -> bool:
        """Whether a pattern matches this entry itself (its parent directories are not looked at).

        For a top-down walk that does not descend into excluded directories,
        this is all that is needed per entry; :meth:`excluded` also checks parents.
        """
        path = relpath if isinstance(relpath, bytes) else os.fsencode(relpath)
        if not path:
            return False
        if is_dir:
            return self._dir is not None and self._dir.search(b"/" + path + b"/") is not None
        return self._file is not None and self._file.search(b"/" + path) is not None

    def excluded(self, relpath: str | bytes, is_dir: bool) -> bool:
        """Whether rsync would leave this path out: it, or a directory above it, is excluded."""
        path = relpath if isinstance(relpath, bytes) else os.fsencode(relpath)
        if self._dir is None and self._file is None:
            return False
        if self.matches(path, is_dir):
            return True
        cut = path.rfind(b"/")
        return cut > 0 and self._dir_excluded(path[:cut])

    def _dir_excluded(self, path: bytes) -> bool:
        hit = self._dir_cache.get(path)
        if hit is None:
            cut = path.rfind(b"/")
            hit = self.matches(path, True) or (cut > 0 and self._dir_excluded(path[:cut]))
            if len(self._dir_cache) > 200_000:
                self._dir_cache.clear()
            self._dir_cache[path] = hit
        return hit

    def rsync_args(self) -> list[str]:
        """Arguments that make rsync exclude exactly what this matcher excludes."""
        return [rsync_exclude_arg(p) for p in self._patterns]


def merge_excludes(
    config: Config,
    cluster: Cluster,
    pair: DirPair,
    direction: Literal["push", "pull"],
    cli: Sequence[str] = (),
) -> list[str]:
    """The exclude list of one pair, merged in the seed's order.

    ``global.common_excludes`` → ``global.sync_excludes`` (push) / ``fetch_excludes``
    (pull) → ``cluster.excludes`` → ``cluster.sync_excludes`` / ``fetch_excludes`` →
    ``pair.excludes`` → ``--exclude`` from the command line. A pattern given more
    than once keeps its last position ("later entries win on duplicates").
    """
    if direction not in ("push", "pull"):
        raise ValueError(f"direction must be 'push' or 'pull', not {direction!r}")
    g = config.global_
    push = direction == "push"
    layers = (
        g.common_excludes,
        g.sync_excludes if push else g.fetch_excludes,
        cluster.excludes,
        cluster.sync_excludes if push else cluster.fetch_excludes,
        pair.excludes,
        cli,
    )
    merged = [p for layer in layers for p in layer]
    last = {p: i for i, p in enumerate(merged)}
    return [p for i, p in enumerate(merged) if last[p] == i]
