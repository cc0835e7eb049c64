"""Running a command's asyncio work so that Ctrl-C and SIGTERM stop it cleanly.

The CLI turns SIGTERM into ``KeyboardInterrupt`` raised by a Python signal handler.
Inside an event loop that exception lands on whatever bytecode runs when the signal
arrives -- in the middle of a transport write or of asyncssh parsing a packet -- and
leaves the SSH stream corrupt: a request whose reply was half-read or never sent is
then awaited forever by the cleanup (``asyncio.run`` cancels every task and waits for
it), so the process hangs. :func:`run_interruptible` instead receives both signals
through the event loop and cancels the main task: cancellation is delivered only at
an ``await``, where every protocol is in a consistent state, so the cleanup (temp
files removed, sessions closed) runs on a healthy connection; then it raises
``KeyboardInterrupt`` (exit 130).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_interruptible(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, but SIGINT/SIGTERM cancel ``main`` at an ``await`` and then
    raise :class:`KeyboardInterrupt` once its cleanup has run.

    A second signal cancels again (cleanup that waits on a dead peer is cut short;
    whatever temp files it leaves are removed by the next run).
    """
    interrupted = False

    async def guarded() -> T | None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            # I/O tasks a library started and a cancelled caller no longer awaits fail
            # when their connection closes; after an interrupt that is expected noise.
            if interrupted and "never retrieved" in str(context.get("message", "")):
                return
            loop.default_exception_handler(context)

        loop.set_exception_handler(on_error)
        installed: list[tuple[signal.Signals, Any]] = []
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, on_signal)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
                continue
            installed.append((sig, previous))
        try:
            return await main
        except asyncio.CancelledError:
            if interrupted:
                return None  # KeyboardInterrupt below, once the loop is closed
            raise
        finally:
            # remove_signal_handler leaves SIGTERM at SIG_DFL until the restore: one arriving
            # in between would kill us outright. Held back, it reaches the restored handler.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            try:
                for sig, previous in installed:
                    loop.remove_signal_handler(sig)
                    signal.signal(sig, previous)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)

    result = asyncio.run(guarded())
    if interrupted:
        raise KeyboardInterrupt
    return result  # type: ignore[return-value]  # None only when interrupted


__all__ = ["run_interruptible"]
