"""Security regressions of ``xfer sync`` / ``xfer fetch`` (issue 19, items 3, 5, 7, 8).

- Names sent by a hostile SFTP server (an asyncssh server on loopback whose listings
  add ``../escape``, ``a/b``, absolute names, NUL, duplicates) are refused: nothing
  is written or deleted outside the pair, the pair fails with a one-line reason.
- Terminal escapes in remote names never reach the terminal raw (both backends).
- SFTP temp-file cleanup removes only xfer's own left-overs, never a user's file
  that looks like one, excluded or not.
- A ``host`` (or ``user``) that ssh would read as an option, or that turns rsync's
  ``HOST:PATH`` into a local path, is refused at config load: exit 2, one line,
  nothing run, nothing created locally or remotely.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import unicodedata
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer_backends.rsync import RsyncBackend, RsyncSession, parse_version
from xfer_backends.sftp import SftpBackend, is_own_temp, temp_name
from xfer_core.errors import TransferError
from xfer_core.output import display_name, parse_display_name, terminal_text
from xfer_core.sync.backend import Remote
from xfer_core.testing import cli
from xfer_core.testing.conformance import job_for, remote_for_server, run_pair, snapshot
from xfer_core.testing.services import SshServer

CLASS = "security: hostile sync servers, names, hosts and temp files"

MTIME = 1_600_000_000


def xfer(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    """The CLI in a subprocess (``subprocess.CompletedProcess[str]``)."""
    return cli.xfer(*args, env=env, cwd=cwd, timeout=120)


def _tree(root: Path) -> set[str]:
    """Every path below ``root`` (relative), symlinks not followed."""
    return {
        os.path.relpath(os.path.join(d, n), root)
        for d, dirs, files in os.walk(root)
        for n in dirs + files
    }


# -- a hostile SFTP server -----------------------------------------------------------
class HostileSftpServer:
    """asyncssh's SFTP server on 127.0.0.1, serving the real files below ``base``, whose
    listing of ``root`` also holds the ``extra`` names (``(name, mode, size)``)."""

    def __init__(self, tmp: Path, root: Path, extra: list[tuple[bytes, int, int]]):
        import asyncssh

        self.root = root
        self.extra = extra
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        client = asyncssh.generate_private_key("ssh-ed25519")
        self.key_path = tmp / "client_key"
        client.write_private_key(str(self.key_path))
        self.key_path.chmod(0o600)
        self.authorized = asyncssh.import_authorized_keys(client.export_public_key().decode())
        self.known_hosts = tmp / "known_hosts"
        self.port = 0
        self.listed = 0  # how many listings of the root carried the hostile names
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _sftp_class(self) -> Any:
        import asyncssh

        server = self

        class Sftp(asyncssh.SFTPServer):
            async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:  # type: ignore[override]
                async for name in super().scandir(path):
                    yield name
                if os.path.realpath(os.fsdecode(path)) == os.path.realpath(server.root):
                    server.listed += 1
                    for name, mode, size in server.extra:
                        attrs = asyncssh.SFTPAttrs(
                            permissions=mode, size=size, atime=MTIME, mtime=MTIME
                        )
                        yield asyncssh.SFTPName(name, attrs=attrs)

        return Sftp

    def _serve(self) -> None:
        import asyncssh

        asyncio.set_event_loop(self._loop)

        async def start() -> Any:
            return await asyncssh.create_server(
                asyncssh.SSHServer,
                "127.0.0.1",
                0,
                server_host_keys=[self.host_key],
                authorized_client_keys=self.authorized,
                sftp_factory=self._sftp_class(),
            )

        self._server = self._loop.run_until_complete(start())
        self.port = self._server.sockets[0].getsockname()[1]
        key = self.host_key.export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key}\n")
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> HostileSftpServer:
        self._thread.start()
        assert self._ready.wait(30), "the test SFTP server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        def stop() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)

    def config(self, tmp: Path, local: Path, *, fetch: bool) -> tuple[Path, dict[str, str]]:
        kind = "fetch_dirs" if fetch else "sync_dirs"
        config = tmp / "remotes.toml"
        config.write_text(
            f'[[clusters]]\nname = "evil"\nhost = "127.0.0.1"\nport = {self.port}\n'
            f'user = "me"\nkey_path = "{self.key_path}"\n'
            f'[[clusters.{kind}]]\nalias = "p"\nlocal = "{local}"\nremote = "{self.root}"\n'
        )
        ssh_config = tmp / "ssh_config"
        ssh_config.write_text(f"Host *\n  UserKnownHostsFile {self.known_hosts}\n")
        return config, {"XFER_SSH_CONFIG": str(ssh_config), "XFER_PLAIN": "1"}


FILE = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755

#: name sent by the server → the file below the server's base it would make xfer read.
HOSTILE_NAMES: dict[str, tuple[bytes, int]] = {
    "dotdot": (b"../escape.txt", FILE),
    "dotdot below a directory": (b"sub/../../escape.txt", FILE),
    "slash": (b"sub/inner.txt", FILE),
    "absolute": (b"/escape.txt", FILE),
    "nul": (b"nul\x00name.txt", FILE),
    "dotdot directory, ignored like every listing's '..'": (b"..", DIR),
    "empty": (b"", FILE),
    "listed twice": (b"ok.txt", FILE),
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(server base, server root): the root holds ok.txt and sub/inner.txt; next to it,
    outside the root, sits escape.txt, which a traversal would fetch."""
    base = tmp_path / "server"
    root = base / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "ok.txt").write_bytes(b"ok\n")
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    (base / "escape.txt").write_bytes(b"escaped\n")
    yield base, root


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_fetch_refuses_names_that_leave_the_destination(
    tmp_path: Path, served: tuple[Path, Path], case: str
) -> None:
    base, root = served
    name, mode = HOSTILE_NAMES[case]
    client = tmp_path / "client"
    dest = client / "deep" / "dest"
    client.mkdir()
    before_server = snapshot(base)
    with HostileSftpServer(tmp_path, root, [(name, mode, 8)]) as server:
        config, env = server.config(tmp_path, dest, fetch=True)
        res = xfer("fetch", "-b", "sftp", "--config", str(config), env=env)
        assert server.listed >= 1  # the hostile listing was really sent
    lines = [ln for ln in res.stderr.splitlines() if "refused a name sent by the server" in ln]
    if name == b"..":
        assert res.returncode == 0 and lines == [], res.stderr
    else:
        assert res.returncode == 1, res.stderr
        assert len(lines) == 1, res.stderr
    assert "\x00" not in res.stderr and "\x1b" not in res.stderr
    # nothing outside the destination, the good files inside it, the server unchanged
    assert _tree(client) == {
        "deep",
        "deep/dest",
        "deep/dest/ok.txt",
        "deep/dest/sub",
        "deep/dest/sub/inner.txt",
    }
    assert (dest / "ok.txt").read_bytes() == b"ok\n"
    assert snapshot(base) == before_server


def test_push_delete_never_deletes_a_name_outside_the_remote_root(
    tmp_path: Path, served: tuple[Path, Path]
) -> None:
    """On push with --delete, a listing holding ``../escape.txt`` must not make xfer
    delete the server's file outside the pair's directory."""
    base, root = served
    local = tmp_path / "local"
    local.mkdir()
    (local / "ok.txt").write_bytes(b"ok\n")
    with HostileSftpServer(tmp_path, root, [(b"../escape.txt", FILE, 8)]) as server:
        config, env = server.config(tmp_path, local, fetch=False)
        res = xfer("sync", "-b", "sftp", "--delete", "--config", str(config), env=env)
        assert server.listed >= 1
    assert res.returncode == 1, res.stderr
    assert "refused a name sent by the server" in res.stderr
    assert (base / "escape.txt").read_bytes() == b"escaped\n"


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_never_writes_through_a_symlinked_directory(
    sshd: SshServer, tmp_path: Path, direction: str, backend: str
) -> None:
    """A symlink in the destination (local or remote), where the source has a directory,
    is replaced by the directory: the files go inside the pair, not where the link pointed."""
    base = sshd.mkdtemp("symdir")
    local = tmp_path / "local"
    remote = base / "tree"
    src, dst = (local, remote) if direction == "push" else (remote, local)
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_bytes(b"data\n")
    outside = base / "outside"
    outside.mkdir()
    dst.mkdir()
    os.symlink(outside, dst / "d")
    sshd.chown(base)
    job = job_for(local, remote, direction)  # type: ignore[arg-type]
    result, _ = run_pair(BACKEND_CLASSES[backend](), remote_for_server(sshd), job)
    assert result.error == "", result
    assert os.listdir(outside) == []
    assert not (dst / "d").is_symlink() and (dst / "d" / "f.txt").read_bytes() == b"data\n"


BACKEND_CLASSES = {"rsync": RsyncBackend, "sftp": SftpBackend}


# -- terminal output -----------------------------------------------------------------
ESCAPE_NAME = "clear\x1b[2J\x1b[Hscreen\x07\x9b31m\u202eevil\x7f.txt"


@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_remote_names_with_terminal_escapes_are_printed_escaped(
    sshd: SshServer, tmp_path: Path, backend: str
) -> None:
    rdir = sshd.mkdtemp("esc")
    (rdir / ESCAPE_NAME).write_bytes(b"x\n")
    sshd.chown(rdir)
    local = tmp_path / "dest"
    config = tmp_path / "remotes.toml"
    config.write_text(
        f'[[clusters]]\nname = "c"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
        f'user = "{sshd.user}"\nkey_path = "{sshd.key_path}"\n'
        f'[[clusters.fetch_dirs]]\nalias = "p"\nlocal = "{local}"\nremote = "{rdir}"\n'
    )
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host *\n  UserKnownHostsFile {sshd.known_hosts}\n")
    env = {"XFER_SSH_CONFIG": str(ssh_config), "XFER_PLAIN": "1"}
    res = xfer("fetch", "--dry-run", "-b", backend, "--config", str(config), env=env)
    assert res.returncode == 0, res.stderr
    shown = display_name(ESCAPE_NAME)
    assert f"c/p: would fetch {shown}" in res.stderr.splitlines()
    assert parse_display_name(shown) == ESCAPE_NAME
    assert not any(_unsafe(ch) for ch in res.stderr if ch != "\n")


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")


NAMES = st.one_of(st.text(), st.binary().map(os.fsdecode))


@given(NAMES)
def test_display_name_has_no_control_characters_and_is_reversible(name: str) -> None:
    shown = display_name(name)
    assert not any(_unsafe(ch) for ch in shown)
    assert parse_display_name(shown) == name  # two names never print alike


@given(NAMES)
def test_terminal_text_has_no_control_characters_and_is_stable(text: str) -> None:
    safe = terminal_text(text)
    assert not any(_unsafe(ch) for ch in safe)
    assert terminal_text(safe) == safe
    if not any(_unsafe(ch) for ch in text):
        assert safe == text  # ordinary text is printed as it is


def test_errors_are_printed_escaped(tmp_path: Path) -> None:
    """An error naming a hostile path (here: a missing --config) is one escaped line."""
    res = xfer("sync", "--config", str(tmp_path / "no\x1b[2Jsuch\nfile.toml"))
    assert res.returncode == 2
    assert "\x1b" not in res.stderr
    assert res.stderr.count("\n") <= 2 and "no\\x1b[2Jsuch\\nfile.toml" in res.stderr


# -- SFTP temporary files ------------------------------------------------------------
USER_LOOKALIKE = ".data.1234abcd.xfertmp"  # what xfer's temp names looked like
#: one of xfer's own temporary names, but excluded by the pair: never touched
USER_EXCLUDED = temp_name("notes.txt")


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("delete", [False, True])
def test_temp_cleanup_removes_only_xfers_own_leftovers(
    sshd: SshServer, tmp_path: Path, direction: str, delete: bool
) -> None:
    src_local = tmp_path / "src"
    rdir = sshd.mkdtemp("tmpclean")
    src, dst = (src_local, rdir) if direction == "push" else (rdir, tmp_path / "dst")
    src.mkdir(exist_ok=True)
    dst.mkdir(exist_ok=True)
    (src / "plain.txt").write_bytes(b"plain\n")
    (src / ".mine.0123abcd.xfertmp").write_bytes(b"a user's file at the source\n")
    for name in (USER_LOOKALIKE, USER_EXCLUDED):
        (dst / name).write_bytes(b"user data\n")
    leftover = temp_name("plain.txt")  # what an interrupted xfer leaves behind
    (dst / leftover).write_bytes(b"half")
    assert is_own_temp(leftover) and is_own_temp(USER_EXCLUDED)
    assert not is_own_temp(USER_LOOKALIKE)
    sshd.chown(rdir)
    local, remote = (src, dst) if direction == "push" else (dst, src)
    job = job_for(local, remote, direction, excludes=[".notes.*"], delete=delete)  # type: ignore[arg-type]
    result, _ = run_pair(SftpBackend(), remote_for_server(sshd), job)
    assert result.error == "", result
    names = set(os.listdir(dst))
    assert leftover not in names  # xfer's own left-over is cleaned up
    assert USER_EXCLUDED in names  # excluded: never touched
    # a look-alike is an ordinary file: kept, unless --delete removes it as extraneous
    assert (USER_LOOKALIKE in names) is not delete
    assert (dst / ".mine.0123abcd.xfertmp").read_bytes() == b"a user's file at the source\n"


# -- host names ----------------------------------------------------------------------
BAD_HOSTS = {
    "option": "-oProxyCommand=touch {marker}",
    "slash before colon": "-oProxyCommand=touch /x",
    "local path": "evil/host",
    "space": "a host",
    "user inside": "me@host",
    "port inside": "host:22",
    "nul": "host\\u0000x",
}


@pytest.mark.parametrize("case", list(BAD_HOSTS))
@pytest.mark.parametrize("command", ["sync", "fetch", "sync -b sftp"])
def test_hostile_host_is_refused_at_config_load(
    sshd: SshServer, tmp_path: Path, case: str, command: str
) -> None:
    marker = tmp_path / "marker"
    host = BAD_HOSTS[case].format(marker=marker)
    rdir = sshd.mkdtemp("host")
    work = tmp_path / "cwd"
    work.mkdir()
    local = tmp_path / "local"
    local.mkdir()
    (local / "f.txt").write_text("f\n")
    config = tmp_path / "remotes.toml"
    config.write_text(
        f'[[clusters]]\nname = "c"\nhost = "{host}"\nport = {sshd.port}\n'
        f'user = "{sshd.user}"\nkey_path = "{sshd.key_path}"\n'
        f'[[clusters.sync_dirs]]\nalias = "p"\nlocal = "{local}"\nremote = "{rdir}/p"\n'
        f'[[clusters.fetch_dirs]]\nalias = "q"\nlocal = "{tmp_path}/fetched"\nremote = "{rdir}"\n'
    )
    res = xfer(*command.split(), "--config", str(config), cwd=work)
    assert res.returncode == 2, res.stderr
    first = res.stderr.splitlines()[0]
    # a NUL is refused for every config string, before the host rules
    why = "must not contain a NUL byte" if case == "nul" else "host "
    assert first.startswith(f"xfer: error: {config}:3: clusters[0].host: {why}"), res.stderr
    assert "\x00" not in res.stderr
    assert not marker.exists() and not Path("/x").exists()
    assert os.listdir(work) == [] and os.listdir(rdir) == []
    assert not (tmp_path / "fetched").exists()
    check = xfer("config", "validate", "--config", str(config))
    assert check.returncode == 2 and "clusters[0].host" in check.stderr


def test_hostile_user_is_refused_at_config_load(tmp_path: Path) -> None:
    config = tmp_path / "remotes.toml"
    config.write_text('[[clusters]]\nname = "c"\nhost = "h"\nuser = "-oProxyCommand=x"\n')
    res = xfer("config", "validate", "--config", str(config))
    assert res.returncode == 2
    assert f"{config}:4: clusters[0].user: user '-oProxyCommand=x' must not start with '-'" in (
        res.stderr
    )


def test_good_hosts_are_accepted(tmp_path: Path) -> None:
    config = tmp_path / "remotes.toml"
    hosts = ["login.cluster-a.example.org", "c_1", "10.0.0.1", "::1", "[fe80::1]", "LOGIN01"]
    config.write_text(
        "".join(f'[[clusters]]\nname = "c{i}"\nhost = "{h}"\n' for i, h in enumerate(hosts))
    )
    res = xfer("config", "validate", "--config", str(config))
    assert res.returncode == 0, res.stderr


def test_rsync_never_takes_a_hostile_host_as_local_path_or_option(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Library callers bypass the config: the rsync backend itself refuses such a host
    (rsync would write to ./HOST:PATH/ and report success), and ``--`` ends ssh's options."""
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "local"
    local.mkdir()
    (local / "f.txt").write_text("f\n")
    for host in ("-oProxyCommand=touch /x", "evil/host"):
        remote = Remote(**{**_fields(sshd), "host": host})
        # refused when the session opens, before ssh or rsync see the host
        with pytest.raises(TransferError, match="cannot be used in rsync's HOST:PATH"):
            run_pair(RsyncBackend(), remote, job_for(local, "/tmp/r"))
    assert sorted(os.listdir(tmp_path)) == ["local"]
    session = RsyncSession(
        "rsync", parse_version("rsync  version 3.5.0  protocol version 32"), remote_for_server(sshd)
    )
    argv = session.argv(job_for(local, "/r"), "/r")
    e = argv[argv.index("-e") + 1]
    assert e.endswith(" --") and argv[-1].startswith(f"{sshd.host}:")
    assert session.argv(job_for(local, "-odd"), "-odd")[-1] == f"{sshd.host}:./-odd/"


def _fields(sshd: SshServer) -> dict[str, Any]:
    remote = remote_for_server(sshd)
    return {f: getattr(remote, f) for f in remote.__struct_fields__}


def test_local_tree_refuses_a_path_whose_directory_leads_outside(tmp_path: Path) -> None:
    """Defence in depth below the planner: every local path the sftp backend writes,
    renames or deletes is checked; a symlinked parent pointing out is refused."""
    from xfer_backends.sftp import LocalTree

    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "out")
    os.symlink("real", root / "in")
    tree = LocalTree(str(root))
    assert tree.path("real/f") == f"{root}/real/f"
    assert tree.path("in/f") == f"{root}/in/f"  # a link that stays inside is fine
    with pytest.raises(OSError, match="leads outside the destination"):
        tree.path("out/f")


@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_relative_remote_path_starting_with_dash(
    sshd: SshServer, tmp_path: Path, backend: str
) -> None:
    """``remote = "-name"`` (relative to the home directory) is a path, not an option."""
    import shutil
    import uuid

    local = tmp_path / "local"
    local.mkdir()
    (local / "f.txt").write_bytes(b"f\n")
    name = f"-xfer-sec-{uuid.uuid4().hex[:8]}"
    try:
        job = job_for(local, name)
        result, _ = run_pair(BACKEND_CLASSES[backend](), remote_for_server(sshd), job)
        assert result.error == "", result
        assert (sshd.home / name / "f.txt").read_bytes() == b"f\n"
    finally:
        shutil.rmtree(sshd.home / name, ignore_errors=True)


def test_config_add_cluster_refuses_a_hostile_host(tmp_path: Path) -> None:
    config = tmp_path / "remotes.toml"
    assert xfer("config", "init", "--config", str(config)).returncode == 0
    before = config.read_bytes()
    res = xfer("config", "add-cluster", "evil", "--host=-oProxyCommand=id", "--config", str(config))
    assert res.returncode == 2
    assert "clusters[0].host: host '-oProxyCommand=id' must not start with '-'" in res.stderr
    assert config.read_bytes() == before
