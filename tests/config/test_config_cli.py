"""`xfer config ...` through the real console script: exit codes, messages, edits that keep comments."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_config_load import BAD, GOOD

from xfer_core.config.load import parse_config
from xfer_core.testing import cli


def xfer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with no config of this machine's user in the way."""
    return cli.xfer(
        *args, env=env, drop_env=("XFER_CONFIG", "XDG_CONFIG_HOME"), timeout=60, script=True
    )


@pytest.mark.parametrize(("text", "message", "line"), BAD)
def test_validate_bad_config_exits_2_with_file_line_key(
    tmp_path: Path, text: str, message: str, line: int
) -> None:
    cfg = tmp_path / "remotes.toml"
    cfg.write_text(text)
    proc = xfer("config", "validate", "--config", str(cfg))
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"xfer: error: {cfg}:{line}: "), first
    assert message in first
    assert "Traceback" not in proc.stderr


def test_validate_json_lists_every_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "remotes.toml"
    cfg.write_text('[global]\nbad = 1\n[[clusters]]\nname = "a"\nport = -1\n')
    proc = xfer("--json", "config", "validate", "--config", str(cfg))
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert report["valid"] is False
    assert [(p["line"], p["key"]) for p in report["problems"]] == [
        (2, "global.bad"),
        (3, "clusters[0]"),
        (5, "clusters[0].port"),
    ]


def test_bad_config_is_one_line_error_for_commands_that_load_it(tmp_path: Path) -> None:
    cfg = tmp_path / "remotes.toml"
    cfg.write_text('[[clusters]]\nname = "a"\nhost = "h"\nprot = 22\n')
    proc = xfer("config", "show", "--json", "--config", str(cfg))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0] == (
        f"xfer: error: {cfg}:4: clusters[0].prot: unknown key; did you mean 'port'?"
    )
    assert len(lines) == 1


def test_validate_good_config(tmp_path: Path) -> None:
    cfg = tmp_path / "remotes.toml"
    cfg.write_text(GOOD)
    proc = xfer("config", "validate", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "ok (2 clusters, 3 sync dirs, 1 fetch dirs)" in proc.stderr


def test_validate_warns_about_backends_not_installed(tmp_path: Path) -> None:
    cfg = tmp_path / "remotes.toml"
    cfg.write_text(
        GOOD.replace('transfer_backend = "rsync"', 'transfer_backend = "carrier-pigeon"')
    )
    proc = xfer("config", "validate", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert (
        "xfer: warning: global: transfer_backend 'carrier-pigeon' is not installed" in proc.stderr
    )


def test_missing_config_file(tmp_path: Path) -> None:
    proc = xfer("config", "validate", "--config", str(tmp_path / "none.toml"))
    assert proc.returncode == 2
    assert "no config file at" in proc.stderr and "xfer config init" in proc.stderr


def test_init_refuses_to_overwrite_then_force(tmp_path: Path) -> None:
    cfg = tmp_path / "sub" / "remotes.toml"
    assert xfer("config", "init", "--config", str(cfg)).returncode == 0
    starter = cfg.read_text()
    assert starter.startswith("# xfer remotes config")
    assert xfer("config", "validate", "--config", str(cfg)).returncode == 0
    cfg.write_text("# mine\n")
    proc = xfer("config", "init", "--config", str(cfg))
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert cfg.read_text() == "# mine\n"
    assert xfer("config", "init", "--config", str(cfg), "--force").returncode == 0
    assert cfg.read_text() == starter


COMMENTED = """\
# My clusters -- hand written, keep this comment
[global]
# backend comment
transfer_backend = "rsync"   # inline comment
common_excludes = [
  ".git",      # never
  "__pycache__",
]

# the big one
[[clusters]]
host = "login.a.example"     # host before name: order must stay
name = "a"
port = 2222

  # my project
  [[clusters.sync_dirs]]
  remote = "~/proj"
  alias = "proj"
  local = "~/proj"

# trailing comment at the end
"""


def _is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(line in it for line in small)


def test_edits_keep_comments_and_key_order(tmp_path: Path) -> None:
    cfg = tmp_path / "remotes.toml"
    cfg.write_text(COMMENTED)
    cfg.chmod(0o600)
    steps = [
        ("add-cluster", "b", "--host", "b.example", "--user", "bob", "-e", "scratch"),
        ("add-dir", "a", "data", "--local", "~/data", "--remote", "$SCRATCH/data", "-e", "*.tmp"),
        ("add-dir", "a", "results", "--fetch", "-l", "~/results", "-r", "~/proj/results"),
        ("add-dir", "b", "proj", "-l", "~/proj", "-r", "/work/bob/proj"),
    ]
    for step in steps:
        proc = xfer("config", *step, "--config", str(cfg))
        assert proc.returncode == 0, proc.stderr
    text = cfg.read_text()
    # every original line (comments included) is still there, in the same order
    assert _is_subsequence(COMMENTED.splitlines(), text.splitlines())
    assert text.startswith(COMMENTED.split("# trailing comment")[0].rstrip("\n"))
    assert text.index('host = "login.a.example"') < text.index('name = "a"')
    assert (cfg.stat().st_mode & 0o777) == 0o600  # the atomic rewrite kept the mode
    config = parse_config(text, base_dir=str(tmp_path))
    a, b = config.clusters
    assert [p.alias for p in a.sync_dirs] == ["proj", "data"]
    assert a.sync_dirs[1].remote == "$SCRATCH/data" and a.sync_dirs[1].excludes == ["*.tmp"]
    assert [p.alias for p in a.fetch_dirs] == ["results"]
    assert (b.name, b.host, b.user, b.excludes) == ("b", "b.example", "bob", ["scratch"])
    assert [p.remote for p in b.sync_dirs] == ["/work/bob/proj"]
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_edit_refusals_leave_the_file_unchanged(tmp_path: Path) -> None:
    cfg = tmp_path / "remotes.toml"
    cfg.write_text(COMMENTED)
    cases = [
        (("add-cluster", "a", "--host", "x"), "a cluster named 'a' already exists"),
        (("add-dir", "zz", "p", "-l", "x", "-r", "y"), "unknown cluster 'zz'; known: a"),
        (("add-dir", "a", "proj", "-l", "x", "-r", "y"), "already has a sync_dirs alias 'proj'"),
        (("add-dir", "a", "", "-l", "x", "-r", "y"), "alias: must not be empty"),
        (("add-cluster", "c", "--host", "x", "--port", "0"), "greater than or equal to 1"),
    ]
    for args, message in cases:
        proc = xfer("config", *args, "--config", str(cfg))
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert cfg.read_text() == COMMENTED
    cfg.write_text(COMMENTED + "bogus = 1\n")
    proc = xfer("config", "add-cluster", "c", "--host", "x", "--config", str(cfg))
    assert proc.returncode == 2 and "bogus: unknown key" in proc.stderr
    assert cfg.read_text() == COMMENTED + "bogus = 1\n"


def test_path_reports_origin_and_sbatchman_fallback(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    proc = xfer("config", "path", env=env)
    assert proc.stdout.strip() == str(tmp_path / ".config/xfer/remotes.toml")
    assert "does not exist" in proc.stderr
    legacy = tmp_path / ".config/sbatchman/remotes-config.toml"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(GOOD)
    proc = xfer("--json", "config", "path", env=env)
    info = json.loads(proc.stdout)
    assert (info["path"], info["origin"], info["exists"]) == (str(legacy), "sbatchman", True)
    # sbatchman's file is read, never edited implicitly
    assert xfer("config", "validate", env=env).returncode == 0
    proc = xfer("config", "add-cluster", "c", "--host", "x", env=env)
    assert proc.returncode == 2 and "does not edit it" in proc.stderr
    assert legacy.read_text() == GOOD
    proc = xfer("config", "path", env={**env, "XFER_CONFIG": str(tmp_path / "e.toml")})
    assert proc.stdout.strip() == str(tmp_path / "e.toml") and "$XFER_CONFIG" in proc.stderr


def test_show_prints_file_and_json(tmp_path: Path) -> None:
    cfg = tmp_path / "remotes.toml"
    cfg.write_text(GOOD)
    proc = xfer("config", "show", "--config", str(cfg))
    assert proc.returncode == 0 and proc.stdout == GOOD
    proc = xfer("config", "show", "--json", "--config", str(cfg))
    data = json.loads(proc.stdout)["config"]
    assert [c["name"] for c in data["clusters"]] == ["cluster-a", "cluster-b"]
    assert data["clusters"][0]["sync_dirs"][0]["remote"] == "~/myproject"


@pytest.mark.parametrize("command", ["init", "show", "validate", "path", "add-cluster", "add-dir"])
def test_every_command_has_help_with_examples(command: str) -> None:
    proc = xfer("config", command, "--help")
    assert proc.returncode == 0
    assert "Examples" in proc.stdout and "xfer config" in proc.stdout
