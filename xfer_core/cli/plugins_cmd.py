"""``xfer plugins``: what is installed, where it comes from, and whether it can run here."""

from __future__ import annotations

from typing import Annotated

import typer

from xfer_core.output import current


def plugins(
    json: Annotated[
        bool, typer.Option("--json", help="One JSON object (plugins + broken).")
    ] = False,
) -> None:
    """List every transfer backend, shard engine, scheduler, runtime and lister.

    Shows the distribution and version each comes from and whether it can run on
    this machine (with the reason when not). Plugins that failed to load are
    listed separately with their error; they never stop the CLI.

    Examples:

        xfer plugins

        xfer plugins --json | jq '.plugins[] | select(.available == false)'
    """
    import msgspec

    from xfer_core.registry import get_registry

    out = current()
    registry = get_registry()
    rows = registry.infos()
    if json or out.json:
        out.emit_json(
            {"plugins": msgspec.to_builtins(rows), "broken": msgspec.to_builtins(registry.broken)}
        )
        return
    from rich.table import Table

    table = Table(title="xfer plugins")
    for col in ("kind", "name", "from", "available"):
        table.add_column(col)
    for row in rows:
        avail = "[green]yes[/]" if row.available else f"[red]no[/]: {row.reason}"
        table.add_row(row.kind, row.name, f"{row.distribution} {row.version}", avail)
    out.stdout.print(table)
    for broken in registry.broken:
        out.warn(
            f"plugin {broken.entry_point} ({broken.distribution}) failed to load: {broken.error}"
        )


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
