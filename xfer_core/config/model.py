"""The remotes config (seed 000's schema plus the fetch side), as typed records.

This module is the schema: ``xfer_core.config.load`` validates a file against these
structs (keys, types, required keys, the constraints below) with ``FILE:LINE``
messages, and :mod:`xfer_core.config.edit` edits it. The constraints are
``msgspec.Meta`` annotations, so the loader and ``msgspec.convert`` read the same ones:

- ``min_length=1`` on a string: must not be empty; with ``extra={"not_blank": True}``
  nor only blanks;
- ``ge``/``le`` on a number: its range; ``extra={"unit": ...}`` names the unit in
  messages (``a number of seconds``);
- ``extra={"check": FUNC}``: ``FUNC(value)`` returns why the value cannot be used, or
  None (host names, user names, paths);
- ``extra={"what": TEXT}`` on array items: what an item is, in messages
  (``an exclude pattern must not be empty``);
- ``extra={"optional": (KEY, ...)}`` on an array of tables: required keys of the
  item struct that may be left out there (derived by the loader).

Every string must be free of NUL bytes. Fields encoded as ``__name__`` are not
config keys (where the file was read from, its warnings, plugin tables).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec


def check_host(host: str) -> str | None:
    """Why ``host`` cannot be a cluster's host (``None``: it can).

    A host name, an ssh config ``Host`` alias or an IP address: letters, digits and
    ``.-_`` not starting with ``-``, or an IPv6 address (bare or in brackets). Anything
    else could reach ssh as an option (``-oProxyCommand=...``) or turn rsync's
    ``HOST:PATH`` into a local path (a ``/`` before the ``:``).
    """
    if host.startswith("-"):
        return f"host {host!r} must not start with '-' (ssh would read it as an option)"
    if "/" in host:
        return f"host {host!r} must not contain '/' (rsync would take HOST:PATH as a local path)"
    if "@" in host:
        return f"host {host!r} must not contain '@': put the user name in 'user'"
    if ":" in host:
        import ipaddress

        try:
            ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            return (
                f"host {host!r} must not contain ':' (except in an IPv6 address); "
                "put the port in 'port'"
            )
        return None
    if not _HOST_RE.fullmatch(host):
        return (
            f"host {host!r} is not a host name: use letters, digits, '.', '-' and '_' "
            "(an ssh config Host alias, a DNS name or an IP address)"
        )
    return None


_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def check_user(user: str) -> str | None:
    """Why ``user`` cannot be a login name (``None``: it can)."""
    if user.startswith("-"):
        return f"user {user!r} must not start with '-' (ssh would read it as an option)"
    if any(c in user for c in "/:") or not user.isprintable() or " " in user:
        return f"user {user!r} must not contain '/', ':', spaces or control characters"
    return None


#: A string that must not be empty (nor only blanks).
Text = Annotated[str, msgspec.Meta(min_length=1, extra={"not_blank": True})]
Host = Annotated[str, msgspec.Meta(min_length=1, extra={"not_blank": True, "check": check_host})]
User = Annotated[str, msgspec.Meta(min_length=1, extra={"not_blank": True, "check": check_user})]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
#: Seconds without an answer after which a connection counts as dead.
Seconds = Annotated[float, msgspec.Meta(ge=4, le=86400, extra={"unit": "seconds"})]
#: One exclude pattern (rsync's rules, see :mod:`xfer_core.sync.excludes`).
Pattern = Annotated[str, msgspec.Meta(min_length=1, extra={"what": "an exclude pattern"})]


class DirPair(msgspec.Struct, forbid_unknown_fields=True):
    """One ``[[clusters.sync_dirs]]`` or ``[[clusters.fetch_dirs]]`` block."""

    alias: Text
    local: Text
    #: Expanded by the remote side (``~``, ``$SCRATCH``), never locally.
    remote: Text
    excludes: list[Pattern] = []


class Cluster(msgspec.Struct, forbid_unknown_fields=True):
    """One ``[[clusters]]`` block. ``None`` means: take it from ``~/.ssh/config``, then defaults."""

    name: Text
    host: Host
    port: Port | None = None
    user: User | None = None
    key_path: Text | None = None
    #: Per-cluster backend (sbatchman accepts it too); ``--backend`` wins over it.
    transfer_backend: str | None = None
    #: Seconds without an answer after which the connection counts as dead (``[global]``'s if None).
    io_timeout: Seconds | None = None
    excludes: list[Pattern] = []
    sync_excludes: list[Pattern] = []
    fetch_excludes: list[Pattern] = []
    sync_dirs: list[DirPair] = []
    # sbatchman's fetch_dirs have no alias: the loader derives it from `remote`
    fetch_dirs: Annotated[list[DirPair], msgspec.Meta(extra={"optional": ("alias",)})] = []
    #: Transfer-backend plugins' own tables (``[clusters.NAME]``), validated against
    #: the backend's ``config_keys`` (see :mod:`xfer_core.sync.backend`).
    backend_tables: dict[str, dict[str, Any]] = msgspec.field(
        default_factory=dict, name="__backend_tables__"
    )


class GlobalConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The ``[global]`` table."""

    transfer_backend: str | None = None
    #: Base directory for relative ``local`` paths (sbatchman's key; default: the config's directory).
    local_base: str | None = None
    #: Seconds without an answer from a cluster after which its connection counts as dead.
    io_timeout: Seconds | None = None
    common_excludes: list[Pattern] = []
    sync_excludes: list[Pattern] = []
    fetch_excludes: list[Pattern] = []
    #: ``[global.NAME]`` tables of transfer-backend plugins: every cluster's defaults.
    backend_tables: dict[str, dict[str, Any]] = msgspec.field(
        default_factory=dict, name="__backend_tables__"
    )


class Config(msgspec.Struct, forbid_unknown_fields=True):
    """A whole remotes config file."""

    # "global" is a Python keyword; the TOML key is mapped by rename.
    global_: GlobalConfig = msgspec.field(default_factory=GlobalConfig, name="global")
    clusters: list[Cluster] = []
    #: Where it was read from (not part of the TOML).
    source: str | None = msgspec.field(default=None, name="__source__")
    #: ``FILE:LINE: ...`` lines for what was accepted only because sbatchman accepts it.
    warnings: list[str] = msgspec.field(default_factory=list, name="__warnings__")
