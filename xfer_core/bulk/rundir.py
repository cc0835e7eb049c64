"""A run dir is trusted only when nobody but its user can change it.

A run dir holds the script that runs as the user (``worker.sh``), the state that
decides what runs, and logs the worker writes into. Another user who can write
there could swap ``worker.sh`` between render and submit (code run as the victim),
or plant a symlink where the worker creates a log and make it truncate a file of
the victim's. So every entry point that uses a run dir (``xfer run``, ``status``,
``retry``, ``slurm render|submit``, the local scheduler, and ``worker.sh`` itself
with the same rules in bash) goes through :func:`check_run_dir` first:

- the run dir and its subdirs (``shards/``, ``state/``, ``logs/``) are real
  directories (``lstat``: a symlink is refused), owned by the user, not writable
  by group or others;
- its top-level files (:data:`RUN_FILES`) are regular files with the same owner
  and mode rules;
- every ancestor directory of the (resolved) run dir is owned by the user or root
  and is not writable by others unless sticky (like ``/tmp``): else its owner or
  anyone could rename the run dir away and put another in its place. A
  group-writable ancestor is accepted (shared project directories usually are):
  the user trusts their group there.

xfer creates run dirs and their subdirs mode 0700 (:func:`make_run_dir`), and opens
the files it appends to or reads from a run dir without following symlinks
(:func:`open_nofollow`, :func:`read_nofollow`). Rules and fixes: docs/security.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec

from xfer_core.errors import ConfigError

#: Subdirectories of a run dir (created 0700).
SUBDIRS = ("shards", "state", "logs")

#: Top-level files of a run dir that decide what runs or what is reported (plus the
#: scheduler's job files that config.resolved.json names).
RUN_FILES = (
    "worker.sh",
    "config.resolved.json",
    "jobs.json",
    "manifest.jsonl",
    "analysis.json",
)

_HINT_OWN = "use a run dir of your own, e.g. --run-dir ~/xfer-runs/NAME (not under /tmp)"


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _refuse(message: str, hint: str) -> ConfigError:
    return ConfigError(message, hint=hint)


def _check_owned(path: Path, st: os.stat_result, what: str, me: int) -> None:
    if st.st_uid != me:
        raise _refuse(
            f"{what} {path} belongs to {_who(st.st_uid)}, not you ({_who(me)}): "
            "its owner could change what runs as you",
            _HINT_OWN,
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise _refuse(
            f"{what} {path} is writable by group or others (mode {mode:04o}): "
            "they could change what runs as you",
            f"chmod go-w {shlex.quote(str(path))} (xfer creates run dirs 0700)",
        )


def _check_ancestors(root: Path, me: int) -> None:
    for parent in root.parents:
        try:
            st = os.lstat(parent)
        except FileNotFoundError:
            continue
        if st.st_uid not in (me, 0):
            raise _refuse(
                f"run dir {root}: its parent {parent} belongs to {_who(st.st_uid)}, who "
                "could replace the run dir",
                _HINT_OWN,
            )
        if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            raise _refuse(
                f"run dir {root}: its parent {parent} is writable by everyone and not "
                "sticky: anyone could replace the run dir",
                _HINT_OWN,
            )


def check_run_dir(path: str | os.PathLike[str]) -> Path:
    """The resolved path of an existing run dir that only the user can change.

    Raises :class:`ConfigError` (one line and a fix) for a missing run dir, a symlink,
    a run dir, subdir or run file owned by someone else or writable by group/others,
    or an ancestor others could use to replace it.
    """
    root = Path(path).resolve()
    me = os.geteuid()
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise ConfigError(f"{root}: no such run dir") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"run dir {root} is not a directory")
    _check_owned(root, st, "run dir", me)
    _check_ancestors(root, me)
    for name in SUBDIRS + RUN_FILES + _job_files(root):
        entry = root / name
        try:
            est = os.lstat(entry)
        except FileNotFoundError:
            continue
        want_dir = name in SUBDIRS
        if stat.S_ISLNK(est.st_mode) or stat.S_ISDIR(est.st_mode) != want_dir:
            kind = "directory" if want_dir else "regular file"
            raise _refuse(
                f"run dir {root}: {name} is not a {kind}"
                + (" (a symlink)" if stat.S_ISLNK(est.st_mode) else ""),
                f"remove {shlex.quote(str(entry))} and re-render (xfer run or xfer slurm render)",
            )
        _check_owned(entry, est, "run dir entry", me)
    return root


class _JobFiles(msgspec.Struct):
    job_files: list[str] = []


def _job_files(root: Path) -> tuple[str, ...]:
    """The scheduler's job files config.resolved.json names (checked like the others)."""
    path = root / "config.resolved.json"
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return ()
        found = msgspec.json.decode(path.read_bytes(), type=_JobFiles).job_files
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return ()
    return tuple(n for n in found if n and "/" not in n and n not in (".", ".."))


def make_run_dir(path: str | os.PathLike[str]) -> Path:
    """Create the run dir mode 0700 if missing (its subdirs come with the shards and the
    render, 0700 too); then :func:`check_run_dir`."""
    root = Path(path).resolve()
    root.parent.mkdir(parents=True, exist_ok=True)
    _check_ancestors(root, os.geteuid())  # nothing is created where it would be refused
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    return check_run_dir(root)  # before anything is created inside


def make_subdirs(root: Path) -> None:
    """Create the missing subdirs of a checked run dir, mode 0700."""
    for name in SUBDIRS:
        with contextlib.suppress(FileExistsError):
            (root / name).mkdir(mode=0o700)


@contextlib.contextmanager
def no_group_write() -> Iterator[None]:
    """Files and dirs created meanwhile are not writable by group or others (umask
    ``| 022``), whatever the user's umask (002 is common): xfer refuses such run files."""
    old = os.umask(0o022)
    os.umask(old | 0o022)
    try:
        yield
    finally:
        os.umask(old)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def check_state_file(path: str | os.PathLike[str], st: os.stat_result) -> None:
    """Refuse a file xfer reads its state from unless it is a regular file owned by the
    user and not writable by group/others (another user's ``.done`` would skip a shard)."""
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(
            f"run dir entry {path} is not a regular file",
            f"remove it: rm -f {shlex.quote(str(path))}",
        )
    _check_owned(Path(path), st, "run dir entry", os.geteuid())


def open_nofollow(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """``os.open`` that refuses a symlink as the last component (``ELOOP``) and never
    blocks on a FIFO planted in its place."""
    return os.open(path, flags | _NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)


def append_log(path: str | os.PathLike[str]) -> int:
    """A file descriptor appending to the log ``path`` (created 0600), never through a
    symlink or into another user's file: whatever else is found there (planted while the
    directory was open to others) is removed and the log created anew, like ``worker.sh``
    does with its logs."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    try:
        fd = open_nofollow(path, flags)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENXIO) or not os.path.lexists(path):
            raise
    else:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1:
            return fd
        os.close(fd)
    os.unlink(path)
    return open_nofollow(path, flags | os.O_EXCL)


def read_nofollow(path: str | os.PathLike[str], limit: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes of the state file ``path`` (checked by :func:`check_state_file`);
    ``FileNotFoundError`` when absent, ``OSError`` (``ELOOP``) when it is a symlink."""
    fd = open_nofollow(path, os.O_RDONLY)
    try:
        check_state_file(path, os.fstat(fd))
        chunks = []
        left = limit
        while left > 0:
            data = os.read(fd, min(left, 65536))
            if not data:
                break
            chunks.append(data)
            left -= len(data)
        return b"".join(chunks)
    finally:
        os.close(fd)
