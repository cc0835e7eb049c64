"""Shared by the whole suite: the real-service fixtures (sshd, slurm, s3)."""

import signal

pytest_plugins = ["xfer_core.testing.fixtures"]


def pytest_configure() -> None:
    # A shell without job control starts background commands (`cmd &` in a script, as a CI
    # runner may) with SIGINT ignored, and an ignored signal is inherited across exec: every
    # xfer the tests start would then ignore the Ctrl-C the interrupt tests send. A handler
    # here is reset to the default in each child, as for a command typed at a terminal.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
