"""``xfer config init|show|validate|path|add-cluster|add-dir``: create, inspect, check and edit the remotes config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from xfer_core.errors import ConfigError, ExitCode
from xfer_core.output import current

if TYPE_CHECKING:
    from xfer_core.config.model import Config
    from xfer_core.config.paths import ConfigLocation

config_app = typer.Typer(
    name="config",
    help=(
        "Create, show, check and edit the remotes config (the clusters and directory pairs of "
        "`xfer sync` / `xfer fetch`).\n\n"
        "The file used: `--config`, else `$XFER_CONFIG`, else `~/.config/xfer/remotes.toml`, "
        "else sbatchman's `~/.config/sbatchman/remotes-config.toml` (read unchanged). "
        "Edits keep your comments and key order. Reference: docs/config.md."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="The config file (default: $XFER_CONFIG, then ~/.config/xfer/remotes.toml).",
        show_default=False,
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _locate(config: Path | None) -> ConfigLocation:
    from xfer_core.config.paths import resolve_config_path

    return resolve_config_path(config)


def _editable(config: Path | None) -> ConfigLocation:
    """The file an edit goes to; sbatchman's file is only edited when named with --config."""
    from xfer_core.config.paths import display_path

    location = _locate(config)
    if location.origin == "sbatchman":
        raise ConfigError(
            f"the config in use is sbatchman's ({display_path(location.path)}); xfer does not edit it",
            hint=(
                f"copy it to {display_path(location.path.parent.parent / 'xfer' / 'remotes.toml')} "
                "first, or name it with --config to edit it anyway"
            ),
        )
    return location


def _read_text(location: ConfigLocation) -> str:
    from xfer_core.config.paths import display_path

    try:
        return location.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no config file at {display_path(location.path)} ({location.reason})",
            hint="create one with `xfer config init`",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {display_path(location.path)}: {exc}") from None


def init(
    config: ConfigOption = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Overwrite an existing file.")
    ] = False,
) -> None:
    """Write a commented starter config (refuses to overwrite an existing one without --force).

    The starter has a `[global]` table with the usual excludes and a commented
    example cluster with a sync and a fetch pair. It goes to `--config`, else
    `$XFER_CONFIG`, else `~/.config/xfer/remotes.toml` (never to sbatchman's file).

    Examples:

        xfer config init

        xfer config init --config ./remotes.toml --force
    """
    from xfer_core.config.edit import STARTER_CONFIG, write_config
    from xfer_core.config.paths import ConfigLocation, default_config_path, display_path

    location = _locate(config)
    if location.origin == "sbatchman":
        location = ConfigLocation(default_config_path(), "default", "the default location")
    shown = display_path(location.path)
    if location.path.exists() and not force:
        raise ConfigError(
            f"{shown} already exists", hint="pass --force to overwrite it, or edit it"
        )
    write_config(location.path, STARTER_CONFIG)
    out = current()
    if out.json:
        out.emit_json({"event": "config_written", "path": str(location.path)})
    else:
        out.info(f"wrote {shown}; add a cluster with `xfer config add-cluster`")


def show(config: ConfigOption = None, json: JsonOption = False) -> None:
    """Print the config file as it is, or with --json the loaded config (paths expanded).

    Examples:

        xfer config show

        xfer config show --json | jq '.config.clusters[].name'
    """
    from xfer_core.config.paths import display_path

    location = _locate(config)
    out = current()
    if json or out.json:
        import msgspec

        from xfer_core.config.load import read_config

        loaded = read_config(location)
        out.emit_json({"path": str(location.path), "config": msgspec.to_builtins(loaded)})
        return
    text = _read_text(location)
    out.info(f"# {display_path(location.path)} ({location.reason})")
    print(text, end="" if text.endswith("\n") else "\n")


StrictOption = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Treat what sbatchman's file may contain (unknown keys, legacy `dirs`, a quoted "
        "port) as errors, as in xfer's own file.",
    ),
]


def validate(
    config: ConfigOption = None, json: JsonOption = False, strict: StrictOption = False
) -> None:
    """Check the config; print every problem as FILE:LINE: key: problem and exit 2 if any.

    Checks TOML syntax, unknown keys (with a did-you-mean), types, required keys,
    port range, duplicate cluster names and duplicate aliases within a cluster.
    sbatchman's file (`remotes-config.toml`) is read as sbatchman reads it: what
    sbatchman tolerates is a warning line; `--strict` makes it an error.

    Examples:

        xfer config validate

        xfer config validate --config ./remotes.toml && echo ok

        xfer config validate --strict --config ~/.config/sbatchman/remotes-config.toml
    """
    import sys

    from xfer_core.config.load import check_text, dialect_of, parse_config
    from xfer_core.config.paths import display_path

    location = _locate(config)
    shown = display_path(location.path)
    text = _read_text(location)
    dialect = dialect_of(location.path)
    _, problems, warnings = check_text(text, shown, dialect)
    if strict:
        problems = sorted(problems + warnings, key=lambda p: p.line or 0)
        warnings = []
    out = current()
    if json or out.json:

        def listed(items: list) -> list[dict[str, object]]:
            return [{"line": p.line, "key": p.key, "message": p.message} for p in items]

        out.emit_json(
            {
                "path": str(location.path),
                "dialect": dialect,
                "valid": not problems,
                "problems": listed(problems),
                "warnings": listed(warnings),
            }
        )
    elif problems:
        from xfer_core.output import terminal_text

        for problem in problems:
            print(f"xfer: error: {terminal_text(str(problem))}", file=sys.stderr)
    else:
        for warning in warnings:
            out.warn(str(warning))
        loaded = parse_config(
            text, shown, base_dir=location.path.parent.absolute(), dialect=dialect
        )
        _warn_unknown_backends(loaded)
        sync = sum(len(c.sync_dirs) for c in loaded.clusters)
        fetch = sum(len(c.fetch_dirs) for c in loaded.clusters)
        out.info(
            f"{shown}: ok ({len(loaded.clusters)} clusters, {sync} sync dirs, {fetch} fetch dirs)"
        )
    if problems:
        raise typer.Exit(int(ExitCode.USAGE))


def _warn_unknown_backends(loaded: Config) -> None:
    """A backend name no installed plugin provides is legal (the file may be shared) but suspicious."""
    from xfer_core.registry import get_registry

    known = get_registry().names("transfer")
    named = [("global", loaded.global_.transfer_backend)] + [
        (f"cluster '{c.name}'", c.transfer_backend) for c in loaded.clusters
    ]
    for where, name in named:
        if name and name not in known:
            current().warn(
                f"{where}: transfer_backend '{name}' is not installed here "
                f"(installed: {', '.join(known)}; see `xfer plugins`)"
            )


def path(config: ConfigOption = None, json: JsonOption = False) -> None:
    """Print which config file is used, and why (on stderr).

    Examples:

        xfer config path

        $EDITOR "$(xfer config path)"
    """
    location = _locate(config)
    out = current()
    if json or out.json:
        out.emit_json(
            {
                "path": str(location.path),
                "origin": location.origin,
                "reason": location.reason,
                "exists": location.exists,
            }
        )
        return
    print(location.path)
    out.info(f"({location.reason}{'' if location.exists else '; the file does not exist'})")


def add_cluster(
    name: Annotated[str, typer.Argument(help="Cluster name, used with -c/--clusters.")],
    host: Annotated[
        str, typer.Option("--host", "-H", help="Host name or ~/.ssh/config Host alias.")
    ],
    port: Annotated[
        int | None, typer.Option("--port", "-p", min=1, max=65535, help="SSH port.")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Login user.")] = None,
    key_path: Annotated[
        str | None, typer.Option("--key-path", "-i", help="Private key (~ allowed).")
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", "-e", help="Cluster-wide exclude pattern. Repeatable."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add a `[[clusters]]` block (creates the config if there is none).

    Missing port/user/key come from ~/.ssh/config at transfer time. Comments and
    key order of the file are kept; the file is replaced atomically and only
    when the result validates.

    Examples:

        xfer config add-cluster leonardo --host login.leonardo.cineca.it --user alice

        xfer config add-cluster lab --host lab-login -p 2222 -i ~/.ssh/id_lab -e scratch
    """
    from xfer_core.config import edit
    from xfer_core.config.paths import display_path

    location = _editable(config)
    shown = display_path(location.path)
    text = location.path.read_text(encoding="utf-8") if location.exists else edit.STARTER_CONFIG
    new = edit.add_cluster(
        text, name, host, port=port, user=user, key_path=key_path, excludes=exclude or (),
        source=shown,
    )  # fmt: skip
    edit.write_config(location.path, new)
    _edited(location.path, f"added cluster '{name}' to {shown}")


def add_dir(
    cluster: Annotated[str, typer.Argument(help="The cluster (its `name`).")],
    alias: Annotated[str, typer.Argument(help="Short name, used with -a/--aliases.")],
    local: Annotated[str, typer.Option("--local", "-l", help="Local directory (~ allowed).")],
    remote: Annotated[
        str,
        typer.Option(
            "--remote", "-r", help="Directory on the cluster (~ and $VARS expanded there)."
        ),
    ],
    sync: Annotated[
        bool,
        typer.Option(
            "--sync/--fetch",
            help="A sync_dirs pair (pushed by `xfer sync`) or a fetch_dirs pair (pulled by `xfer fetch`).",
        ),
    ] = True,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", "-e", help="Exclude pattern for this pair. Repeatable."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add a directory pair to a cluster: `[[clusters.sync_dirs]]` (default) or, with --fetch, `[[clusters.fetch_dirs]]`.

    Comments and key order of the file are kept; the file is replaced atomically
    and only when the result validates.

    Examples:

        xfer config add-dir leonardo myproject --local ~/projects/myproject --remote '~/myproject'

        xfer config add-dir leonardo results --fetch -l ~/results -r '$SCRATCH/myproject/results'
    """
    from xfer_core.config import edit
    from xfer_core.config.paths import display_path

    location = _editable(config)
    shown = display_path(location.path)
    text = _read_text(location)
    new = edit.add_dir(
        text, cluster, alias, local, remote, direction="push" if sync else "pull",
        excludes=exclude or (),
        source=shown,
    )  # fmt: skip
    edit.write_config(location.path, new)
    kind = "sync_dirs" if sync else "fetch_dirs"
    _edited(location.path, f"added {kind} '{alias}' to cluster '{cluster}' in {shown}")


def _edited(path: Path, message: str) -> None:
    out = current()
    if out.json:
        out.emit_json({"event": "config_written", "path": str(path)})
    else:
        out.info(message)


def register(app: typer.Typer) -> None:
    """Add the ``config`` command group to ``app``."""
    config_app.command("init")(init)
    config_app.command("show")(show)
    config_app.command("validate")(validate)
    config_app.command("path")(path)
    config_app.command("add-cluster")(add_cluster)
    config_app.command("add-dir")(add_dir)
    app.add_typer(config_app, name="config")
