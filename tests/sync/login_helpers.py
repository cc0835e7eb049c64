"""Running ``xfer`` as a user would for the login tests: with or without a terminal (pty)."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

from xfer_core.testing import cli
from xfer_core.testing.services import SshServer


@dataclass
class PtyRun:
    """What an ``xfer`` run on a terminal showed and which prompts it answered."""

    returncode: int
    output: str
    prompts: list[str] = field(default_factory=list)
    #: Times two different prompts were on screen at once, unanswered.
    overlaps: int = 0
    #: The terminal echoes typed characters again after the program exited.
    echo_at_exit: bool = True


def xfer_in_pty(
    args: list[str],
    env: dict[str, str],
    answers: list[tuple[str, str]],
    timeout: float = 120,
    hold: float = 0.0,
) -> PtyRun:
    """Run ``xfer ARGS`` on a new pseudo-terminal; see :func:`run_in_pty`."""
    full_env = {**os.environ, **env}
    full_env.pop("XFER_PLAIN", None)  # a terminal: the live display, paused for prompts
    argv = [*cli.xfer_argv(), *args]
    return run_in_pty(argv, full_env, answers, timeout, hold)


def _read_for(fd: int, seconds: float) -> bytes:
    got = b""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    return got


def run_in_pty(
    argv: list[str],
    env: dict[str, str],
    answers: list[tuple[str, str]],
    timeout: float = 120,
    hold: float = 0.0,
) -> PtyRun:
    """Run ``argv`` on a new pseudo-terminal (its controlling terminal), typing each answer
    when the output shows its prompt regex (any pending one; each used once), ``hold``
    seconds after it appeared; returns when the program exits."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.execve(argv[0] if "/" in argv[0] else shutil.which(argv[0]) or argv[0], argv, env)
        finally:
            os._exit(127)
    out = b""
    seen = 0
    pending = list(answers)
    prompts: list[str] = []
    status: int | None = None
    overlaps = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                done, code = os.waitpid(pid, os.WNOHANG)
                if done:  # exited (a daemon it left, e.g. ``ssh -f``, may hold the tty)
                    status = code
                    break
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            text = out[seen:].decode(errors="replace")
            found = [(i, m) for i, (rx, _) in enumerate(pending) if (m := re.search(rx, text))]
            if found and hold:
                # a prompt is on screen: wait before answering, so that a second prompt
                # shown at the same time (two logins asking at once) would appear too
                out += _read_for(fd, hold)
                text = out[seen:].decode(errors="replace")
                found = [(i, m) for i, (rx, _) in enumerate(pending) if (m := re.search(rx, text))]
            if found:
                overlaps += len({m.group(0) for _, m in found}) > 1
                i, m = found[0]
                prompts.append(m.group(0))
                os.write(fd, pending[i][1].encode() + b"\n")
                seen += len(text[: m.end()].encode())
                pending.pop(i)
        else:
            os.kill(pid, 9)
    finally:
        if status is None:
            _, status = os.waitpid(pid, 0)
        echo = bool(termios.tcgetattr(fd)[3] & termios.ECHO)  # the terminal's own settings
        os.close(fd)
    text = out.decode(errors="replace")
    return PtyRun(os.waitstatus_to_exitcode(status), text, prompts, overlaps, echo)


def xfer(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``xfer ARGS`` without a terminal (no controlling tty, stdin closed)."""
    return cli.xfer(
        *args,
        env={"XFER_PLAIN": "1", **env},
        timeout=120,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


class LoginSetup:
    """A cluster named only by its ssh-config alias, with one sync pair and one fetch pair."""

    def __init__(self, sshd: SshServer, tmp: Path, name: str, *, key_path: str | None = None):
        self.sshd = sshd
        self.tmp = tmp
        self.name = name
        self.local = tmp / "src"
        self.local.mkdir()
        (self.local / "a.txt").write_text("pushed")
        (self.local / "sub").mkdir()
        (self.local / "sub" / "b.txt").write_text("pushed too")
        self.remote = sshd.mkdtemp("login")
        self.remote_src = sshd.mkdtemp("login-src")
        (self.remote_src / "r.txt").write_text("fetched")
        sshd.chown(self.remote_src)
        self.fetched = tmp / "fetched"
        self.config = tmp / "remotes.toml"
        key = f'key_path = "{key_path}"\n' if key_path else ""
        self.config.write_text(
            f'[[clusters]]\nname = "{name}"\nhost = "{name}-alias"\n{key}'
            f'[[clusters.sync_dirs]]\nalias = "up"\nlocal = "{self.local}"\n'
            f'remote = "{self.remote}"\n'
            f'[[clusters.fetch_dirs]]\nalias = "down"\nlocal = "{self.fetched}"\n'
            f'remote = "{self.remote_src}"\n'
        )
        self.ssh_config = tmp / "ssh_config"

    def write_ssh_config(self, *lines: str) -> None:
        """``Host NAME-alias`` with ``lines``, then this server's known_hosts."""
        body = "".join(f"  {ln}\n" for ln in lines)
        self.ssh_config.write_text(
            f"Host {self.name}-alias\n{body}"
            f"Host *\n  UserKnownHostsFile {self.sshd.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
        )

    def alias_lines(self, *, identity: str | None = None) -> list[str]:
        sshd = self.sshd
        lines = [f"HostName {sshd.host}", f"Port {sshd.port}", f"User {sshd.user}"]
        if identity:
            lines += [f"IdentityFile {identity}", "IdentitiesOnly yes"]
        return lines

    @property
    def env(self) -> dict[str, str]:
        return {"XFER_SSH_CONFIG": str(self.ssh_config), "XFER_CONFIG": str(self.config)}

    def args(self, command: str, backend: str, *extra: str) -> list[str]:
        return [command, "-b", backend, "--config", str(self.config), *extra]

    def remote_names(self) -> list[str]:
        return sorted(str(p.relative_to(self.remote)) for p in self.remote.rglob("*"))

    def pushed(self) -> bool:
        return (self.remote / "sub" / "b.txt").is_file() and (
            self.remote / "a.txt"
        ).read_text() == "pushed"

    def fetched_ok(self) -> bool:
        path = self.fetched / "r.txt"
        return path.is_file() and path.read_text() == "fetched"
