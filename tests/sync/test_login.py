"""Logging in to clusters the way their users do, on both backends, against real sshd's.

Each pattern of docs/login.md: user certificates (``TrustedUserCAKeys``), an encrypted key
held by a real ``ssh-agent``, keyboard-interactive 2FA with a real PAM TOTP module answered
at a terminal (pty), ``ProxyJump`` through a second sshd, an OpenSSH ControlMaster opened
first (with a key that is then removed). Clusters are named only by an ssh-config alias.
Each failure mode (no agent, wrong OTP, no terminal) shows its one line and changes nothing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sync.login_helpers import LoginSetup, run_in_pty, xfer, xfer_in_pty
from xfer_core.testing.fixtures import unavailable
from xfer_core.testing.services import SshAgent, SshServer, missing_programs, otp_available

BACKENDS = ["rsync", "sftp"]
PASSPHRASE = "correct horse battery"
OTP_PROMPT = r"One-time password \(OATH\) for `xfertest': "
PASS_PROMPT = r"Enter passphrase for key '[^']*': "


def _need_sshd() -> None:
    missing = missing_programs("sshd", "ssh", "ssh-keygen", "ssh-agent", "ssh-add", "rsync")
    if missing:
        unavailable(f"sshd: not installed ({', '.join(missing)} not found)")
    if os.geteuid() != 0:
        unavailable("sshd: the test service needs root")


@pytest.fixture(scope="module")
def ca_sshd() -> Iterator[SshServer]:
    _need_sshd()
    with SshServer(user_ca=True) as server:
        yield server


@pytest.fixture(scope="module")
def locked_sshd() -> Iterator[SshServer]:
    _need_sshd()
    with SshServer(passphrase=PASSPHRASE) as server:
        yield server


@pytest.fixture(scope="module")
def otp_sshd() -> Iterator[SshServer]:
    _need_sshd()
    if not otp_available():
        unavailable("sshd otp: libpam-oath and oathtool are not installed")
    with SshServer(otp=True) as server:
        yield server


@pytest.fixture(scope="module")
def jump_sshd() -> Iterator[SshServer]:
    _need_sshd()
    with SshServer(log_level="DEBUG1") as server:
        yield server


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[SshAgent]:
    with SshAgent(tmp_path) as running:
        yield running


def _ok(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, res.stdout + res.stderr


def _one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if all(n in ln for n in needles)]
    assert lines, res.stdout + res.stderr
    return lines[0]


# -- certificates ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_user_certificate_signed_by_the_clusters_ca(
    backend: str, ca_sshd: SshServer, tmp_path: Path
) -> None:
    """The key alone is not authorized: only its certificate (CertificateFile) logs in."""
    setup = LoginSetup(ca_sshd, tmp_path, "ca")
    key = tmp_path / "id_cluster"  # no id_cluster-cert.pub beside it: only CertificateFile
    shutil.copyfile(ca_sshd.key_path, key)
    key.chmod(0o600)
    cert = tmp_path / "issued-cert.pub"
    shutil.copyfile(ca_sshd.cert_path, cert)
    lines = [*setup.alias_lines(identity=str(key)), "IdentityAgent none"]
    setup.write_ssh_config(*lines, f"CertificateFile {cert}")
    _ok(xfer(setup.args("sync", backend, "--batch"), setup.env))
    _ok(xfer(setup.args("fetch", backend, "--batch"), setup.env))
    assert setup.pushed() and setup.fetched_ok()

    # the same key without the certificate is refused: the certificate made the login
    setup.write_ssh_config(*lines)
    (setup.local / "new.txt").write_text("new")
    res = xfer(setup.args("sync", backend, "--batch"), setup.env)
    assert "ca (ca-alias): login refused" in _one_line_error(res, "login refused")
    assert not (setup.remote / "new.txt").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_certificate_handed_out_into_the_agent(
    backend: str, ca_sshd: SshServer, agent: SshAgent, tmp_path: Path
) -> None:
    """Key and certificate live only in the agent (``ssh-add`` loads KEY-cert.pub with KEY)."""
    key = tmp_path / "issued"
    shutil.copyfile(ca_sshd.key_path, key)
    shutil.copyfile(ca_sshd.cert_path, tmp_path / "issued-cert.pub")
    key.chmod(0o600)
    agent.add(key)
    for path in (key, tmp_path / "issued-cert.pub"):
        path.unlink()
    setup = LoginSetup(ca_sshd, tmp_path, "agentca")
    setup.write_ssh_config(*setup.alias_lines(), f"IdentityAgent {agent.sock}")
    env = {**setup.env, "SSH_AUTH_SOCK": ""}
    _ok(xfer(setup.args("sync", backend, "--batch"), env))
    _ok(xfer(setup.args("fetch", backend, "--batch"), env))
    assert setup.pushed() and setup.fetched_ok()


# -- an encrypted key --------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_encrypted_key_served_by_the_agent(
    backend: str, locked_sshd: SshServer, agent: SshAgent, tmp_path: Path
) -> None:
    """key_path names an encrypted key; the agent holds it (IdentityAgent): no prompt."""
    agent.add(locked_sshd.key_path, PASSPHRASE)
    setup = LoginSetup(locked_sshd, tmp_path, "agent", key_path=str(locked_sshd.key_path))
    setup.write_ssh_config(*setup.alias_lines(), f"IdentityAgent {agent.sock}")
    env = {**setup.env, "SSH_AUTH_SOCK": ""}
    _ok(xfer(setup.args("sync", backend, "--batch"), env))
    _ok(xfer(setup.args("fetch", backend, "--batch"), env))
    assert setup.pushed() and setup.fetched_ok()


@pytest.mark.parametrize("backend", BACKENDS)
def test_encrypted_key_without_agent_or_terminal_fails_with_ssh_add(
    backend: str, locked_sshd: SshServer, tmp_path: Path
) -> None:
    setup = LoginSetup(locked_sshd, tmp_path, "noagent", key_path=str(locked_sshd.key_path))
    setup.write_ssh_config(*setup.alias_lines(), "IdentityAgent none")
    res = xfer(setup.args("sync", backend), setup.env)
    line = _one_line_error(res, "noagent", "ssh-add")
    assert f"`ssh-add {locked_sshd.key_path}`" in line and "no terminal" in line
    assert setup.remote_names() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_key_passphrase_asked_once_at_the_terminal(
    backend: str, locked_sshd: SshServer, tmp_path: Path
) -> None:
    setup = LoginSetup(locked_sshd, tmp_path, "tty", key_path=str(locked_sshd.key_path))
    setup.write_ssh_config(*setup.alias_lines(), "IdentityAgent none")
    run = xfer_in_pty(setup.args("sync", backend), setup.env, [(PASS_PROMPT, PASSPHRASE)])
    assert run.returncode == 0, run.output
    assert len(run.prompts) == 1 and str(locked_sshd.key_path) in run.prompts[0]
    assert "Enter passphrase" not in run.output.split(run.prompts[0], 1)[1]
    assert setup.pushed()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_at_the_prompt_stops_and_gives_the_terminal_back(
    backend: str, locked_sshd: SshServer, tmp_path: Path
) -> None:
    setup = LoginSetup(locked_sshd, tmp_path, "intr", key_path=str(locked_sshd.key_path))
    setup.write_ssh_config(*setup.alias_lines(), "IdentityAgent none")
    run = xfer_in_pty(setup.args("sync", backend), setup.env, [(PASS_PROMPT, "\x03")])
    assert run.prompts and run.returncode == 130, run.output
    assert run.echo_at_exit  # not left without echo by the interrupted passphrase prompt
    assert setup.remote_names() == []


# -- keyboard-interactive 2FA (PAM TOTP) -----------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_time_password_answered_at_the_terminal(
    backend: str, otp_sshd: SshServer, tmp_path: Path
) -> None:
    """publickey + keyboard-interactive (pam_oath): the server's prompt, answered once per run."""
    setup = LoginSetup(otp_sshd, tmp_path, "otp")
    setup.write_ssh_config(*setup.alias_lines(identity=str(otp_sshd.key_path)))
    for command in ("sync", "fetch"):
        code = otp_sshd.otp_code()
        run = xfer_in_pty(setup.args(command, backend), setup.env, [(OTP_PROMPT, code)])
        assert run.returncode == 0, run.output
        assert len(run.prompts) == 1
        assert "One-time password" not in run.output.split(run.prompts[0], 1)[1]
    assert setup.pushed() and setup.fetched_ok()


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_one_time_password_is_refused_and_changes_nothing(
    backend: str, otp_sshd: SshServer, tmp_path: Path
) -> None:
    setup = LoginSetup(otp_sshd, tmp_path, "badotp")
    setup.write_ssh_config(*setup.alias_lines(identity=str(otp_sshd.key_path)))
    wrong = otp_sshd.otp_code(wrong=True)
    run = xfer_in_pty(setup.args("sync", backend), setup.env, [(OTP_PROMPT, wrong)])
    assert run.returncode == 1, run.output
    assert len(run.prompts) == 1  # asked once, not again
    assert "login refused" in run.output or "Permission denied" in run.output, run.output
    assert setup.remote_names() == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("why", ["no terminal", "--batch", "--json"])
def test_one_time_password_without_a_person_fails_at_once(
    backend: str, why: str, otp_sshd: SshServer, tmp_path: Path
) -> None:
    setup = LoginSetup(otp_sshd, tmp_path, "nobody")
    setup.write_ssh_config(*setup.alias_lines(identity=str(otp_sshd.key_path)))
    extra = [] if why == "no terminal" else [why]
    if why == "no terminal":
        res = xfer(setup.args("sync", backend), setup.env)
        line = _one_line_error(res, "nobody", "ControlMaster")
        assert "keyboard-interactive" in line and "no terminal" in line
    else:  # even on a terminal: nothing is asked
        run = xfer_in_pty(setup.args("sync", backend, *extra), setup.env, [(OTP_PROMPT, "x")])
        assert run.returncode == 1 and run.prompts == [], run.output
        assert "ControlMaster" in run.output
    assert setup.remote_names() == []


@pytest.fixture(scope="module")
def password_sshd() -> Iterator[SshServer]:
    _need_sshd()
    if not otp_available():
        unavailable("sshd otp: libpam-oath and oathtool are not installed")
    with SshServer(otp=True, otp_method="password") as server:
        yield server


@pytest.mark.parametrize("backend", BACKENDS)
def test_password_asked_once_at_the_terminal(
    backend: str, password_sshd: SshServer, tmp_path: Path
) -> None:
    """publickey + password (checked by PAM: the current TOTP code is the password)."""
    setup = LoginSetup(password_sshd, tmp_path, "pw")
    setup.write_ssh_config(*setup.alias_lines(identity=str(password_sshd.key_path)))
    code = password_sshd.otp_code()
    run = xfer_in_pty(setup.args("sync", backend), setup.env, [(r"'s password: ", code)])
    assert run.returncode == 0, run.output
    assert len(run.prompts) == 1 and "password:" not in run.output.split(run.prompts[0], 1)[1]
    assert setup.pushed()
    res = xfer(setup.args("fetch", backend), setup.env)  # no terminal: one line, nothing done
    assert "a password" in _one_line_error(res, "pw (", "no terminal")
    assert not setup.fetched.exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_clusters_ask_one_at_a_time_once_each(
    backend: str, otp_sshd: SshServer, password_sshd: SshServer, tmp_path: Path
) -> None:
    """-j 4 over two clusters of two pairs each: one prompt per cluster, never two at once."""
    remotes = {
        name: server.mkdtemp("two") for name, server in (("ka", otp_sshd), ("kb", password_sshd))
    }
    local = tmp_path / "src"
    local.mkdir()
    (local / "f.txt").write_text("both")
    config = tmp_path / "remotes.toml"
    config.write_text(
        "".join(
            f'[[clusters]]\nname = "{name}"\nhost = "{name}-alias"\n'
            + "".join(
                f'[[clusters.sync_dirs]]\nalias = "p{i}"\nlocal = "{local}"\n'
                f'remote = "{remotes[name]}/p{i}"\n'
                for i in (1, 2)
            )
            for name in remotes
        )
    )
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        "".join(
            f"Host {name}-alias\n  HostName {server.host}\n  Port {server.port}\n"
            f"  User {server.user}\n  IdentityFile {server.key_path}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {server.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            for name, server in (("ka", otp_sshd), ("kb", password_sshd))
        )
    )
    env = {"XFER_SSH_CONFIG": str(ssh_config)}
    answers = [(OTP_PROMPT, otp_sshd.otp_code()), (r"'s password: ", password_sshd.otp_code())]
    args = ["sync", "-b", backend, "-j", "4", "--config", str(config)]
    run = xfer_in_pty(args, env, answers, hold=3)  # a second login has time to ask too
    assert run.returncode == 0, run.output
    assert len(run.prompts) == 2 and run.overlaps == 0, run.output
    for remote in remotes.values():
        assert (remote / "p1" / "f.txt").is_file() and (remote / "p2" / "f.txt").is_file()


# -- a ControlMaster opened first -----------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_open_control_master_is_used_after_its_key_is_gone(
    backend: str, otp_sshd: SshServer, tmp_path: Path
) -> None:
    """The user logs in once (key + OTP) with ControlMaster; the key is then removed: xfer
    rides on the master without a terminal (sftp: through the user's OpenSSH)."""
    setup = LoginSetup(otp_sshd, tmp_path, "cm")
    key = tmp_path / "id_gone"
    shutil.copyfile(otp_sshd.key_path, key)
    key.chmod(0o600)
    short = Path(tempfile.mkdtemp(prefix="xcm-", dir="/tmp"))  # sockets: 108-byte paths
    control = short / "%r@%h:%p"
    setup.write_ssh_config(
        *setup.alias_lines(identity=str(key)),
        "IdentityAgent none",
        "ControlMaster auto",
        f"ControlPath {control}",
        "ControlPersist 300",
    )
    # the user's own 2FA login from their shell, which opens the master (ssh -f: it stays)
    login = f"ssh -F {shlex.quote(str(setup.ssh_config))} -fN cm-alias && sleep 0.5"
    opened = run_in_pty(["sh", "-c", login], dict(os.environ), [(OTP_PROMPT, otp_sshd.otp_code())])
    assert opened.returncode == 0, opened.output
    key.unlink()
    try:
        _ok(xfer(setup.args("sync", backend), setup.env))
        _ok(xfer(setup.args("fetch", backend), setup.env))
        assert setup.pushed() and setup.fetched_ok()
        check = ["ssh", "-F", str(setup.ssh_config), "-O", "check", "cm-alias"]
        assert subprocess.run(check, capture_output=True).returncode == 0  # still the user's
    finally:
        subprocess.run(
            ["ssh", "-F", str(setup.ssh_config), "-O", "exit", "cm-alias"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        shutil.rmtree(short, ignore_errors=True)
    # the master is gone and so is the key: one line, nothing changed
    (setup.local / "late.txt").write_text("late")
    res = xfer(setup.args("sync", backend), setup.env)
    assert "cm" in _one_line_error(res, "cm (")
    assert not (setup.remote / "late.txt").exists()


# -- jump hosts ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_proxy_jump_through_a_second_sshd(
    backend: str, sshd: SshServer, jump_sshd: SshServer, tmp_path: Path
) -> None:
    setup = LoginSetup(sshd, tmp_path, "behind")
    jump_config = tmp_path / "jump.conf"  # the jump host's block, pulled in by Include
    jump_config.write_text(
        "Host jump-alias\n"
        f"  HostName {jump_sshd.host}\n  Port {jump_sshd.port}\n  User {jump_sshd.user}\n"
        f"  IdentityFile {jump_sshd.key_path}\n  IdentitiesOnly yes\n"
    )
    setup.ssh_config.write_text(
        f"Include {jump_config}\n"
        "Host behind-alias\n"
        + "".join(f"  {ln}\n" for ln in setup.alias_lines(identity=str(sshd.key_path)))
        + "  ProxyJump jump-alias\n"
        "Host *\n"
        f"  UserKnownHostsFile {sshd.known_hosts} {jump_sshd.known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n  IdentityAgent none\n"
    )
    before = jump_sshd.log_path.read_text(errors="replace").count(f"port {sshd.port}")
    _ok(xfer(setup.args("sync", backend, "--batch"), setup.env))
    _ok(xfer(setup.args("fetch", backend, "--batch"), setup.env))
    assert setup.pushed() and setup.fetched_ok()
    log = jump_sshd.log_path.read_text(errors="replace")
    # the jump host forwarded connections to the cluster's port (direct-tcpip)
    assert "direct" in log and log.count(f"port {sshd.port}") > before, log[-2000:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_jump_host_key_is_refused(
    backend: str, sshd: SshServer, jump_sshd: SshServer, tmp_path: Path
) -> None:
    setup = LoginSetup(sshd, tmp_path, "badjump")
    setup.ssh_config.write_text(
        "Host badjump-alias\n"
        + "".join(f"  {ln}\n" for ln in setup.alias_lines(identity=str(sshd.key_path)))
        + f"  ProxyJump {jump_sshd.user}@{jump_sshd.host}:{jump_sshd.port}\n"
        "Host *\n"
        f"  IdentityFile {jump_sshd.key_path}\n"
        f"  UserKnownHostsFile {sshd.known_hosts}\n"  # the cluster's key only
        "  GlobalKnownHostsFile /dev/null\n  IdentityAgent none\n"
    )
    res = xfer(setup.args("sync", backend, "--batch"), setup.env)
    assert "host key is unknown" in _one_line_error(res, "badjump (")
    assert setup.remote_names() == []
