"""Hostile input: shell syntax in config values, CLI flags, names and manifest paths.

Every value that reaches a shell (rsync's remote shell, the remote path expansion,
ssh options, the rendered worker.sh) is tried with ``$(touch CANARY)``, backticks,
``;`` and quotes. Nothing may execute (no CANARY file anywhere, locally or on the
cluster), and the hostile-named files arrive intact or the value is refused with one
clear error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xfer_core.testing.services import SshServer

from .conftest import Tally
from .helpers import (
    INJECTION_NAMES,
    canaries,
    cluster_config,
    local_run,
    read_tree,
    ssh_env,
    write_tree,
    xfer,
)

CLASS = "hostile input: shell injection"

EVIL = "$(touch CANARY) `touch CANARY`;touch CANARY 'q' \"d\""


HOSTILE_EXCLUDES = ["$(touch CANARY)", "`touch CANARY`;x", "skip'me"]


@pytest.mark.sshd
@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_sync_and_fetch_with_shell_syntax_everywhere(
    sshd: SshServer, tmp_path: Path, backend: str, tally: Tally
) -> None:
    local = tmp_path / f"src {EVIL}"
    files = write_tree(local, INJECTION_NAMES)
    write_tree(local, ["skip'me", "$(touch CANARY)"])  # excluded by the hostile patterns
    rdir = sshd.mkdtemp("inj")
    rel = rdir.relative_to(sshd.home)
    back = tmp_path / f"back {EVIL}"
    config = cluster_config(
        tmp_path / "remotes.toml",
        sshd,
        excludes=HOSTILE_EXCLUDES,
        sync_dirs=[{"alias": "p", "local": str(local), "remote": f"~/{rel}/dst {EVIL}"}],
        fetch_dirs=[{"alias": "b", "local": str(back), "remote": f"~/{rel}/dst {EVIL}"}],
    )
    env = ssh_env(sshd, tmp_path)
    common = ["--config", str(config), "-b", backend]
    push = xfer("sync", *common, "-e", "`touch CANARY`", env=env, cwd=tmp_path)
    assert push.returncode == 0, push.stderr
    remote_tree = read_tree(rdir / f"dst {EVIL}")
    assert remote_tree == files
    fetch = xfer("fetch", *common, "-e", "$(touch CANARY);x", env=env, cwd=tmp_path)
    assert fetch.returncode == 0, fetch.stderr
    assert read_tree(back) == files
    assert canaries(tmp_path, rdir, sshd.home) == []
    lost = len(set(files) - set(remote_tree)) + len(set(files) - set(read_tree(back)))
    tally(cases=2 * len(INJECTION_NAMES), lost=lost)


HOSTILE_LOGIN = [
    ("host", "127.0.0.1;touch CANARY"),
    ("host", "-oProxyCommand=touch CANARY"),
    ("host", "$(touch CANARY)"),
    ("user", "$(touch CANARY)"),
    ("user", "x;touch CANARY"),
    ("key_path", "k`touch CANARY`"),
]


@pytest.mark.sshd
@pytest.mark.parametrize(
    "backend,field,value",
    [("rsync", f, v) for f, v in HOSTILE_LOGIN]
    # asyncssh is not a shell; one default case, the rest in the soak run
    + [
        pytest.param("sftp", f, v, marks=() if f == "user" and "$" in v else pytest.mark.soak)
        for f, v in HOSTILE_LOGIN
    ],
)
def test_hostile_host_user_key_fail_cleanly(
    sshd: SshServer, tmp_path: Path, backend: str, field: str, value: str, tally: Tally
) -> None:
    local = tmp_path / "src"
    write_tree(local, ["a.txt"])
    rdir = sshd.mkdtemp("injh")
    rel = rdir.relative_to(sshd.home)
    config = cluster_config(
        tmp_path / "remotes.toml",
        sshd,
        **{field: value},
        sync_dirs=[{"alias": "p", "local": str(local), "remote": f"~/{rel}/d"}],
    )
    proc = xfer(
        "sync", "--config", str(config), "-b", backend, env=ssh_env(sshd, tmp_path), cwd=tmp_path
    )
    # refused (usage) or failed (connection): either way a clear error and nothing ran
    assert proc.returncode in (1, 2), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "FAILED" in proc.stderr or "xfer: error:" in proc.stderr, proc.stderr
    assert not (rdir / "d" / "a.txt").exists()
    assert canaries(tmp_path, rdir, sshd.home) == []
    tally(cases=1)


def test_local_run_with_hostile_flags_names_and_manifest_paths(
    tmp_path: Path, tally: Tally
) -> None:
    """Manifest with shell-syntax paths → shard → rendered worker.sh run by the local
    scheduler, with shell syntax in the roots; --job-name/--partition with shell syntax
    are refused before anything runs."""
    src = tmp_path / f"src {EVIL}"
    files = write_tree(src, INJECTION_NAMES)
    run = tmp_path / f"run {EVIL}"
    dst = tmp_path / f"dst {EVIL}"
    args = ["--json", *local_run(run, src, dst, 3)]
    for flag in ("--job-name", "--partition"):
        refused = xfer(*args, flag, EVIL, cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert f"{flag} " in refused.stderr and "Traceback" not in refused.stderr
        assert not dst.exists() and canaries(tmp_path) == []
    proc = xfer(*args, "--job-name", "ok-name", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["done"] == summary["shards"] == 3
    assert read_tree(dst) == files
    manifest = [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in manifest) == sorted(files)
    assert canaries(tmp_path) == []
    tally(cases=len(INJECTION_NAMES), lost=len(set(files) - set(read_tree(dst))))


def test_hostile_rclone_flags_never_reach_a_shell(tmp_path: Path, tally: Tally) -> None:
    """--rclone-flags is split like a shell would, but nothing in it is executed: the
    words reach rclone as arguments (here: refused by rclone, so the shard fails)."""
    src = tmp_path / "src"
    write_tree(src, ["a.txt", "b.txt"])
    run = tmp_path / "run"
    dst = tmp_path / "dst"
    flags = "--transfers 2 '$(touch CANARY)' \"`touch CANARY`\" ';touch' CANARY"
    proc = xfer(
        *local_run(run, src, dst, 1, "--max-attempts", "1", "--rclone-flags", flags),
        cwd=tmp_path,
    )
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    assert canaries(tmp_path) == []
    if proc.returncode == 1:  # it ran and failed: the shard must not claim done
        assert not list((run / "state").glob("*.done"))
    tally(cases=1)
