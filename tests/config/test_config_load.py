"""Config loading: validation messages (file:line: key: problem), expansion, selection, path resolution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xfer_core.config.load import (
    ConfigValidationError,
    backend_for,
    load_config,
    parse_config,
    select,
    validate_text,
)
from xfer_core.config.model import Config
from xfer_core.config.paths import resolve_config_path
from xfer_core.errors import ConfigError, ExitCode

GOOD = """\
# my clusters
[global]
transfer_backend = "rsync"
common_excludes = [".git", ".venv", "__pycache__", "build"]
sync_excludes = ["results", "data", "datasets"]
fetch_excludes = ["src"]

[[clusters]]
name = "cluster-a"
host = "login.cluster-a.cineca.it"
port = 22
user = "alice"
key_path = "~/.ssh/id_ed25519"
excludes = ["scratch"]
sync_excludes = ["checkpoints"]

  [[clusters.sync_dirs]]
  alias = "myproject"
  local = "~/projects/myproject"
  remote = "~/myproject"
  excludes = ["data", "results"]

  [[clusters.sync_dirs]]
  alias = "exp"
  local = "experiments"
  remote = "$SCRATCH/exp"

  [[clusters.fetch_dirs]]
  alias = "myproject"
  remote = "~/myproject/results"
  local = "~/results/myproject"

[[clusters]]
name = "cluster-b"
host = "b.example.org"

  [[clusters.sync_dirs]]
  alias = "myproject"
  local = "~/projects/myproject"
  remote = "/work/alice/myproject"
"""


def test_good_config_parses_and_expands_local_paths_only() -> None:
    config = parse_config(GOOD, "remotes.toml", base_dir="/cfg")
    a, b = config.clusters
    home = os.path.expanduser("~")
    assert a.key_path == f"{home}/.ssh/id_ed25519"
    assert a.sync_dirs[0].local == f"{home}/projects/myproject"
    assert a.sync_dirs[0].remote == "~/myproject"  # the remote shell expands it
    assert a.sync_dirs[1].remote == "$SCRATCH/exp"
    assert a.sync_dirs[1].local == "/cfg/experiments"  # relative to the config's directory
    assert a.fetch_dirs[0].alias == "myproject"
    assert b.port is None and b.user is None  # left to ~/.ssh/config
    assert config.global_.fetch_excludes == ["src"]
    assert config.source == "remotes.toml"


def test_local_base_resolves_relative_local_paths() -> None:
    text = '[global]\nlocal_base = "/data/base"\n' + GOOD.split("\n", 6)[6]
    config = parse_config(text, base_dir="/cfg")
    assert config.clusters[0].sync_dirs[1].local == "/data/base/experiments"


def test_sbatchman_fetch_dirs_without_alias_get_one_from_remote() -> None:
    text = """\
[global]
local_base = "~/SbatchMan"
[[clusters]]
name = "leonardo"
host = "login.leonardo.cineca.it"
transfer_backend = "sftp"
  [[clusters.fetch_dirs]]
  remote = "~/app1/"
  local = "~/results/app1"
  excludes = ["tmp"]
"""
    config = parse_config(text)
    cluster = config.clusters[0]
    assert cluster.fetch_dirs[0].alias == "app1"
    assert backend_for(config, cluster) == "sftp"
    assert backend_for(config, cluster, "rsync") == "rsync"


# (config text, expected message, line)
BAD = [
    (
        '[[clusters]]\nname = "a"\nhost = "h"\n[[clusters]]\nname = "b"\nhost = "h"\n'
        '  [[clusters.sync_dirs]]\n  local = "x"\n  remote = "y"\n',
        "clusters[1].sync_dirs[0]: 'alias' is required",
        7,
    ),
    (
        '[[clusters]]\nname = "a"\nhots = "h"\n',
        "clusters[0].hots: unknown key; did you mean 'host'?",
        3,
    ),
    ('[[clusters]]\nname = "a"\n', "clusters[0]: 'host' is required", 1),
    (
        '[global]\ncommon_exclude = ["x"]\n',
        "global.common_exclude: unknown key; did you mean 'common_excludes'?",
        2,
    ),
    ("[globl]\n", "globl: unknown key; did you mean 'global'?", 1),
    (
        '[[clusters]]\nname = "a"\nhost = "h"\nport = "22"\n',
        "clusters[0].port: expected an integer, got a string",
        4,
    ),
    (
        '[[clusters]]\nname = "a"\nhost = "h"\nport = 0\n',
        "clusters[0].port: port 0 is out of range (1-65535)",
        4,
    ),
    ('[[clusters]]\nname = "a"\nhost = "h"\nport = 65536\n', "port 65536 is out of range", 4),
    (
        '[[clusters]]\nname = "a"\nhost = "h"\nport = true\n',
        "expected an integer, got a boolean",
        4,
    ),
    ('[[clusters]]\nname = "a"\nhost = ""\n', "clusters[0].host: must not be empty", 3),
    (
        '[[clusters]]\nname = 5\nhost = "h"\n',
        "clusters[0].name: expected a string, got an integer",
        2,
    ),
    (
        '[[clusters]]\nname = "a"\nhost = "h"\n[[clusters]]\nname = "a"\nhost = "h2"\n',
        "clusters[1].name: duplicate cluster name 'a' (first at clusters[0])",
        5,
    ),
    (
        '[[clusters]]\nname = "a"\nhost = "h"\n[[clusters.sync_dirs]]\nalias = "p"\nlocal = "x"\n'
        'remote = "y"\n[[clusters.sync_dirs]]\nalias = "p"\nlocal = "x2"\nremote = "y2"\n',
        "clusters[0].sync_dirs[1].alias: duplicate alias 'p' in this cluster (first at sync_dirs[0])",
        9,
    ),
    (
        '[global]\ncommon_excludes = [\n  "a",\n  "",\n]\n',
        "global.common_excludes[1]: an exclude pattern must not be empty",
        4,
    ),
    (
        '[global]\nsync_excludes = "data"\n',
        "global.sync_excludes: expected an array of strings, got a string",
        2,
    ),
    ("global = 3\n", "global: expected a table, got an integer", 1),
    (
        '[clusters]\nname = "a"\n',
        "clusters: expected an array of tables ([[clusters]]), got a table",
        1,
    ),
    ('[global]\ntransfer_backend = "rsync"\n\n[[clusters]\nname = "a"\n', "TOML syntax error", 4),
    ("[global]\na = 1\na = 2\n", "TOML syntax error", 3),
    (
        '[global]\ntransfer_backend = """\n[[clusters]]\nname = 1\n"""\n[[clusters]]\nname = "a"\n'
        'hots = 1\nhost = "h"\n',
        "clusters[0].hots",
        8,
    ),
]


@pytest.mark.parametrize(("text", "message", "line"), BAD)
def test_bad_configs_name_file_line_and_key(text: str, message: str, line: int) -> None:
    problems = validate_text(text, "remotes.toml")
    assert problems, "expected a problem"
    first = str(problems[0])
    assert first.startswith(f"remotes.toml:{line}: "), first
    assert message in first
    with pytest.raises(ConfigValidationError) as info:
        parse_config(text, "remotes.toml")
    assert str(info.value) == first
    assert info.value.exit_code == ExitCode.USAGE


def test_all_problems_are_reported_in_line_order() -> None:
    text = '[global]\nbad = 1\n[[clusters]]\nname = "a"\nport = -1\n'
    problems = validate_text(text)
    assert [p.line for p in problems] == sorted(p.line or 0 for p in problems)
    assert len(problems) == 3  # unknown key, missing host, port range
    with pytest.raises(ConfigValidationError) as info:
        parse_config(text)
    assert info.value.hint is not None and "2 more problems" in info.value.hint


def test_good_config_has_no_problems() -> None:
    assert validate_text(GOOD) == []


# -- selection -------------------------------------------------------------------


@pytest.fixture
def config() -> Config:
    return parse_config(GOOD, "remotes.toml", base_dir="/cfg")


def test_select_all_in_config_order(config: Config) -> None:
    got = [(c.name, p.alias) for c, p in select(config, [], [], "push")]
    assert got == [("cluster-a", "myproject"), ("cluster-a", "exp"), ("cluster-b", "myproject")]
    got = [(c.name, p.alias) for c, p in select(config, [], [], "pull")]
    assert got == [("cluster-a", "myproject")]


def test_select_by_cluster_and_alias(config: Config) -> None:
    got = [(c.name, p.alias) for c, p in select(config, ["cluster-b"], [], "push")]
    assert got == [("cluster-b", "myproject")]
    got = [(c.name, p.alias) for c, p in select(config, [], ["myproject"], "push")]
    assert got == [("cluster-a", "myproject"), ("cluster-b", "myproject")]
    got = [(c.name, p.alias) for c, p in select(config, ["cluster-a"], ["exp", "exp"], "push")]
    assert got == [("cluster-a", "exp")]


def test_select_unknown_names_list_known_ones(config: Config) -> None:
    with pytest.raises(ConfigError) as info:
        select(config, ["cluster-c"], [], "push")
    assert "unknown cluster 'cluster-c'" in str(info.value)
    assert "known: cluster-a, cluster-b" in str(info.value)
    with pytest.raises(ConfigError) as info:
        select(config, ["cluster-b"], ["exp"], "push")
    assert "unknown sync dir alias 'exp'" in str(info.value)
    assert "known: myproject" in str(info.value)
    with pytest.raises(ConfigError) as info:
        select(config, [], ["myprojet"], "push")
    assert info.value.hint == "did you mean 'myproject'?"


def test_select_nothing_to_do_is_an_error(config: Config) -> None:
    with pytest.raises(ConfigError, match="nothing to fetch"):
        select(config, ["cluster-b"], [], "pull")


# -- where the config comes from ---------------------------------------------------


def test_path_resolution_order(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XFER_CONFIG": str(tmp_path / "env.toml")}
    assert resolve_config_path("/x/opt.toml", env).origin == "option"
    loc = resolve_config_path(None, env)
    assert (loc.origin, loc.path) == ("env", tmp_path / "env.toml")
    del env["XFER_CONFIG"]
    loc = resolve_config_path(None, env)
    assert (loc.origin, loc.path, loc.exists) == (
        "default",
        tmp_path / ".config/xfer/remotes.toml",
        False,
    )
    legacy = tmp_path / ".config/sbatchman/remotes-config.toml"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(GOOD)
    loc = resolve_config_path(None, env)
    assert (loc.origin, loc.path) == ("sbatchman", legacy)
    assert "unchanged" in loc.reason
    ours = tmp_path / ".config/xfer/remotes.toml"
    ours.parent.mkdir(parents=True)
    ours.write_text(GOOD)
    assert resolve_config_path(None, env).path == ours  # ours wins once it exists
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    assert resolve_config_path(None, env).path == tmp_path / "xdg/xfer/remotes.toml"


def test_load_config_reads_sbatchman_file_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XFER_CONFIG", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    legacy = tmp_path / ".config/sbatchman/remotes-config.toml"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(GOOD)
    before = legacy.read_bytes()
    config = load_config()
    assert [c.name for c in config.clusters] == ["cluster-a", "cluster-b"]
    assert config.source == "~/.config/sbatchman/remotes-config.toml"
    assert legacy.read_bytes() == before


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config file at") as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.hint is not None and "xfer config init" in info.value.hint
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[global]\ntransfer_backend = "\xff"\n')
    with pytest.raises(ConfigError, match=r"bad.toml:2: not valid UTF-8"):
        load_config(bad)
