"""Secrets: credentials are refused when exposed, and never echoed anywhere.

An rclone.conf readable by others is refused with the chmod fix; unusable ssh keys
and unknown or changed host keys fail with one clear line; and a real local→S3
``xfer run`` (good and failing, plain, ``--json`` and ``-v``) never writes the S3
secret key into its output, its error messages or any file of the run dir.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from xfer_core.testing.services import S3Server, SshServer

from .conftest import Tally
from .helpers import cluster_config, files_holding, local_run, ssh_env, write_tree, xfer

CLASS = "secrets"


@pytest.mark.s3
def test_loose_rclone_conf_refused_with_the_fix(tmp_path: Path, s3: S3Server, tally: Tally) -> None:
    src = tmp_path / "src"
    write_tree(src, ["a.txt"])
    for mode in (0o644, 0o640, 0o604):
        conf = tmp_path / f"rclone-{mode:o}.conf"
        shutil.copy(s3.rclone_config, conf)
        conf.chmod(mode)
        run = tmp_path / f"run{mode:o}"
        proc = xfer(*local_run(run, src, s3.remote("dst", "x"), 1, "--rclone-config", str(conf)))
        assert proc.returncode == 2, proc.stderr
        assert f"chmod 600 {conf}" in proc.stderr, proc.stderr
        assert s3.secret_key not in proc.stderr + proc.stdout
        assert not list(run.glob("shards/*")) and not (run / "state").exists()
    tally(cases=3)


def _sync_config(sshd: SshServer, tmp: Path, key: Path, rdir: Path) -> Path:
    local = tmp / "src"
    write_tree(local, ["a.txt"])
    remote = f"~/{rdir.relative_to(sshd.home)}/d"
    return cluster_config(
        tmp / "remotes.toml",
        sshd,
        key_path=str(key),
        sync_dirs=[{"alias": "p", "local": str(local), "remote": remote}],
    )


def _keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@pytest.mark.sshd
@pytest.mark.parametrize(
    "backend,what",
    [(b, w) for b in ("rsync", "sftp") for w in ("missing", "loose", "passphrase")],
)
def test_key_problems_fail_with_one_clear_line(
    sshd: SshServer, tmp_path: Path, backend: str, what: str, tally: Tally
) -> None:
    """Missing key, key readable by others, key with a passphrase (no agent): each
    fails its pair (exit 1) with a one-line reason, no traceback, passphrase unechoed."""
    rdir = sshd.mkdtemp("keys")
    passphrase = f"pp-{uuid.uuid4().hex}"
    if what == "missing":
        key = tmp_path / "no_such_key"
    elif what == "loose":
        key = tmp_path / "loose_key"
        shutil.copy(sshd.key_path, key)
        key.chmod(0o644)
    else:
        key = _keygen(tmp_path / "pp_key", passphrase)
    env = {**ssh_env(sshd, tmp_path), "SSH_AUTH_SOCK": ""}
    config = _sync_config(sshd, tmp_path, key, rdir)
    proc = xfer("sync", "--config", str(config), "-b", backend, env=env)
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    failed = [line for line in proc.stderr.splitlines() if "FAILED:" in line or "error:" in line]
    assert failed, proc.stderr
    assert passphrase not in proc.stderr + proc.stdout
    assert not (rdir / "d" / "a.txt").exists()
    tally(cases=1)


@pytest.mark.sshd
@pytest.mark.parametrize(
    "backend", ["rsync", pytest.param("sftp", marks=pytest.mark.soak)]
)  # the backends' own conformance suite checks both at the API level
def test_cli_unknown_host_refused_unless_opted_in_and_changed_key_always(
    sshd: SshServer, tmp_path: Path, backend: str, tally: Tally
) -> None:
    rdir = sshd.mkdtemp("hk")
    config = _sync_config(sshd, tmp_path, sshd.key_path, rdir)
    known = tmp_path / "known_hosts"
    known.write_text("")
    env = ssh_env(sshd, tmp_path, known)
    args = ["sync", "--config", str(config), "-b", backend]
    refused = xfer(*args, env=env)
    assert refused.returncode == 1 and "FAILED" in refused.stderr, refused.stderr
    assert not (rdir / "d" / "a.txt").exists()
    accepted = xfer(*args, "--accept-new-host-key", env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert (rdir / "d" / "a.txt").exists() and known.read_text().strip()
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    known.write_text(f"[{sshd.host}]:{sshd.port} ssh-ed25519 {other}\n")
    (rdir / "d" / "a.txt").unlink()
    for extra in ([], ["--accept-new-host-key"]):
        changed = xfer(*args, *extra, env=env)
        assert changed.returncode == 1 and "FAILED" in changed.stderr, changed.stderr
        assert not (rdir / "d" / "a.txt").exists()
    tally(cases=4)


@pytest.mark.s3
@pytest.mark.parametrize(
    "flags,fail",
    [
        (["--json"], False),
        (["-v"], True),
        pytest.param(["-v"], False, marks=pytest.mark.soak),
        pytest.param(["--json"], True, marks=pytest.mark.soak),
    ],
)
def test_s3_secret_never_appears_in_outputs_or_run_dir(
    tmp_path: Path, s3: S3Server, tally: Tally, flags: list[str], fail: bool
) -> None:
    """A run that succeeds or fails (a listed file is gone when its shard runs)."""
    secret = s3.secret_key.encode()
    assert secret and secret in s3.rclone_config.read_bytes()
    src = tmp_path / "src"
    write_tree(src, [f"f{i}.txt" for i in range(6)])
    conf = str(s3.rclone_config)
    dest = s3.remote("dst", f"sec-{uuid.uuid4().hex[:8]}")
    run = tmp_path / "run"
    if fail:
        ghost = src / "ghost.txt"
        ghost.write_text("soon gone\n")
        prep = xfer(*local_run(run, src, dest, 2, "--rclone-config", conf)[:-1])  # no --submit
        assert prep.returncode == 0, prep.stderr
        ghost.unlink()
    proc = xfer(
        *flags, *local_run(run, src, dest, 2, "--max-attempts", "1", "--rclone-config", conf)
    )
    assert proc.returncode == (1 if fail else 0), proc.stderr
    status = xfer("--json", "status", "--run-dir", str(run))
    outputs = (proc.stdout + proc.stderr + status.stdout + status.stderr).encode()
    assert (run / "config.resolved.json").is_file()
    assert list(run.glob("logs/*.log")), "no worker logs to check"
    assert not files_holding(run, secret), f"the S3 secret is in a file of {run}"
    assert secret not in outputs, "the S3 secret is in the output"
    false_done = 0
    if fail:
        state = run / "state"
        done = len(list(state.glob("*.done")))
        assert done == 1, "only the shard without the vanished file may be done"
        false_done = done - 1
    tally(cases=1, false_done=false_done)
