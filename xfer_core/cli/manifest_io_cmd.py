"""Manifest subcommands (not built yet): registers nothing until its issue lands."""

from __future__ import annotations

import typer


def register(manifest_app: typer.Typer) -> None:
    """Add this module's subcommands to the ``manifest`` group."""
