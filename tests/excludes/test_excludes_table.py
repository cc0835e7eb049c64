"""Table-driven cases for the exclude matcher, and the merge precedence of the seed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer_core.config.model import Cluster, Config, DirPair, GlobalConfig
from xfer_core.errors import ConfigError
from xfer_core.sync.excludes import ExcludeMatcher, merge_excludes, rsync_exclude_arg

# (pattern, relpath, is_dir, excluded)
CASES = [
    # a name without "/" matches the last component at any depth
    ("build", "build", True, True),
    ("build", "src/build", True, True),
    ("build", "src/build/x.o", False, True),  # below an excluded directory
    ("build", "src/builder", True, False),
    ("build", "rebuild", False, False),
    # "*" stays inside one component, "**" crosses "/"
    ("*.pyc", "a/b/c.pyc", False, True),
    ("*.pyc", "a/b/c.py", False, False),
    ("data/*.csv", "data/x.csv", False, True),
    ("data/*.csv", "data/sub/x.csv", False, False),
    ("data/**.csv", "data/sub/x.csv", False, True),
    ("/data/**", "data/a/b", False, True),
    ("/data/**", "data", True, False),
    ("/data/***", "data", True, True),
    ("**/logs", "logs", True, True),  # "**/" also matches at the root
    ("**/logs", "a/b/logs", True, True),
    ("a/**/b", "a/b", True, False),  # "**" between slashes needs a middle
    ("a/**/b", "a/x/y/b", True, True),
    # "?" and classes match one character, never "/"
    ("?.txt", "a.txt", False, True),
    ("?.txt", "ab.txt", False, False),
    ("[ab].txt", "b.txt", False, True),
    ("[!ab].txt", "b.txt", False, False),
    ("[!ab].txt", "c.txt", False, True),
    ("x[0-9]", "x7", False, True),
    ("x[[:digit:]]", "x7", False, True),
    ("a?b", "a/b", False, False),
    # an inner "/" matches the end of the path on a component boundary
    ("src/tmp", "src/tmp", True, True),
    ("src/tmp", "proj/src/tmp", True, True),
    ("src/tmp", "mysrc/tmp", True, False),
    # a leading "/" anchors to the transfer root
    ("/results", "results", True, True),
    ("/results", "a/results", True, False),
    # a trailing "/" matches directories only
    ("cache/", "cache", True, True),
    ("cache/", "cache", False, False),
    ("cache/", "x/cache/f", False, True),
    # escapes, only when the pattern has a wildcard
    ("\\*", "*", False, True),
    ("\\*", "a", False, False),
    ("a\\b", "a\\b", False, True),
    # malformed classes never match (like rsync)
    ("[a", "[a", False, False),
    ("[[:nope:]]", "a", False, False),
    # non-ASCII: one "?" is one byte, as in rsync
    ("é", "dir/é", False, True),
    ("?", "é", False, False),
    ("??", "é", False, True),
]


@pytest.mark.parametrize(("pattern", "relpath", "is_dir", "expected"), CASES)
def test_table(pattern: str, relpath: str, is_dir: bool, expected: bool) -> None:
    assert ExcludeMatcher([pattern]).excluded(relpath, is_dir) is expected


def test_matches_ignores_parents_excluded_does_not() -> None:
    m = ExcludeMatcher(["build/"])
    assert not m.matches("build/x.o", False)
    assert m.excluded("build/x.o", False)
    assert m.excluded(b"build/x.o", False)


def test_non_utf8_names() -> None:
    name = b"caf\xe9.tmp"
    m = ExcludeMatcher(["*.tmp"])
    assert m.excluded(name, False)
    assert m.excluded(name.decode("utf-8", "surrogateescape"), False)


def test_no_patterns_excludes_nothing() -> None:
    m = ExcludeMatcher([])
    assert not m
    assert not m.excluded("a/b", False)
    assert m.rsync_args() == []


def test_patterns_and_rsync_args() -> None:
    m = ExcludeMatcher(["a", "- b", "+ c", "!", "!d"])
    assert m.patterns == ["a", "- b", "+ c", "!", "!d"]
    assert m.rsync_args() == [
        "--exclude=a",
        "--filter=- - b",
        "--filter=- + c",
        "--filter=- !",
        "--exclude=!d",
    ]
    assert rsync_exclude_arg("-x") == "--exclude=-x"


@pytest.mark.parametrize("bad", ["", "a\0b"])
def test_unusable_patterns_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        ExcludeMatcher(["ok", bad])


def _config() -> tuple[Config, Cluster, DirPair]:
    pair = DirPair(alias="p", local="/l", remote="r", excludes=["pair", "dup"])
    cluster = Cluster(
        name="c",
        host="h",
        excludes=["cl", "dup"],
        sync_excludes=["cl-sync"],
        fetch_excludes=["cl-fetch"],
        sync_dirs=[pair],
    )
    g = GlobalConfig(
        common_excludes=["common", "dup"], sync_excludes=["g-sync"], fetch_excludes=["g-fetch"]
    )
    return Config(global_=g, clusters=[cluster]), cluster, pair


def test_merge_order_push_and_pull() -> None:
    config, cluster, pair = _config()
    assert merge_excludes(config, cluster, pair, "push", ["cli"]) == [
        "common", "g-sync", "cl", "cl-sync", "pair", "dup", "cli",
    ]  # fmt: skip
    assert merge_excludes(config, cluster, pair, "pull", ["dup"]) == [
        "common", "g-fetch", "cl", "cl-fetch", "pair", "dup",
    ]  # fmt: skip


def test_merge_rejects_unknown_direction() -> None:
    config, cluster, pair = _config()
    with pytest.raises(ValueError):
        merge_excludes(config, cluster, pair, "sideways", [])  # type: ignore[arg-type]


_PAT = st.sampled_from(["a", "b", "c", "d", "*.o", "/x", "y/"])
_LAYER = st.lists(_PAT, max_size=4)


@given(
    common=_LAYER, gsync=_LAYER, gfetch=_LAYER, cl=_LAYER, csync=_LAYER, cfetch=_LAYER,
    pair_ex=_LAYER, cli=_LAYER, direction=st.sampled_from(["push", "pull"]),
)  # fmt: skip
def test_merge_precedence_property(
    common: list[str], gsync: list[str], gfetch: list[str], cl: list[str], csync: list[str],
    cfetch: list[str], pair_ex: list[str], cli: list[str], direction: str,
) -> None:  # fmt: skip
    pair = DirPair(alias="p", local="/l", remote="r", excludes=pair_ex)
    cluster = Cluster(name="c", host="h", excludes=cl, sync_excludes=csync, fetch_excludes=cfetch)
    g = GlobalConfig(common_excludes=common, sync_excludes=gsync, fetch_excludes=gfetch)
    config = Config(global_=g, clusters=[cluster])
    merged = merge_excludes(config, cluster, pair, direction, cli)  # type: ignore[arg-type]
    push = direction == "push"
    layers = [common, gsync if push else gfetch, cl, csync if push else cfetch, pair_ex, cli]
    flat = [p for layer in layers for p in layer]
    # exactly the patterns of the direction's layers, each once
    assert sorted(merged) == sorted(set(flat))
    # the other direction's layers never leak in
    other = set(gfetch if push else gsync) | set(cfetch if push else csync)
    assert not (set(merged) - set(flat)) and (set(merged) & other) <= set(flat)
    # each pattern sits where its LAST occurrence was: relative order of last positions kept
    last = {p: i for i, p in enumerate(flat)}
    assert merged == sorted(set(flat), key=last.__getitem__)
    # the CLI's patterns come last, in their own (last-occurrence) order
    if cli:
        tail = sorted(set(cli), key=lambda p: max(i for i, q in enumerate(cli) if q == p))
        assert merged[-len(tail) :] == tail
