"""The lister interface (plugin kind ``lister``): streams a source tree into manifest entries.

Owned by the manifest issue; see ``plugins.md`` for the full contract.
"""

from __future__ import annotations

from typing import ClassVar

from xfer_core.plugin import Kind, Plugin


class Lister(Plugin):
    """Base class of listers (builtins: posix, rclone)."""

    kind: ClassVar[Kind] = "lister"
