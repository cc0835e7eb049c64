"""The remotes config (seed 000's schema plus the fetch side), as typed records.

Loading, validation with ``FILE:LINE`` messages and editing live in
``xfer_core.config.load`` / ``xfer_core.config.edit``; this module is only the shape.
"""

from __future__ import annotations

import msgspec


class DirPair(msgspec.Struct, forbid_unknown_fields=True):
    """One ``[[clusters.sync_dirs]]`` or ``[[clusters.fetch_dirs]]`` block."""

    alias: str
    local: str
    #: Expanded by the remote side (``~``, ``$SCRATCH``), never locally.
    remote: str
    excludes: list[str] = []


class Cluster(msgspec.Struct, forbid_unknown_fields=True):
    """One ``[[clusters]]`` block. ``None`` means: take it from ``~/.ssh/config``, then defaults."""

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    key_path: str | None = None
    #: Per-cluster backend (sbatchman accepts it too); ``--backend`` wins over it.
    transfer_backend: str | None = None
    #: Seconds without an answer after which the connection counts as dead (``[global]``'s if None).
    io_timeout: float | None = None
    excludes: list[str] = []
    sync_excludes: list[str] = []
    fetch_excludes: list[str] = []
    sync_dirs: list[DirPair] = []
    fetch_dirs: list[DirPair] = []


class GlobalConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The ``[global]`` table."""

    transfer_backend: str | None = None
    #: Base directory for relative ``local`` paths (sbatchman's key; default: the config's directory).
    local_base: str | None = None
    #: Seconds without an answer from a cluster after which its connection counts as dead.
    io_timeout: float | None = None
    common_excludes: list[str] = []
    sync_excludes: list[str] = []
    fetch_excludes: list[str] = []


class Config(msgspec.Struct, forbid_unknown_fields=True):
    """A whole remotes config file."""

    # "global" is a Python keyword; the TOML key is mapped by rename.
    global_: GlobalConfig = msgspec.field(default_factory=GlobalConfig, name="global")
    clusters: list[Cluster] = []
    #: Where it was read from (not part of the TOML).
    source: str | None = msgspec.field(default=None, name="__source__")
    #: ``FILE:LINE: ...`` lines for what was accepted only because sbatchman accepts it.
    warnings: list[str] = msgspec.field(default_factory=list, name="__warnings__")
