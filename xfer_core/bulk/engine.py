"""The shard-engine interface (plugin kind ``shard_engine``): what copies one shard.

An engine does not copy anything itself. At render time (``xfer slurm render``,
``xfer run``) it writes two bash functions into ``worker.sh``; the worker runs
them on a compute node, where only bash and coreutils are assumed (no Python,
jq or awk):

``xfer_copy FILES LOG``
    copy every object named in the shard's file list ``FILES`` from the source
    root to the destination root; append all output to ``LOG``; return non-zero
    on failure.
``xfer_verify FILES LOG``
    check that every object named in ``FILES`` is at the destination with the
    right size (and hash where both sides have one); return non-zero otherwise.
    A name missing from the *source* is a failure too: copy tools skip such names
    silently, so verification is what proves a shard complete.

Both functions, on failure, write a one-line reason (``rclone exit 5: ...``,
``verify: 3 missing, 1 size mismatch``) to the file named by the shell variable
``$XFER_REASON``; the worker puts it in ``state/shard_<i>.fail``.

The tool itself runs through the chosen container runtime. The worker defines
a bash function ``xfer_tool`` that runs the tool (``rclone``, ``s5cmd``...)
through the runtime with the arguments it is given, so engine functions call
``xfer_tool copy ...``, never the binary directly. When several shards run
on one machine at once (the local scheduler), ``$XFER_SPLIT_ARGS`` holds each
shard's share of the tool's parallelism flags (:meth:`ShardEngine.machine_flags`);
an engine passes it after the user's flags. A function that needs a file
of its own (a check listing beside ``LOG``) creates it with ``xfer_new_file PATH``
first and then only appends to it: that never writes through a symlink planted at
``PATH`` (docs/security.md).

A third-party engine (e.g. s5cmd for S3 destinations) subclasses
:class:`ShardEngine`, sets ``tool``, implements :meth:`render_functions`, and
registers an instance from ``register_shard_engines``::

    from xfer_core.bulk.engine import EngineContext, ShardEngine
    from xfer_core.hookspecs import hookimpl

    class S5cmdEngine(ShardEngine):
        name = "s5cmd"
        tool = "s5cmd"
        description = "s5cmd run, for S3 destinations"

        def render_functions(self, ctx: EngineContext) -> str:
            dst = shlex.quote(ctx.dest_root)
            return COPY_AND_VERIFY_BASH.replace("@DST@", dst)  # defines both functions

    @hookimpl
    def register_shard_engines(register):
        register(S5cmdEngine())

Every value an engine puts into its bash must go through :func:`shlex.quote`
(:func:`xfer_core.bulk.render.sh` is a shorthand).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import msgspec

from xfer_core.bulk.runtime import Mount
from xfer_core.plugin import Kind, Plugin

if TYPE_CHECKING:
    from xfer_core.manifest.analyze import Analysis


class EngineContext(msgspec.Struct, frozen=True, kw_only=True):
    """What an engine knows when it renders its functions (all frozen at render time)."""

    #: Source root as the engine's tool spells it (``/data/set``, ``s3src:bucket/prefix``).
    source_root: str
    #: Destination root, same spelling rules.
    dest_root: str
    #: Extra flags of the user for the tool (``--rclone-flags``), already split.
    flags: tuple[str, ...] = ()
    #: The tool's config file (rclone.conf), or None; mounted read-only by runtimes.
    config_path: str | None = None
    #: Absolute path of the run dir (holds ``shards/`` with the lists).
    run_dir: str = ""
    #: How records are checked: ``hash`` (size, plus hash where both sides have
    #: one), ``size`` (size only; cheaper, never reads the source twice) or
    #: ``check`` (as ``hash``, and a listing check of every record after the copy).
    verify: str = "hash"


class ShardEngine(Plugin):
    """Base class of shard engines (builtin: ``rclone``)."""

    kind: ClassVar[Kind] = "shard_engine"
    #: The program the runtime wraps (``argv[0]`` given to ``ContainerRuntime.wrap``).
    tool: ClassVar[str] = ""

    def render_functions(self, ctx: EngineContext) -> str:
        """Bash source defining ``xfer_copy FILES LOG`` and ``xfer_verify FILES LOG``.

        See the module docstring for their contract. The text is pasted into
        ``worker.sh`` after the ``xfer_tool`` function is defined. It must quote
        every value from ``ctx`` with :func:`shlex.quote`.
        """
        raise NotImplementedError

    def mounts(self, ctx: EngineContext) -> list[Mount]:
        """Host paths a container must see: the config (read-only), the run dir's
        shard lists (read-only), and local source (read-only) / destination
        (read-write) roots. The default covers tools whose roots are local
        paths when they start with ``/``."""
        mounts: list[Mount] = []
        if ctx.config_path:
            mounts.append(Mount(ctx.config_path, ctx.config_path, read_only=True))
        if ctx.run_dir:
            shards = str(Path(ctx.run_dir) / "shards")
            mounts.append(Mount(shards, shards, read_only=True))
        for root, read_only in ((ctx.source_root, True), (ctx.dest_root, False)):
            if root.startswith("/"):
                mounts.append(Mount(root, root, read_only=read_only))
        return mounts

    def prepare(self, run_dir: Path, shard_indices: Sequence[int], ctx: EngineContext) -> None:
        """Precompute per-shard inputs at render time (e.g. an s5cmd command file
        per shard beside ``shard_%06d.files``), so the worker needs no Python.
        Called once per render with every shard index. Default: nothing to do."""

    def verify_mode(self, ctx: EngineContext) -> str:
        """How the shards of ``ctx`` will be verified, for the run's request plan:
        ``check`` when the engine lists every record again after the copy, else
        ``ctx.verify``. The default is ``ctx.verify``; an engine that decides from its
        flags (rclone: a copy that skips comparisons needs a ``check``) overrides it."""
        return ctx.verify

    def suggested_flags(self, analysis: Analysis) -> list[str]:
        """Flags for the tool when ``xfer run`` is given no ``--rclone-flags``.

        ``analysis`` is what ``manifest analyze`` found: ``suggested_rclone_flags``
        (rclone's own flags for the size profile: ``--transfers 32 --checkers 64 ...``)
        and ``transfers`` (the parallel copies it suggests). The default passes
        rclone's flags on only when ``tool`` is ``rclone``, and none to other tools;
        an engine whose tool has equivalents returns them in its own spelling.
        """
        return list(analysis.suggested_rclone_flags) if self.tool == "rclone" else []

    def machine_flags(self, flags: Sequence[str]) -> list[tuple[str, int]]:
        """The parallelism flags among ``flags`` that count for the whole machine:
        ``(name, value)`` pairs, e.g. ``[("--transfers", 16), ("--checkers", 32)]``.

        When several shards run on one machine at once (the local scheduler), each
        gets its share of them (:func:`share_flags`), passed to the tool after the
        user's own flags (``$XFER_SPLIT_ARGS`` in ``worker.sh``: the engine's
        functions put it there). Default: none (nothing is split).
        """
        return []


def share_flags(flags: Sequence[str], ways: int) -> list[str]:
    """Each of ``ways`` shards running at once on one machine: its share of ``flags``
    (``[name, value, name, value...]``, the machine's total), ``value // ways`` and at
    least 1; ``[]`` when there is nothing to split (``ways`` ≤ 1). ``worker.sh``
    computes the same in bash (``xfer_split_args``)."""
    if ways <= 1:
        return []
    return [
        a
        for name, value in zip(flags[::2], flags[1::2], strict=False)
        for a in (name, str(max(1, int(value) // ways)))
    ]
