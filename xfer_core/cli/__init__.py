"""The command line: thin Typer commands that parse, call xfer_core, and render.

:func:`script` is the console script. It answers ``xfer --version`` before
importing Typer and the command modules, so that call stays fast.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run the CLI on ``argv`` (default: the command line); ends with ``SystemExit``."""
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


def script() -> None:
    """Entry point of the ``xfer`` script and of ``python -m xfer_core.cli``: :func:`main`,
    then the process ends without the interpreter's teardown (:func:`exit_now`).

    ``xfer sync``/``fetch`` first start their ssh master logins, which then run while
    Python imports the rest (:mod:`xfer_core.sync.early_login`)."""
    try:
        from xfer_core.sync import early_login

        early_login.start(sys.argv[1:])
        main()
    except SystemExit as exc:
        exit_now(exc.code)
        raise
    except KeyboardInterrupt:  # still starting up: the CLI's own handling is not in place yet
        print("xfer: interrupted", file=sys.stderr)
        exit_now(130)
        raise SystemExit(130) from None
    exit_now(0)


def exit_now(code: object) -> None:
    """End the process with ``code`` as :func:`sys.exit` would, minus the interpreter's
    teardown: freeing every module and object one by one takes ~30 ms, a tenth of a no-op
    ``xfer sync`` (docs/bench-sync.md), and there is nothing left to free once the command
    is over. What the normal exit does first still happens -- the ``atexit`` callbacks run
    and stdout/stderr are flushed -- and the normal exit is taken instead when another
    thread is still alive (it would be joined), or when stdout cannot be flushed (a closed
    pipe: Python's own message and status)."""
    import atexit
    import os
    import threading

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None or threading.active_count() != 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        status = 120  # as Python's own exit when the last flush fails
    os._exit(status & 0xFF)
