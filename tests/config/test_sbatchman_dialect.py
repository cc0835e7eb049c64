"""sbatchman's config files as written: accepted the way sbatchman accepts them, with warnings.

The fixtures in ``sbatchman_examples/`` are sbatchman's own documented examples (see its README).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer_core.config.load import (
    ConfigValidationError,
    check_text,
    derive_aliases,
    dialect_of,
    parse_config,
    read_config,
)
from xfer_core.config.paths import ConfigLocation
from xfer_core.testing import cli

EXAMPLES = Path(__file__).parent / "sbatchman_examples"
SBM = "remotes-config.toml"


def example(name: str) -> str:
    return (EXAMPLES / name).read_text()


def xfer(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return cli.xfer(*args, cwd=cwd, env=env, timeout=120)


def test_dialect_is_chosen_by_sbatchmans_file_name() -> None:
    assert dialect_of("/home/a/.config/sbatchman/remotes-config.toml") == "sbatchman"
    assert dialect_of("/tmp/remotes-config.toml") == "sbatchman"
    assert dialect_of("/home/a/.config/xfer/remotes.toml") == "xfer"


@pytest.mark.parametrize(
    "name", ["sync_docs.toml", "fetch_docs.toml", "default_config.toml", "default_example.toml"]
)
def test_documented_examples_load_without_warnings(name: str) -> None:
    _, problems, warnings = check_text(example(name), SBM, "sbatchman")
    assert problems == [] and warnings == []
    parse_config(example(name), SBM, dialect="sbatchman")


def test_fetch_example_without_alias_gets_one_from_remote() -> None:
    config = parse_config(example("fetch_docs.toml"), SBM, dialect="sbatchman")
    (pair,) = config.clusters[0].fetch_dirs
    assert pair.alias == "myproject" and pair.remote == "~/myproject"


def test_aliad_typo_warns_with_file_line_and_does_not_abort() -> None:
    text = example("fetch_docs_aliad.toml")
    line = text.splitlines().index('  aliad    = "myproject"') + 1
    config = parse_config(text, SBM, dialect="sbatchman")
    assert config.warnings == [
        f"{SBM}:{line}: clusters[0].fetch_dirs[0].aliad: unknown key, ignored; "
        "did you mean 'alias'? (as sbatchman does)"
    ]
    assert config.clusters[0].fetch_dirs[0].alias == "myproject"  # derived, as without the typo


def test_our_own_format_stays_strict_for_the_same_text() -> None:
    with pytest.raises(ConfigValidationError, match=r"aliad: unknown key; did you mean 'alias'\?"):
        parse_config(example("fetch_docs_aliad.toml"), "remotes.toml")


def test_tui_written_quirks_are_read_as_sbatchman_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = example("tui_written.toml")
    lines = text.splitlines()
    monkeypatch.chdir(tmp_path)
    config = parse_config(text, SBM, base_dir="/elsewhere", dialect="sbatchman")
    (cluster,) = config.clusters
    assert cluster.port == 2299
    assert config.global_.transfer_backend == "rsync"
    assert [p.alias for p in cluster.sync_dirs] == ["a/data", "b/data"]
    (runs,) = cluster.fetch_dirs
    # relative local: the current directory, as sbatchman does (not the config's folder)
    assert runs.alias == "runs" and runs.local == str(tmp_path / "results" / "runs")
    assert config.warnings == [
        f"{SBM}:{lines.index(text_line) + 1}: {w} (as sbatchman does)"
        for text_line, w in [
            ('port = "2299"', "clusters[0].port: a quoted number, read as 2299"),
            ("[[clusters.dirs]]", "clusters[0].dirs: legacy key, read as 'fetch_dirs'"),
        ]
    ]


def test_tui_quirks_are_errors_in_our_own_format() -> None:
    _, problems, _ = check_text(example("tui_written.toml"), "remotes.toml")
    messages = {(p.key, p.message) for p in problems}
    assert ("clusters[0].port", "expected an integer, got a string") in messages
    assert ("clusters[0].dirs", "legacy sbatchman key; rename it to 'fetch_dirs'") in messages
    assert ("clusters[0].sync_dirs[0]", "'alias' is required") in messages


def test_strict_check_of_sbatchmans_file_lists_the_warnings_as_errors(tmp_path: Path) -> None:
    path = tmp_path / SBM
    path.write_text(example("fetch_docs_aliad.toml"))
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": "", "XFER_CONFIG": ""}
    lenient = xfer("config", "validate", "--config", str(path), cwd=tmp_path, env=env)
    assert lenient.returncode == 0, lenient.stderr
    assert "xfer: warning: " in lenient.stderr and "aliad: unknown key, ignored" in lenient.stderr
    strict = xfer("config", "validate", "--strict", "--config", str(path), cwd=tmp_path, env=env)
    assert strict.returncode == 2
    assert "xfer: error: " in strict.stderr and "aliad: unknown key, ignored" in strict.stderr


def test_read_config_prints_each_warning_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / SBM
    path.write_text(example("fetch_docs_aliad.toml"))
    read_config(ConfigLocation(path, "option", "given with --config"))
    err = capsys.readouterr().err
    assert err.count("xfer: warning:") == 1 and "aliad" in err


def test_legacy_dirs_is_ignored_when_fetch_dirs_is_set() -> None:
    text = (
        example("fetch_docs.toml") + '\n  [[clusters.dirs]]\n  remote = "~/old"\n  local = "old"\n'
    )
    config = parse_config(text, SBM, dialect="sbatchman")
    assert [p.remote for p in config.clusters[0].fetch_dirs] == ["~/myproject"]
    assert "legacy key ignored: 'fetch_dirs' is set" in config.warnings[0]


def test_a_bad_port_string_is_still_an_error_in_sbatchmans_file() -> None:
    text = example("sync_docs.toml").replace("port     = 22", 'port     = "twenty-two"')
    with pytest.raises(ConfigValidationError, match="port: expected an integer, got a string"):
        parse_config(text, SBM, dialect="sbatchman")


def test_derived_aliases_examples() -> None:
    assert derive_aliases(["~/a/data", "~/b/data", "~/runs/"]) == ["a/data", "b/data", "runs"]
    assert derive_aliases(["~/x", "~/x"]) == ["x", "x-2"]
    assert derive_aliases(["~/proj"], taken=["proj"]) == ["~/proj"]


@given(
    st.lists(
        st.lists(
            st.sampled_from(["~", "a", "b", "data", "runs", "$HOME"]), min_size=1, max_size=4
        ).map("/".join),
        max_size=8,
    ),
    st.lists(st.sampled_from(["data", "a/data", "runs", "x"]), max_size=3, unique=True),
)
def test_derived_aliases_are_unique_and_stable(remotes: list[str], taken: list[str]) -> None:
    aliases = derive_aliases(remotes, taken)
    assert len(aliases) == len(remotes)
    assert len(set(aliases) | set(taken)) == len(aliases) + len(taken)
    assert derive_aliases(remotes, taken) == aliases
    assert all(a for a in aliases)


def test_sbatchman_dialect_applies_to_the_file_found_at_sbatchmans_place(tmp_path: Path) -> None:
    home = tmp_path / "home"
    legacy = home / ".config" / "sbatchman" / SBM
    legacy.parent.mkdir(parents=True)
    shutil.copy(EXAMPLES / "tui_written.toml", legacy)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": "", "XFER_CONFIG": ""}
    res = xfer("config", "show", "--json", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("xfer: warning:") == 2
    assert '"local":"' + str(tmp_path / "results" / "runs") in res.stdout.replace(" ", "")
