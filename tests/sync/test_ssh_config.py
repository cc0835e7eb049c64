"""Host, port, user, key and known_hosts left out of the config come from the ssh config."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from xfer_backends.rsync import RsyncBackend
from xfer_backends.sftp import SftpBackend
from xfer_core.sync.backend import Remote, TransferBackend
from xfer_core.sync.ssh_login import known_hosts_path
from xfer_core.testing.conformance import connection_failure, job_for, run_pair
from xfer_core.testing.services import SshServer


@pytest.fixture
def ssh_config(sshd: SshServer, tmp_path: Path) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(
        "Host cluster-alias\n"
        f"  HostName {sshd.host}\n"
        f"  Port {sshd.port}\n"
        f"  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {sshd.known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n"
    )
    return path


@pytest.mark.parametrize("backend", [RsyncBackend(), SftpBackend()], ids=["rsync", "sftp"])
def test_everything_from_ssh_config(
    backend: TransferBackend, sshd: SshServer, ssh_config: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("via ssh config")
    dest = sshd.mkdtemp("sshcfg")
    remote = Remote(name="aliased", host="cluster-alias", ssh_config=str(ssh_config))
    result, _ = run_pair(backend, remote, job_for(src, dest))
    assert result.error == "", result
    assert (dest / "f.txt").read_text() == "via ssh config"


def test_known_hosts_file_from_ssh_config(sshd: SshServer, ssh_config: Path) -> None:
    remote = Remote(name="aliased", host="cluster-alias", ssh_config=str(ssh_config))
    assert known_hosts_path(remote) == sshd.known_hosts
    explicit = Remote(name="x", host="h", known_hosts="/some/file")
    assert known_hosts_path(explicit) == Path("/some/file")


@pytest.mark.parametrize("backend", [RsyncBackend(), SftpBackend()], ids=["rsync", "sftp"])
def test_accept_new_host_key_through_a_host_alias(
    backend: TransferBackend, sshd: SshServer, tmp_path: Path
) -> None:
    """The remembered key is found again by the next strict run (same name, same port)."""
    known = tmp_path / "known"
    config = tmp_path / "ssh_config_alias"
    config.write_text(
        "Host cluster-alias\n"
        f"  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n  UserKnownHostsFile {known}\n"
        "  GlobalKnownHostsFile /dev/null\n"
    )
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    strict = Remote(name="a", host="cluster-alias", ssh_config=str(config))
    accepting = Remote(
        name="a", host="cluster-alias", ssh_config=str(config), accept_new_host_key=True
    )
    assert run_pair(backend, accepting, job_for(src, sshd.mkdtemp("acc")))[0].error == ""
    assert known.read_text().strip()
    assert run_pair(backend, strict, job_for(src, sshd.mkdtemp("acc")))[0].error == ""


@pytest.mark.parametrize("first", ["rsync", "sftp"])
def test_one_known_hosts_file_when_home_is_not_the_accounts_home(
    first: str, sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``~`` in UserKnownHostsFile is the account's home for both backends (as for OpenSSH),
    whatever ``$HOME`` says: a key one backend remembers, the other finds."""
    import pwd
    import shutil
    import uuid

    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    name = f".xfer-test-known-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("HOME", str(tmp_path / "not-home"))
    config = tmp_path / "ssh_config_home"
    config.write_text(
        "Host cluster-alias\n"
        f"  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
        f"  UserKnownHostsFile ~/{name}/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
    )
    backends: dict[str, TransferBackend] = {"rsync": RsyncBackend(), "sftp": SftpBackend()}
    second = "sftp" if first == "rsync" else "rsync"
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    remote = Remote(name="h", host="cluster-alias", ssh_config=str(config))
    try:
        assert known_hosts_path(remote) == home / name / "known_hosts"
        refused = connection_failure(backends[second], remote, job_for(src, sshd.mkdtemp("home")))
        assert "host key is unknown" in refused  # nothing known yet: strict by default
        accepting = msgspec.structs.replace(remote, accept_new_host_key=True)
        dest = sshd.mkdtemp("home")
        assert run_pair(backends[first], accepting, job_for(src, dest))[0].error == ""
        assert (home / name / "known_hosts").read_text().strip()
        assert not (tmp_path / "not-home").exists()
        assert run_pair(backends[second], remote, job_for(src, dest))[0].error == ""
    finally:
        shutil.rmtree(home / name, ignore_errors=True)


def test_host_key_policy_from_the_ssh_config() -> None:
    """accept-new (and no, treated the same) from StrictHostKeyChecking or the flag; else strict."""
    from xfer_core.sync.ssh_login import SshSettings, accept_new_host_key, openssh_argv

    remote = Remote(name="x", host="h")
    for value, accepted in [("ask", False), ("yes", False), ("accept-new", True), ("false", True)]:
        settings = SshSettings(hostname="h", strict_host_key_checking=value)
        assert accept_new_host_key(remote, settings) is accepted
        wanted = "accept-new" if accepted else "yes"
        assert f"StrictHostKeyChecking={wanted}" in openssh_argv(remote, settings)
    flagged = Remote(name="x", host="h", accept_new_host_key=True)
    assert accept_new_host_key(flagged, SshSettings(hostname="h"))


def test_ssh_g_output_parsed_with_the_accounts_home(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from xfer_core.sync.ssh_login import parse_ssh_g

    monkeypatch.setenv("HOME", "/nowhere")
    home = pwd.getpwuid(os.getuid()).pw_dir
    settings = parse_ssh_g(
        "hostname 10.0.0.5\nuser alice\nport 2222\nidentityfile ~/.ssh/id_a\n"
        "identityfile %d/.ssh/id_b\ncertificatefile ~/.ssh/id_a-cert.pub\n"
        "userknownhostsfile ~/.ssh/kh /etc/kh2\nglobalknownhostsfile none\n"
        "stricthostkeychecking accept-new\ncontrolmaster auto\ncontrolpath ~/.ssh/cm-x\n"
        "proxyjump bastion\nidentityagent SSH_AUTH_SOCK\n"
    )
    assert (settings.hostname, settings.user, settings.port) == ("10.0.0.5", "alice", 2222)
    assert settings.identity_files == (f"{home}/.ssh/id_a", f"{home}/.ssh/id_b")
    assert settings.certificate_files == (f"{home}/.ssh/id_a-cert.pub",)
    assert settings.user_known_hosts == (f"{home}/.ssh/kh", "/etc/kh2")
    assert settings.global_known_hosts == ()
    assert settings.control_path == f"{home}/.ssh/cm-x" and settings.proxy_jump == "bastion"
    assert settings.identity_agent is None  # $SSH_AUTH_SOCK
