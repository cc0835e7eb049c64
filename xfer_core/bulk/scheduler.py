"""The scheduler interface (plugin kind ``scheduler``): runs a run dir's shards.

Owned by the execution issue; see ``plugins.md`` for the full contract.
"""

from __future__ import annotations

from typing import ClassVar

from xfer_core.plugin import Kind, Plugin


class Scheduler(Plugin):
    """Base class of schedulers (builtins: local, slurm)."""

    kind: ClassVar[Kind] = "scheduler"
