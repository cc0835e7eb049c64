"""The lister interface (plugin kind ``lister``): streams a source tree into manifest entries.

A lister turns a source location (``/data/set``, ``s3src:bucket/prefix``) into a
stream of :class:`ListEntry` — one per object, name relative to the source —
without holding the listing in memory. ``xfer manifest build`` turns the
entries into ``xfer.manifest.v1`` records and ``xfer manifest verify`` lists a
destination with the same listers. Builtins: ``posix`` (walks a local or
mounted tree itself) and ``rclone`` (streams ``rclone lsjson -R``).

A third-party lister subclasses :class:`Lister` and registers an instance::

    from xfer_core.hookspecs import hookimpl
    from xfer_core.manifest.lister import ListEntry, Lister, ListOptions

    class GcsLister(Lister):
        name = "gcs"
        description = "Google Cloud Storage via the JSON API"

        def handles(self, source: str) -> bool:
            return source.startswith("gs://")

        def list(self, source: str, options: ListOptions):
            for blob in my_client.list_blobs(source):
                yield ListEntry(path=blob.name, size=blob.size, mtime=blob.updated)

    @hookimpl
    def register_listers(register):
        register(GcsLister())
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import msgspec

from xfer_core.errors import ConfigError
from xfer_core.plugin import Kind, Plugin


class ListEntry(msgspec.Struct):
    """One object found by a lister.

    ``path`` is relative to the listed source, ``/``-separated, never absolute
    and never containing ``..``. A name that is not valid UTF-8 is carried as
    its readable ``\\xNN`` form in ``path`` plus the exact bytes (base64) in
    ``meta["path_b64"]`` — build it with
    :func:`xfer_core.manifest.record.path_fields`.
    """

    path: str
    size: int
    #: RFC 3339 text (rclone's ``ModTime``) or POSIX seconds (posix lister).
    mtime: str | float | None = None
    #: Content hashes by lower-case algorithm name (``md5``, ``sha1``, ...), hex.
    hashes: dict[str, str] = {}
    etag: str | None = None
    storage_class: str | None = None
    meta: dict[str, Any] = {}


class ListProblem(msgspec.Struct, frozen=True):
    """A non-fatal listing problem: one line for the user."""

    message: str
    #: True when objects may be missing from the listing (an unreadable
    #: directory); False for a documented policy skip (a symlink, a FIFO).
    error: bool = True


def _ignore_problem(problem: ListProblem) -> None:
    """Default problem sink for library use; the CLI always installs a reporting one."""


class ListOptions(msgspec.Struct, kw_only=True):
    """How to list. Listers ignore options that do not apply to them."""

    #: Hash algorithms wanted: None = whatever the source gives cheaply
    #: (rclone: ``--hash`` on remotes; posix: none); ``()`` = no hashes;
    #: ``("md5",)`` = exactly these (posix reads and hashes every file).
    hashes: tuple[str, ...] | None = None
    #: rclone.conf to use (must be mode 0600: checked before rclone runs).
    rclone_config: str | None = None
    #: Container image holding rclone, for runtimes that need one.
    rclone_image: str | None = None
    #: Runtime plugin that runs rclone (``host`` = the host's rclone).
    runtime: str = "host"
    #: Extra ``rclone lsjson`` flags, already split (``shlex.split`` of ``--extra-lsjson-flags``).
    extra_flags: tuple[str, ...] = ()
    #: Concurrency: directories scanned at once (posix; 0 = its default of 8)
    #: or top-level prefixes listed at once (rclone; 0 or 1 = one ``lsjson -R``).
    parallel: int = 0
    #: Symlinks (posix): ``skip`` (reported as a problem) or ``follow``.
    symlinks: str = "skip"
    #: Where a container runtime mounts ``rclone_config`` (None: the lister's default).
    container_config: str | None = None
    #: More ``srun`` flags when the runtime is pyxis (``--pyxis-extra``), already split.
    pyxis_extra: tuple[str, ...] = ()
    #: Called once per non-fatal problem (an unreadable directory, a skipped
    #: symlink). Listers never drop anything silently.
    on_problem: Callable[[ListProblem], None] = _ignore_problem
    #: Called with ``(objects, bytes)`` found so far, now and then, for progress.
    on_progress: Callable[[int, int], None] | None = None


class Lister(Plugin):
    """Base class of listers (builtins: ``posix``, ``rclone``).

    Subclasses set ``name`` and ``description`` and implement :meth:`handles`
    and :meth:`list`; :meth:`check` says whether the lister can run here.
    """

    kind: ClassVar[Kind] = "lister"
    #: Order of asking in ``--lister auto`` (lower first); the catch-all rclone lister is last.
    priority: ClassVar[int] = 50

    def handles(self, source: str) -> bool:
        """True when this lister is the natural choice for ``source`` (used by ``--lister auto``).

        Must be cheap and must not touch the network; checking whether a local
        path exists is fine.
        """
        return False

    def list(self, source: str, options: ListOptions) -> Iterator[ListEntry]:
        """Yield one :class:`ListEntry` per object under ``source``, streaming.

        Memory must not grow with the number of objects (a bounded queue or a
        pipe, never the whole listing). Order is unspecified. Directories are not
        entries; an empty tree yields nothing. Non-fatal problems go to
        ``options.on_problem`` (one clear line each); a problem that makes the
        whole listing meaningless (source missing, bad credentials, tool absent)
        raises :class:`xfer_core.errors.XferError` with the right exit code. A
        caller that stops iterating early (``close()``) must not leave threads
        or processes behind.
        """
        raise NotImplementedError

    def join(self, root: str, path: str) -> str:
        """The full location of ``path`` under ``root`` (``/data`` + ``a/b`` -> ``/data/a/b``)."""
        return join_location(root, path)

    def normalize_root(self, source: str) -> str:
        """The root as recorded in the manifest (posix makes it absolute)."""
        return source


def join_location(root: str, path: str) -> str:
    """``root`` and a relative ``path`` joined with exactly one ``/`` (``remote:`` needs none)."""
    if not root:
        return path
    if root.endswith(("/", ":")):
        return root + path
    return root + "/" + path


def is_remote(source: str) -> bool:
    """True for an rclone-style ``remote:path`` (a ``:`` before any ``/``), not a local path."""
    head = source.split("/", 1)[0]
    if ":" not in head:
        return False
    # "C:" style drive letters do not occur on the POSIX hosts xfer targets
    return not os.path.exists(source)


def split_flags(text: str) -> tuple[str, ...]:
    """``--extra-lsjson-flags "..."`` as an argv tuple (shell-style quoting), for
    :attr:`ListOptions.extra_flags`."""
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:
        raise ConfigError(f"--extra-lsjson-flags {text!r}: {exc}") from None


def select_lister(
    source: str, name: str = "auto", listers: Sequence[Lister] | None = None
) -> Lister:
    """The lister called ``name``, or for ``auto`` the first (by priority) that handles ``source``."""
    from xfer_core.registry import get_registry

    registry = get_registry()
    if name != "auto":
        lister: Lister = registry.get("lister", name)
        return lister
    candidates = list(listers) if listers is not None else registry.all("lister")
    ordered = sorted(candidates, key=lambda lst: (getattr(lst, "priority", 50), lst.name))
    for candidate in ordered:
        if isinstance(candidate, Lister) and candidate.handles(source):
            return candidate
    raise ConfigError(
        f"no lister handles source {source!r}",
        hint="pass --lister NAME (`xfer plugins` lists the installed listers); "
        "a local source must exist",
    )
