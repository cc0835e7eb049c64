"""The sftp backend's SFTP session run through the user's own OpenSSH.

asyncssh cannot use an OpenSSH master connection (``ControlMaster``/``ControlPath``):
a user who logged in once with a one-time password keeps such a master open, and
a new login would ask again -- or fail without a terminal. When that master is open,
the sftp backend runs ``ssh -s HOST sftp`` over it (no new login) and speaks SFTP to
the subprocess's stdin/stdout with asyncssh's SFTP client; remote ``~``/``$VAR``
expansion runs as ``ssh HOST COMMAND`` over the same master.

asyncssh has no public constructor for an SFTP client over a plain byte stream, so
this drives its ``SFTPClientHandler`` -- the class ``start_sftp_client`` uses over an
SSH channel -- with a reader and writer over the pipes (``readexactly``/``write``/
``write_eof``/``close`` and the channel's ``is_closing``/``wait_closed``, as the
handler uses them). The tests run every sync/fetch pattern over it (asyncssh is pinned
in uv.lock), so an asyncssh change that breaks it fails there, not at a user's.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from typing import TYPE_CHECKING, Any

from xfer_core.errors import TransferError
from xfer_core.sync import ssh_login
from xfer_core.sync.backend import Remote

if TYPE_CHECKING:
    import asyncssh


class _Channel:
    def __init__(self, proc: asyncio.subprocess.Process):
        self._proc = proc

    def is_closing(self) -> bool:
        stdin = self._proc.stdin
        return self._proc.returncode is not None or stdin is None or stdin.is_closing()

    async def wait_closed(self) -> None:
        await self._proc.wait()


class _Reader:
    def __init__(self, stream: asyncio.StreamReader, logger: Any):
        self._stream = stream
        self.logger = logger
        self.handler: Any = None

    async def readexactly(self, n: int) -> bytes:
        # asyncio.IncompleteReadError is an EOFError: the handler's "connection closed"
        return await self._stream.readexactly(n)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The handler asks for the server's SSH version to know whether SYMLINK takes its
        arguments in OpenSSH's (reversed) order. That order belongs to the SFTP server, not
        the SSH daemon: OpenSSH's sftp-server is known by its ``@openssh.com`` extensions
        (``posix-rename``, ``hardlink``, ``fsync``, ``lsetstat``), parsed just before."""
        if name != "server_version":
            return default
        h = self.handler
        names = ("_supports_posix_rename", "_supports_hardlink", "_supports_fsync")
        if h is not None and any(getattr(h, n, False) for n in names):
            return "SSH-2.0-OpenSSH (sftp-server, from its @openssh.com extensions)"
        return default


class _Writer:
    def __init__(self, proc: asyncio.subprocess.Process):
        assert proc.stdin is not None
        self._stdin = proc.stdin
        self.channel = _Channel(proc)

    def write(self, data: bytes) -> None:
        self._stdin.write(data)

    def write_eof(self) -> None:
        self._stdin.close()

    def close(self) -> None:
        self._stdin.close()


class OpenSsh:
    """Commands and an SFTP session over the user's OpenSSH master connection."""

    def __init__(self, target: Remote, settings: ssh_login.SshSettings):
        self.target = target
        # never prompt: the master is already logged in
        self.argv = [*ssh_login.openssh_argv(target, settings), "-o", "BatchMode=yes"]
        self.proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stderr = b""

    async def run(self, command: str) -> tuple[int, bytes, bytes]:
        """Run ``command`` on the cluster: (exit status, stdout, stderr)."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            "--",
            self.target.host,
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode == 255:
            raise TransferError(
                ssh_login.explain_ssh_failure(err.decode(errors="replace"), self.target)
            )
        return proc.returncode or 0, out, err

    async def start_sftp(self) -> asyncssh.SFTPClient:
        """``ssh -s HOST sftp`` and an asyncssh SFTP client speaking over its pipes."""
        from asyncssh.logging import logger
        from asyncssh.sftp import MIN_SFTP_VERSION, SFTPClient, SFTPClientHandler

        proc = self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            "-s",
            "--",
            self.target.host,
            "sftp",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        self._tasks.append(asyncio.ensure_future(self._drain(proc.stderr)))
        loop = asyncio.get_running_loop()
        reader = _Reader(proc.stdout, logger.get_child("sftp-openssh"))
        handler = SFTPClientHandler(
            loop,
            "strict",
            reader,  # type: ignore[arg-type]
            _Writer(proc),  # type: ignore[arg-type]
            MIN_SFTP_VERSION,
        )
        reader.handler = handler
        try:
            await handler.start()
        except (EOFError, OSError, Exception) as exc:
            await self.close()
            why = ssh_login._last_line(self._stderr.decode(errors="replace")) or str(exc)
            raise TransferError(
                f"{self.target.name} ({self.target.label}): cannot start SFTP through "
                f"the OpenSSH master connection: {why}"
            ) from None
        self._tasks.append(asyncio.ensure_future(handler.recv_packets()))
        await handler.request_limits()
        return SFTPClient(handler, "utf-8", "strict")

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self._stderr = (self._stderr + chunk)[-4096:]

    async def close(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
