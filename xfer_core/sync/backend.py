"""The transfer-backend interface (plugin kind ``transfer``): directory sync for ``xfer sync``/``fetch``.

Owned by the sync/fetch issue; see ``plugins.md`` for the full contract.
"""

from __future__ import annotations

from typing import ClassVar

from xfer_core.plugin import Kind, Plugin


class TransferBackend(Plugin):
    """Base class of transfer backends (builtins: rsync, sftp)."""

    kind: ClassVar[Kind] = "transfer"
