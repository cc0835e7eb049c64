"""The container-runtime interface (plugin kind ``runtime``): wraps the engine's argv.

Owned by the execution issue; see ``plugins.md`` for the full contract.
"""

from __future__ import annotations

from typing import ClassVar

from xfer_core.plugin import Kind, Plugin


class ContainerRuntime(Plugin):
    """Base class of container runtimes (builtins: host, pyxis, enroot, apptainer, podman, docker)."""

    kind: ClassVar[Kind] = "runtime"
