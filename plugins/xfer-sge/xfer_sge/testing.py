"""A real single-host Grid Engine cell for tests: a private qmaster and execd, as root.

pytest plugin (entry point ``pytest11``): the session fixture ``sge`` yields a
:class:`SgeCell` whose ``env`` (``SGE_ROOT``, ``SGE_CELL``, its own ports) every
Grid Engine command needs. The cell lives in a temp dir: ``SGE_ROOT`` there links
the package's binaries (Debian: ``gridengine-master gridengine-exec
gridengine-client``) and holds its own ``default/common`` (bootstrap, act_qmaster,
host_aliases) and spool, so nothing of a system installation is used or changed.

Host names: Grid Engine refuses clients whose address resolves to another name
than the host's own. ``host_aliases`` maps ``localhost`` (what 127.0.0.1 resolves
to) onto the host name, so /etc/hosts stays as it is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Where Debian's packages put Grid Engine (``SGE_ROOT`` of the system cell).
SYSTEM_ROOT = Path("/var/lib/gridengine")
PROGRAMS = ("sge_qmaster", "sge_execd", "qsub", "qstat", "qconf", "qdel")
LIBEXEC = Path("/usr/lib/gridengine")


def _set_keys(conf: str, values: dict[str, str]) -> str:
    """``conf`` (qconf's "KEY VALUE" lines) with the keys of ``values`` set to them."""
    return (
        "\n".join(
            f"{line.split()[0]} {values[line.split()[0]]}"
            if line.split() and line.split()[0] in values
            else line
            for line in conf.splitlines()
        )
        + "\n"
    )


class SgeError(RuntimeError):
    """The cell did not start."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SgeCell:
    """A private Grid Engine cell with one exec host and queue ``all.q`` (4 slots)."""

    def __init__(self, slots: int = 4) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="xfer-sge-"))
        self.dir.chmod(0o755)
        self.root = self.dir / "root"
        self.spool = self.dir / "spool"
        self.host = socket.gethostname().split(".")[0]
        self.queue = "all.q"
        self.env = {
            "SGE_ROOT": str(self.root),
            "SGE_CELL": "default",
            "SGE_QMASTER_PORT": str(_free_port()),
            "SGE_EXECD_PORT": str(_free_port()),
        }
        try:
            self._init_cell()
            self._start(slots)
        except BaseException:
            self.close()
            raise

    # -- commands ------------------------------------------------------------------
    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=timeout,
            check=False,
            cwd=self.dir,
        )
        if check and proc.returncode != 0:
            raise SgeError(
                f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr or proc.stdout}"
            )
        return proc

    def _init_cell(self) -> None:
        common = self.root / "default" / "common"
        common.mkdir(parents=True)
        for name in ("bin", "lib", "util", "utilbin"):
            (self.root / name).symlink_to(SYSTEM_ROOT / name)
        (self.spool / "qmaster" / "job_scripts").mkdir(parents=True)
        (self.spool / "execd").mkdir()
        spooldb = self.dir / "spooldb"
        spooldb.mkdir()
        (common / "bootstrap").write_text(
            "\n".join(
                [
                    "admin_user none",
                    "default_domain none",
                    "ignore_fqdn true",
                    "spooling_method berkeleydb",
                    "spooling_lib libspoolb",
                    f"spooling_params {spooldb}",
                    "binary_path /usr/sbin",
                    f"qmaster_spool_dir {self.spool / 'qmaster'}",
                    "security_mode none",
                    "listener_threads 2",
                    "worker_threads 2",
                    "scheduler_threads 1",
                    "",
                ]
            )
        )
        (common / "act_qmaster").write_text(self.host + "\n")
        (common / "host_aliases").write_text(f"{self.host} localhost\n")
        conf = self.dir / "global.conf"
        lines = []
        for line in Path("/usr/share/gridengine/default-configuration").read_text().splitlines():
            key = line.split()[0] if line.split() else ""
            values = {
                "execd_spool_dir": str(self.spool / "execd"),
                "min_uid": "0",  # the tests submit as root
                "min_gid": "0",
                "load_report_time": "00:00:02",
                "max_unheard": "00:00:30",
            }
            lines.append(f"{key} {values[key]}" if key in values else line)
        conf.write_text("\n".join(lines) + "\n")
        self.run(str(LIBEXEC / "spoolinit"), "berkeleydb", "libspoolb", str(spooldb), "init")
        self.run(str(LIBEXEC / "spooldefaults"), "configuration", str(conf))
        resources = SYSTEM_ROOT / "util" / "resources"
        self.run(str(LIBEXEC / "spooldefaults"), "complexes", str(resources / "centry"))
        self.run(str(LIBEXEC / "spooldefaults"), "usersets", str(resources / "usersets"))
        self.run(str(LIBEXEC / "spooldefaults"), "managers", "root")

    def _wait(self, cond: object, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if cond():  # type: ignore[operator]
                    return
            except (SgeError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise SgeError(f"{what}: not ready after {timeout:.0f} s (logs in {self.spool})")
            time.sleep(0.5)

    def _start(self, slots: int) -> None:
        self.run("/usr/sbin/sge_qmaster")
        self._wait(lambda: self.run("qconf", "-sh").returncode == 0, "sge_qmaster")
        self.run("qconf", "-as", self.host)
        host = self.dir / "host.conf"
        host.write_text(
            f"hostname {self.host}\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\n"
            "xuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\n"
            "report_variables NONE\n"
        )
        self.run("qconf", "-Ae", str(host))
        self.run("/usr/sbin/sge_execd")
        template = self.run("qconf", "-sq").stdout  # the queue template
        values = {
            "qname": self.queue,
            "hostlist": self.host,
            "slots": str(slots),
            "load_thresholds": "NONE",  # a busy test machine must not stop the queue
            "pe_list": "NONE",
            "ckpt_list": "NONE",
            "shell": "/bin/bash",
        }
        queue = self.dir / "queue.conf"
        queue.write_text(_set_keys(template, values))
        self.run("qconf", "-Aq", str(queue))
        sched = self.run("qconf", "-ssconf").stdout
        fast = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"}
        sconf = self.dir / "sched.conf"
        sconf.write_text(_set_keys(sched, fast))
        self.run("qconf", "-Msconf", str(sconf))

        def queue_ready() -> bool:
            out = self.run("qstat", "-f", "-q", self.queue).stdout
            rows = [line for line in out.splitlines() if line.startswith(f"{self.queue}@")]
            # the queue instance is there and not (a)larm / (u)nknown: execd reports
            return bool(rows) and len(rows[0].split()) == 5

        self._wait(queue_ready, "the exec host")

    # -- teardown --------------------------------------------------------------------
    def _pids(self) -> list[int]:
        pids = []
        for path in (
            self.spool / "qmaster" / "qmaster.pid",
            self.spool / "execd" / self.host / "execd.pid",
        ):
            try:
                pids.append(int(path.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def close(self) -> None:
        pids = self._pids()
        if self.root.exists():
            for argv in (("qdel", "-u", "*"), ("qconf", "-ke", self.host), ("qconf", "-km")):
                with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                    self.run(*argv, check=False, timeout=10)
        deadline = time.monotonic() + 10
        for pid in pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SgeCell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def missing() -> list[str]:
    """What a cell needs that is not installed here."""
    found = [p for p in PROGRAMS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if not (SYSTEM_ROOT / "util" / "arch").exists():
        found.append(str(SYSTEM_ROOT / "util"))
    return found


@pytest.fixture(scope="session")
def sge() -> Iterator[SgeCell]:
    """A real Grid Engine cell (qmaster + execd, queue ``all.q``); needs root and the
    Debian packages ``gridengine-master gridengine-exec gridengine-client``."""
    from xfer_core.testing.fixtures import unavailable

    absent = missing()
    if absent:
        unavailable(f"sge: not installed ({', '.join(absent)} not found)")
    if os.geteuid() != 0:
        unavailable("sge: the test cell needs root")
    with SgeCell() as cell:
        yield cell
