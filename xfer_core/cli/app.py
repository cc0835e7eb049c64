"""The ``xfer`` Typer app: global options, command groups, and error/exit-code handling."""

from __future__ import annotations

import copy
import importlib
import os
import signal
import sys
import traceback
from typing import Annotated

import typer

from xfer_core import __version__
from xfer_core.cli import fastparams
from xfer_core.errors import ExitCode, XferError
from xfer_core.output import Output, set_current

#: The root: global options only. :func:`full_app` adds every command to it (``app``, as
#: imported from here, is that); :func:`app_for` a copy with one command.
_root = typer.Typer(
    name="xfer",
    help=(
        "Move data to, from and between HPC clusters.\n\n"
        "Everyday sync: `xfer sync` / `xfer fetch` push and pull the directory pairs of "
        "~/.config/xfer/remotes.toml over rsync or SFTP.\n\n"
        "Bulk transfers: `xfer run` lists a source into a manifest, cuts it into "
        "byte-balanced shards and runs one rclone per shard on Slurm or locally.\n\n"
        "Exit codes: 0 ok, 1 some items failed, 2 usage/config error, "
        "3 tool or service unavailable, 130 interrupted."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Command modules, each with ``register(app)``; one per command group of DESIGN.md. Each
#: names the plain (not group) top-level commands it adds: running one of them imports
#: that module only (``xfer sync``: not the manifest, batch or config commands).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "sync_cmd": ("sync", "fetch"),
    "config_cmd": (),
    "manifest_cmd": (),
    "batch_cmd": (),
    "run_cmd": ("run",),
    "status_cmd": ("status", "retry"),
    "plugins_cmd": ("plugins",),
}

_state = {"verbose": 0}


def _no_type_for_flags() -> None:
    """Typer 0.29's rich help shows ``<bool>`` beside every flag (``--help`` too),
    as if it took a value: a flag shows no type, as in Click."""
    from typer.core import TyperOption

    if not hasattr(TyperOption, "display_type_rich"):
        return  # older Typer: no type column for flags
    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag else shown(self, ctx)  # type: ignore[arg-type]

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_type_for_flags()
fastparams.install()


def _version(value: bool) -> None:
    if value:
        print(f"xfer {__version__}")
        raise typer.Exit()


@_root.callback()
def root(
    json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line on stdout (events, summary).")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only warnings and errors.")] = False,
    verbose: Annotated[
        int, typer.Option("-v", "--verbose", count=True, help="More detail; tracebacks on errors.")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options apply to every command (`xfer --json sync` == `xfer sync --json`)."""
    _state["verbose"] = verbose
    set_current(Output(json=json, quiet=quiet, verbose=verbose))


def _register(module: str, cli: typer.Typer) -> None:
    importlib.import_module(f"xfer_core.cli.{module}").register(cli)


def full_app() -> typer.Typer:
    """The app with every command (built on first use)."""
    if not _state.get("full"):
        _state["full"] = 1
        for module in COMMAND_MODULES:
            _register(module, _root)
    return _root


def __getattr__(name: str) -> typer.Typer:
    # ``from xfer_core.cli.app import app``: the whole app (tests and docs add to it)
    if name == "app":
        return full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The root callback's options that also work after the command (``xfer sync -v``).
_GLOBAL_FLAGS = frozenset({"--json", "-q", "--quiet", "--verbose"})


def _is_global(token: str) -> bool:
    return token in _GLOBAL_FLAGS or (
        len(token) > 1 and token.strip("-v") == "" and token[1] == "v"
    )


def app_for(args: list[str]) -> typer.Typer:
    """The app with only the top-level command that ``args`` runs (``sync``, ``run``...),
    else the whole app. Typer builds the Click command of every command it holds on
    each run (signatures, type hints: ~0.1 s for all of xfer's); one is enough to run one,
    and its module is the only one imported (until the whole app is built).
    Usage, help and errors of that command are the same (a command's help lists no
    siblings; a name that is no plain command -- a group, a typo -- gets the whole app)."""
    name = next((a for a in args if not a.startswith("-")), None)
    if name is None:
        return full_app()
    slim = copy.copy(_root)
    slim.registered_commands, slim.registered_groups = [], []
    module = next((m for m, names in COMMAND_MODULES.items() if name in names), None)
    if module is not None and not _state.get("full"):
        _register(module, slim)
        source = slim
    else:
        source = full_app()
    wanted = [c for c in source.registered_commands if c.name == name]
    if len(wanted) != 1 or any(g.name == name for g in source.registered_groups):
        return full_app()
    slim.registered_commands, slim.registered_groups = wanted, []
    return slim


def hoist_global_options(args: list[str], cli: typer.Typer | None = None) -> list[str]:
    """Move global options written after the command (``xfer sync -v``) before it,
    unless that command has an option of the same name (``sync --json`` is its own)."""
    if not any(_is_global(a) for a in args[1:]):
        return args  # the common case: no command tree built
    import typer

    cmd = typer.main.get_command(cli or full_app())
    ctx = cmd.context_class(cmd, info_name="xfer")
    pos = 0
    while pos < len(args) and args[pos].startswith("-"):
        pos += 1  # options of the root itself
    while pos < len(args) and hasattr(cmd, "get_command"):
        sub = cmd.get_command(ctx, args[pos])
        if sub is None:
            return args  # unknown command: let Click say so
        cmd, pos = sub, pos + 1
    own: dict[str, bool] = {}  # option name -> takes a value
    for param in getattr(cmd, "params", []):
        takes = not (getattr(param, "is_flag", False) or getattr(param, "count", False))
        for name in [*param.opts, *getattr(param, "secondary_opts", [])]:
            own[name] = takes and param.param_type_name == "option"
    head, tail, rest = args[:pos], [], args[pos:]
    kept: list[str] = []
    skip = False
    for i, token in enumerate(rest):
        if token == "--":
            kept += rest[i:]
            break
        if skip:
            skip = False
        elif token in own:
            skip = own[token]
        elif _is_global(token):
            tail.append(token)
            continue
        kept.append(token)
    return [*tail, *head, *kept]


def quiet_library_warnings() -> None:
    """Ignore warnings raised on behalf of asyncssh (cryptography's deprecation of
    algorithms asyncssh still registers): a newer cryptography than uv.lock's (``uv
    tool install`` ignores the lock) printed five of them over every SFTP progress bar.
    They tell a user nothing they can act on; xfer's own warnings are not affected."""
    import warnings

    warnings.filterwarnings("ignore", module=r"asyncssh(\.|$)")
    warnings.filterwarnings("ignore", message=r".*(TripleDES|Blowfish|CAST5|SEED|IDEA).*")


def main(argv: list[str] | None = None) -> None:
    """Run the app and map errors to exit codes (``xfer_core.cli.main`` calls this)."""
    quiet_library_warnings()
    args = sys.argv[1:] if argv is None else argv
    cli = app_for(args)
    args = hoist_global_options(args, cli)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        rv = cli(args=args, prog_name="xfer", standalone_mode=False)
    except XferError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        _print_error(exc.message, exc.hint)
        sys.exit(int(exc.exit_code))
    except (KeyboardInterrupt, typer.Abort):
        _ignore_further_interrupts()
        print("xfer: interrupted", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `xfer ... | head`: the reader left; no traceback, and no second error at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(int(ExitCode.FAILED))
    except Exception as exc:
        # typer's (vendored) click usage errors: bad option, missing argument, unknown command
        show = getattr(exc, "show", None)
        if isinstance(exc, typer.TyperException) and callable(show):
            show()
            sys.exit(int(ExitCode.USAGE))
        if _state["verbose"]:
            traceback.print_exc()
        first_line = (str(exc).splitlines() or [""])[0]
        _print_error(
            f"internal error: {type(exc).__name__}: {first_line}",
            None if _state["verbose"] else "run with -v for the traceback",
        )
        sys.exit(int(ExitCode.FAILED))
    code = rv if isinstance(rv, int) else 0
    if code == ExitCode.INTERRUPTED:
        # typer turns KeyboardInterrupt (Ctrl-C, and SIGTERM via _sigterm) into Exit(130)
        _ignore_further_interrupts()
        print("xfer: interrupted", file=sys.stderr)
    sys.exit(code)


def _sigterm(signum: int, frame: object) -> None:
    # SIGTERM takes the same clean path as Ctrl-C: temp files removed, state consistent.
    raise KeyboardInterrupt


def _ignore_further_interrupts() -> None:
    # Cleanup has run; a second signal during interpreter shutdown (thread joins, atexit)
    # would otherwise escape as an uncaught KeyboardInterrupt and kill us by SIGINT
    # instead of exiting 130.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # CPython 3.11 flags a KeyboardInterrupt raised as an exec()/eval() of a string starts
    # (typer, dataclasses and typing do that at start-up) as unhandled even once caught;
    # `python -m xfer_core.cli` then ends by killing itself with SIGINT instead of exiting
    # 130. Each exec() of a string clears that flag first; this one ends clean.
    exec("")


def _print_error(message: str, hint: str | None) -> None:
    from xfer_core.output import terminal_text

    print(f"xfer: error: {terminal_text(message)}", file=sys.stderr)
    if hint:
        print(f"  hint: {terminal_text(hint)}", file=sys.stderr)
