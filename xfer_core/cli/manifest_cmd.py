"""``xfer manifest ...``: the manifest pipeline's stages as one command group."""

from __future__ import annotations

import typer

from xfer_core.cli import manifest_io_cmd, manifest_shard_cmd

manifest_app = typer.Typer(
    name="manifest",
    help="Build, analyze, shard, rebase, combine and verify xfer.manifest.v1 JSONL manifests.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``manifest`` group: build/rebase/combine/verify and analyze/shard."""
    manifest_io_cmd.register(manifest_app)
    manifest_shard_cmd.register(manifest_app)
    app.add_typer(manifest_app)
