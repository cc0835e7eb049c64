"""Shared by the whole suite: the real-service fixtures (sshd, slurm, s3)."""

import os
import signal
import stat
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings

pytest_plugins = ["xfer_core.testing.fixtures"]


def _share_bytecode() -> None:
    """Let the suite's Python subprocesses cache bytecode in one private directory.

    The tests start xfer (and other Python tools) as subprocesses a few thousand times. With
    PYTHONDONTWRITEBYTECODE=1 in the environment (as on the CI machines) each of them compiled
    every module it imports (asyncssh alone ~0.5 s). The cache lives outside the checkout
    (PYTHONPYCACHEPREFIX) and is checked against each source's mtime by Python as usual, so
    what runs is the same code; only the compile step is shared.
    """
    if os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = Path(tempfile.gettempdir()) / f"xfer-tests-pycache-{os.getuid()}"
    try:
        prefix.mkdir(mode=0o700, exist_ok=True)
        st = prefix.lstat()
    except OSError:
        return
    private = stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
    if not private:  # someone else's directory: never load bytecode from it
        return
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.pycache_prefix = str(prefix)
    sys.dont_write_bytecode = False


_share_bytecode()


# Property tests draw the same examples on every run (derandomize: the examples come from a
# hash of the test, never from chance or from an example database left by an earlier run),
# and nothing is timed: no per-example deadline and no "too slow" health check, which a loaded
# 2-CPU CI machine can trip. A test's own @settings overrides only what it names. Explore
# with random examples by hand: `pytest --hypothesis-profile=random`.
settings.register_profile(
    "xfer",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("random", settings.get_profile("xfer"), derandomize=False)
settings.load_profile("xfer")


def pytest_configure() -> None:
    # A shell without job control starts background commands (`cmd &` in a script, as a CI
    # runner may) with SIGINT ignored, and an ignored signal is inherited across exec: every
    # xfer the tests start would then ignore the Ctrl-C the interrupt tests send. A handler
    # here is reset to the default in each child, as for a command typed at a terminal.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
