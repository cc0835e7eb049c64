"""The command line: thin Typer commands that parse, call xfer_core, and render.

:func:`main` is the console script. It answers ``xfer --version`` before
importing Typer and the command modules, so that call stays fast.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``xfer`` script."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from xfer_core import __version__

        print(f"xfer {__version__}")
        return
    from xfer_core.cli.app import main as run_app

    try:
        run_app(args)
    finally:
        # The command is over and its exit status decided. A SIGINT/SIGTERM arriving now,
        # while the interpreter shuts down (which hands the signals back to the kernel's
        # default), must not turn that status into a death by signal.
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
