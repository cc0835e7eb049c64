"""Directory-entry names that come from elsewhere (a server's listing) and must be checked.

A name is one path component. A listing from a hostile or broken server may hold
``..``, ``a/b``, ``/etc/x``, an empty name or a NUL byte; joined to the destination
root, such a name would point outside it (or somewhere else inside it). rsync and
OpenSSH's sftp refuse them; so does every tree-walking backend, with
:func:`unsafe_name`.
"""

from __future__ import annotations


def unsafe_name(name: str) -> str | None:
    """Why ``name`` cannot be a single directory entry's name (``None``: it can)."""
    if name in ("", ".", ".."):
        return f"the name {name!r} is not a file name"
    if "/" in name:
        return "the name contains '/' (it would point into another directory)"
    if "\0" in name:
        return "the name contains a NUL byte"
    return None
