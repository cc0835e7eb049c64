"""The shard-engine interface (plugin kind ``shard_engine``): what copies one shard.

Owned by the execution issue; see ``plugins.md`` for the full contract.
"""

from __future__ import annotations

from typing import ClassVar

from xfer_core.plugin import Kind, Plugin


class ShardEngine(Plugin):
    """Base class of shard engines (builtin: rclone)."""

    kind: ClassVar[Kind] = "shard_engine"
