"""``xfer sync`` / ``xfer fetch`` end to end: the CLI, a real config, the real sshd."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from xfer_core.testing import cli
from xfer_core.testing.conformance import make_tree, snapshot
from xfer_core.testing.services import SshServer, free_port


def xfer(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return cli.xfer(*args, env=env, cwd=cwd, timeout=120)


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


class Setup:
    """A config with two good clusters on the test sshd, and the directories it names."""

    def __init__(self, sshd: SshServer, tmp: Path):
        self.sshd = sshd
        self.tmp = tmp
        self.rdir = sshd.mkdtemp("cli")
        self.rel = self.rdir.relative_to(sshd.home)
        self.local = tmp / "proj"
        self.local.mkdir()
        make_tree(self.local, hostile=False)
        (self.local / "checkpoints").mkdir()
        (self.local / "checkpoints" / "big.ckpt").write_text("ckpt")
        (self.local / "wandb").mkdir()
        (self.local / "wandb" / "run.log").write_text("log")
        self.other = tmp / "other"
        self.other.mkdir()
        (self.other / "o.txt").write_text("other")
        ssh_config = tmp / "ssh_config"
        ssh_config.write_text(
            f"Host *\n  UserKnownHostsFile {sshd.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        )
        self.env = {"XFER_SSH_CONFIG": str(ssh_config), "XFER_PLAIN": "1"}
        self.config = tmp / "remotes.toml"
        self.write()

    def cluster(self, name: str, port: int | None = None, key: str | None = None) -> str:
        sshd = self.sshd
        return f"""
[[clusters]]
name = "{name}"
host = "{sshd.host}"
port = {port or sshd.port}
user = "{sshd.user}"
key_path = "{key or sshd.key_path}"
sync_excludes = ["wandb"]

[[clusters.sync_dirs]]
alias = "proj"
local = "{self.local}"
remote = "~/{self.rel}/{name}/proj"
excludes = ["private/"]

[[clusters.sync_dirs]]
alias = "other"
local = "{self.other}"
remote = "$HOME/{self.rel}/{name}/other"

[[clusters.fetch_dirs]]
alias = "back"
remote = "~/{self.rel}/{name}/proj"
local = "{self.tmp}/fetched/{name}"
"""

    def write(self, *extra: str) -> None:
        text = '[global]\ncommon_excludes = ["*.ckpt"]\n'
        text += self.cluster("alpha") + self.cluster("beta") + "".join(extra)
        self.config.write_text(text)

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return xfer(*args, "--config", str(self.config), env={**self.env, **(env or {})})


@pytest.fixture
def setup(sshd: SshServer, tmp_path: Path) -> Setup:
    return Setup(sshd, tmp_path)


def test_sync_one_cluster_json_shape(setup: Setup) -> None:
    res = setup.run("sync", "-c", "alpha", "--json")
    assert res.returncode == 0, res.stderr
    evs = events(res.stdout)
    kinds = [e["event"] for e in evs]
    assert kinds[0] == "pair_start" and kinds[-1] == "summary"
    assert kinds.count("pair_start") == kinds.count("pair_done") == 2
    done = [e for e in evs if e["event"] == "pair_done"]
    assert {d["alias"] for d in done} == {"proj", "other"}
    for d in done:
        assert set(d) >= {"cluster", "alias", "files_sent", "bytes_sent", "skipped", "failed"}
        assert d["cluster"] == "alpha" and d["error"] == ""
    files = [e for e in evs if e["event"] == "file"]
    assert {"path", "action", "size", "cluster", "alias"} <= set(files[0])
    summary = evs[-1]
    assert summary["ok"] is True and len(summary["pairs"]) == 2
    assert summary["files_sent"] == sum(d["files_sent"] for d in done)
    # only alpha, with every exclude level applied (common *.ckpt, sync wandb, pair private/)
    got = snapshot(setup.rdir / "alpha" / "proj")
    assert "plain.txt" in got and "checkpoints" in got
    assert "checkpoints/big.ckpt" not in got and "wandb" not in got and "private" not in got
    assert not (setup.rdir / "beta").exists()
    # a second run sends nothing
    again = events(setup.run("sync", "-c", "alpha", "--json").stdout)[-1]
    assert again["files_sent"] == 0 and again["bytes_sent"] == 0


def test_alias_exclude_and_sftp_backend(setup: Setup) -> None:
    res = setup.run("sync", "-a", "proj", "-e", "checkpoints", "-b", "sftp", "--json")
    assert res.returncode == 0, res.stderr
    summary = events(res.stdout)[-1]
    assert summary["backend"] == "sftp"
    assert {(p["cluster"], p["alias"]) for p in summary["pairs"]} == {
        ("alpha", "proj"),
        ("beta", "proj"),
    }
    for name in ("alpha", "beta"):
        got = snapshot(setup.rdir / name / "proj")
        assert "plain.txt" in got and "checkpoints" not in got
        assert not (setup.rdir / name / "other").exists()


def test_dry_run_lists_and_changes_nothing(setup: Setup) -> None:
    res = setup.run("sync", "-c", "beta", "-a", "other", "-n")
    assert res.returncode == 0, res.stderr
    assert "beta/other: would send o.txt" in res.stderr
    assert not (setup.rdir / "beta").exists()


def test_fetch_round_trip(setup: Setup) -> None:
    assert setup.run("sync", "-c", "alpha", "-a", "proj").returncode == 0
    res = setup.run("fetch", "-c", "alpha", "--json")
    assert res.returncode == 0, res.stderr
    pushed = snapshot(setup.rdir / "alpha" / "proj")
    assert snapshot(setup.tmp / "fetched" / "alpha") == pushed
    assert events(res.stdout)[-1]["direction"] == "pull"


def test_rsync_missing_falls_back_to_sftp(setup: Setup) -> None:
    res = setup.run("sync", "-c", "alpha", "-a", "other", env={"PATH": "/nonexistent"})
    assert res.returncode == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "falling back to the sftp backend" in warnings[0]
    assert (setup.rdir / "alpha" / "other" / "o.txt").read_text() == "other"


@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_bad_clusters_fail_alone(setup: Setup, backend: str) -> None:
    wrong_key = setup.tmp / "wrong_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True
    )
    setup.write(
        setup.cluster("down", port=free_port()), setup.cluster("badkey", key=str(wrong_key))
    )
    res = setup.run("sync", "-a", "other", "-b", backend, "-j", "4", "--json")
    assert res.returncode == 1
    done = {e["cluster"]: e for e in events(res.stdout) if e["event"] == "pair_done"}
    assert done["alpha"]["error"] == "" and done["beta"]["error"] == ""
    assert "unreachable" in done["down"]["error"]
    assert "login refused" in done["badkey"]["error"]
    assert all("\n" not in d["error"] for d in done.values())
    assert (setup.rdir / "beta" / "other" / "o.txt").exists()
    # plain output names the failed pairs in one line each
    plain = setup.run("sync", "-a", "other", "-b", backend, "-c", "down")
    assert plain.returncode == 1
    assert any(ln.startswith("down/other: FAILED: ") for ln in plain.stderr.splitlines())


def test_missing_local_dir_fails_that_pair_only(setup: Setup) -> None:
    (setup.other / "o.txt").unlink()
    setup.other.rmdir()
    res = setup.run("sync", "-c", "alpha", "--json")
    assert res.returncode == 1
    done = {e["alias"]: e for e in events(res.stdout) if e["event"] == "pair_done"}
    assert "does not exist" in done["other"]["error"] and done["proj"]["error"] == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-c", "gamma"], "unknown cluster 'gamma'"),
        (["-a", "nope"], "unknown sync dir alias 'nope'"),
        (["-b", "carrier-pigeon"], "unknown transfer 'carrier-pigeon'"),
        (["-e", ""], "empty exclude pattern"),
    ],
)
def test_usage_errors_exit_2(setup: Setup, args: list[str], needle: str) -> None:
    res = setup.run("sync", *args)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr
    assert res.stderr.startswith("xfer: error: ")
    assert not (setup.rdir / "alpha").exists()


def test_bad_config_line_exit_2(setup: Setup) -> None:
    setup.config.write_text('[global]\ncommon_excludes = ["x"]\n\n[[clusters]]\nname = "a"\n')
    res = setup.run("sync")
    assert res.returncode == 2
    assert "remotes.toml:4" in res.stderr and "host" in res.stderr


def test_host_key_delete_and_checksum_flags(setup: Setup) -> None:
    known = setup.tmp / "empty_known_hosts"
    known.write_text("")
    ssh_config = setup.tmp / "ssh_config_strict"
    ssh_config.write_text(
        f"Host *\n  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n"
    )
    env = {"XFER_SSH_CONFIG": str(ssh_config)}
    args = ("sync", "-c", "alpha", "-a", "other", "--json")
    for backend in ("rsync", "sftp"):
        known.write_text("")
        refused = setup.run(*args, "-b", backend, env=env)
        assert refused.returncode == 1
        assert "host key is unknown" in events(refused.stdout)[-1]["pairs"][0]["error"]
        accepted = setup.run(*args, "-b", backend, "--accept-new-host-key", env=env)
        assert accepted.returncode == 0, accepted.stdout
        assert known.read_text().strip()
    dest = setup.rdir / "alpha" / "other"
    (dest / "stale.txt").write_text("stale")
    setup.sshd.chown(dest)
    res = setup.run(*args, "--delete", env=env)
    assert res.returncode == 0 and not (dest / "stale.txt").exists()
    assert events(res.stdout)[-1]["deleted"] == 1
    # same size and mtime, other content: only --checksum notices
    st = (dest / "o.txt").stat()
    (dest / "o.txt").write_text("OTHER")
    os.utime(dest / "o.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert events(setup.run(*args, env=env).stdout)[-1]["files_sent"] == 0
    assert events(setup.run(*args, "--checksum", env=env).stdout)[-1]["files_sent"] == 1
    assert (dest / "o.txt").read_text() == "other"
