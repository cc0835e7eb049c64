"""The container-runtime interface (plugin kind ``runtime``): wraps the engine's argv.

A runtime turns the argv of a tool (rclone, s5cmd, ...) plus read-only mounts
into the argv that runs it inside an image: ``srun --container-image`` for
pyxis, ``enroot start``, ``apptainer exec``, ``podman run``/``docker run``, or
the argv unchanged for ``host``. The result is rendered into ``worker.sh`` (shell
quoted there) or run directly by listers, so it must be a plain argv list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import msgspec

from xfer_core.plugin import Kind, Plugin


class Mount(msgspec.Struct, frozen=True):
    """A host path visible inside the container (read-only unless said otherwise)."""

    source: str
    target: str
    read_only: bool = True


class ContainerRuntime(Plugin):
    """Base class of container runtimes (builtins: host, pyxis, enroot, apptainer, podman, docker)."""

    kind: ClassVar[Kind] = "runtime"
    #: False for runtimes that run the host's binary (``host``): no image is needed.
    needs_image: ClassVar[bool] = True
    #: True when the tool sees the environment the runtime is started with (host, srun
    #: with pyxis, apptainer): credentials can then reach it without being on a command
    #: line. False when only ``env`` given to :meth:`wrap` (an argv) reaches it.
    passes_host_env: ClassVar[bool] = True

    def wrap(
        self,
        argv: Sequence[str],
        *,
        image: str | None,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """The argv that runs ``argv`` inside ``image`` with ``mounts`` and ``env``.

        ``argv[0]`` is the tool's name (``rclone``) for runtimes with an image; for
        those without (``needs_image`` False) it is the tool's absolute path on this
        host, resolved at render time. Raise :class:`xfer_core.errors.XferError` for unusable input (no image
        given to a runtime that needs one).
        """
        raise NotImplementedError
