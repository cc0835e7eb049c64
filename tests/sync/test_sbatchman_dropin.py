"""A sbatchman user switching to ``xfer sync``/``fetch``: its behaviours, against the real sshd."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from xfer_backends.rsync import RsyncBackend
from xfer_backends.sftp import SftpBackend
from xfer_core.sync.backend import Remote, TransferOptions
from xfer_core.testing.services import SshServer

from .test_cli_sync import Setup, events, xfer


@pytest.fixture
def setup(sshd: SshServer, tmp_path: Path) -> Setup:
    return Setup(sshd, tmp_path)


def test_unknown_cluster_runs_the_others_names_it_and_exits_1(setup: Setup) -> None:
    res = setup.run("sync", "-c", "alpha", "-c", "gamma")
    assert res.returncode == 1, res.stderr
    assert (setup.rdir / "alpha" / "proj").is_dir()  # alpha ran
    assert not (setup.rdir / "beta").exists()
    assert "unknown cluster 'gamma'" in res.stderr  # said up front
    assert "not run: unknown cluster 'gamma'" in res.stderr  # and in the summary line


def test_unknown_alias_runs_the_others_and_exits_1(setup: Setup) -> None:
    res = setup.run("sync", "-a", "other", "-a", "nope", "--json")
    assert res.returncode == 1, res.stderr
    assert (setup.rdir / "alpha" / "other" / "o.txt").read_text() == "other"
    assert not (setup.rdir / "alpha" / "proj").exists()
    summary = next(e for e in events(res.stdout) if e["event"] == "summary")
    assert summary["ok"] is False and summary["unknown"][0].startswith(
        "unknown sync dir alias 'nope'"
    )


def test_all_names_unknown_is_still_a_usage_error_and_nothing_runs(setup: Setup) -> None:
    res = setup.run("sync", "-c", "gamma")
    assert res.returncode == 2 and "unknown cluster 'gamma'" in res.stderr
    assert not (setup.rdir / "alpha").exists()


def test_relative_local_in_sbatchmans_file_is_the_current_directory(
    setup: Setup, tmp_path: Path
) -> None:
    sshd = setup.sshd
    (setup.rdir / "res").mkdir()
    (setup.rdir / "res" / "out.txt").write_text("result")
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    config = conf_dir / "remotes-config.toml"
    config.write_text(
        f'[[clusters]]\nname = "c"\nhost = "{sshd.host}"\nport = "{sshd.port}"\n'
        f'user = "{sshd.user}"\nkey_path = "{sshd.key_path}"\ntransfer_backend = "SFTP"\n'
        f'[[clusters.fetch_dirs]]\nremote = "~/{setup.rel}/res"\nlocal = "pulled"\n'
    )
    work = tmp_path / "work"
    work.mkdir()
    res = xfer("fetch", "--config", str(config), env=setup.env, cwd=work)
    assert res.returncode == 0, res.stderr
    assert (work / "pulled" / "out.txt").read_text() == "result"
    assert not (conf_dir / "pulled").exists()
    assert "port: a quoted number, read as" in res.stderr  # one warning line, FILE:LINE
    assert f"{config}:4: clusters[0].port" in res.stderr or "remotes-config.toml:4:" in res.stderr


@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_compress_flag_moves_the_data(setup: Setup, backend: str) -> None:
    res = setup.run("sync", "-z", "-c", "alpha", "-a", "other", "-b", backend)
    assert res.returncode == 0, res.stderr
    assert (setup.rdir / "alpha" / "other" / "o.txt").read_text() == "other"


def test_rsync_compress_is_rsyncs_z(sshd: SshServer) -> None:
    from xfer_backends.rsync import RsyncSession, detect_caps
    from xfer_core.sync.backend import PairJob
    from xfer_core.sync.excludes import ExcludeMatcher

    rsync = RsyncBackend()._binary()
    assert rsync is not None
    remote = Remote(name="c", host=sshd.host)
    job = PairJob("c", "a", "push", "/src", "/dst", ExcludeMatcher([]))
    caps = detect_caps(rsync, None)
    assert "-z" in RsyncSession(rsync, caps, remote, compress=True).argv(job, "/dst")
    assert "-z" not in RsyncSession(rsync, caps, remote).argv(job, "/dst")


@pytest.mark.parametrize(("compress", "want"), [(True, "zlib"), (False, "none")])
def test_sftp_compress_negotiates_zlib(
    sshd: SshServer, tmp_path: Path, compress: bool, want: str
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  UserKnownHostsFile {sshd.known_hosts}\n")
    remote = Remote(
        name="c",
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_path=str(sshd.key_path),
        ssh_config=str(config),
    )

    async def negotiated() -> str:
        session = await SftpBackend().open(remote, TransferOptions(compress=compress))
        try:
            return str(session.conn.get_extra_info("send_compression"))  # type: ignore[attr-defined]
        finally:
            await session.close()

    assert asyncio.run(negotiated()).startswith(want)


def _empty_home(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": "",
        "XFER_CONFIG": "",
        "XFER_PLAIN": "1",
    }


def test_first_run_without_a_terminal_never_asks(tmp_path: Path) -> None:
    env = _empty_home(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "xfer_core.cli", "sync"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 2 and "no config file at" in res.stderr
    assert "[Y/n]" not in res.stderr
    assert not (Path(env["HOME"]) / ".config").exists()


def _on_terminal(env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """Run ``xfer sync`` with a pty as stdin/stdout/stderr; answer the first question."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execve(sys.executable, [sys.executable, "-m", "xfer_core.cli", "sync"], env)
    out = b""
    answered = False
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"[Y/n]" in out:
            os.write(fd, answer)
            answered = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_first_run_on_a_terminal_offers_to_create_the_config(tmp_path: Path) -> None:
    env = _empty_home(tmp_path)
    code, text = _on_terminal(env, b"y\n")
    created = Path(env["HOME"]) / ".config" / "xfer" / "remotes.toml"
    assert code == 0, text
    assert "no config yet" in text and created.is_file()
    assert "[[clusters]]" in created.read_text()


def test_first_run_declined_creates_nothing(tmp_path: Path) -> None:
    env = _empty_home(tmp_path)
    code, text = _on_terminal(env, b"n\n")
    assert code == 2 and "no config file at" in text
    assert not (Path(env["HOME"]) / ".config" / "xfer" / "remotes.toml").exists()
