"""What every plugin object shares, whatever its kind.

A plugin is one class (subclassing the base of its kind, e.g.
:class:`xfer_core.sync.backend.TransferBackend`) and one hook implementation that
registers an instance of it; see ``plugins.md``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

Kind = Literal["transfer", "shard_engine", "scheduler", "runtime", "lister"]
KINDS: tuple[Kind, ...] = ("transfer", "shard_engine", "scheduler", "runtime", "lister")


class Availability(msgspec.Struct, frozen=True):
    """Whether a plugin can run on this machine, and if not, why (e.g. ``rsync: not on PATH``)."""

    ok: bool
    reason: str = ""


AVAILABLE = Availability(True)


class Plugin:
    """Base of every plugin kind. Subclasses set ``name`` (unique within its kind)."""

    #: Name users type (``-b rsync``, ``--scheduler local``, ``--runtime pyxis``).
    name: ClassVar[str]
    #: Set by the kind's base class.
    kind: ClassVar[Kind]
    #: One line shown by ``xfer plugins``.
    description: ClassVar[str] = ""

    def check(self) -> Availability:
        """Can this plugin run here? Must be cheap: no network, no long subprocesses."""
        return AVAILABLE
