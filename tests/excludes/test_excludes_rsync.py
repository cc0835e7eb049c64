"""The matcher against real rsync: same tree, same patterns, same set of sent paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rsync_oracle import RSYNC, build_tree, matcher_sent, rsync_sent, walker_sent

pytestmark = pytest.mark.skipif(RSYNC is None, reason="rsync is not installed")

#: Hand-picked patterns covering every rule of rsync(1) "INCLUDE/EXCLUDE PATTERN RULES".
PATTERNS = [
    "x",
    "a",
    "a/",
    "/a",
    "/a/",
    "b/",
    "a/b",
    "/a/b",
    "a/b/",
    "a/b/x",
    "*",
    "*.b",
    "a*",
    "*b",
    "?",
    "??",
    "a?b",
    "\\?",
    "[ab]",
    "[!a]",
    "[^a]",
    "[a-b]",
    "[[:alpha:]]",
    "[[:alpha:]][[:alpha:]]",
    "\\[a]",
    "[[]a]",
    "[]a]",
    "b\\*",
    "b*",
    "a\\b",
    "é",
    "?",
    "c d",
    "**",
    "**/x",
    "**/a",
    "a/**",
    "a/***",
    "/a/***",
    "a/**/x",
    "**/b/x",
    "a**",
    "*/x",
    "*/*/x",
    "/*/x",
    "/*",
    "/*/",
    "a/*",
    "*/",
    "**/",
    "lnk",
    "lnk/",
    "empty/",
    "[a",
    "a[",
    "[[:foo:]]",
    "a\\",
    "a[/]b",
    "a[/b]",
    "/",
    "- x",
    "+ x",
    "!",
    "!x",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("excl") / "src"
    build_tree(root)
    return root


@pytest.mark.parametrize("pattern", PATTERNS)
def test_single_pattern_matches_rsync(tree: Path, pattern: str) -> None:
    expected = rsync_sent(tree, [pattern])
    assert matcher_sent(tree, [pattern]) == expected
    assert walker_sent(tree, [pattern]) == expected


def test_pattern_lists_match_rsync(tree: Path) -> None:
    for patterns in (
        ["a/", "*.b", "/b/ab/"],
        ["[ab]", "é", "c d"],
        ["**/ab/x", "/a/***", "lnk"],
        ["- x", "!", "b*"],
    ):
        assert matcher_sent(tree, patterns) == rsync_sent(tree, patterns), patterns


def test_nothing_excluded_without_patterns(tree: Path) -> None:
    sent = rsync_sent(tree, [])
    assert matcher_sent(tree, []) == sent
    assert "a/b/ab/x" in sent  # sanity: the tree is as deep as the test assumes


_TOKENS = st.sampled_from(
    [
        "a",
        "b",
        "ab",
        "x",
        ".",
        "/",
        "/",
        "*",
        "**",
        "***",
        "?",
        "[ab]",
        "[!a]",
        "[a-b]",
        "[",
        "]",
        "\\",
        "\\*",
        "é",
        " ",
        "-",
        "!",
        "[[:alpha:]]",
    ]
)
_JOINED = st.lists(_TOKENS, min_size=1, max_size=5).map("".join)
_COMPONENT = st.sampled_from(
    ["a", "b", "x", "ab", "*", "**", "***", "?", "a*", "*b", "[ab]", "[!a]", "[a-b]", "\\*", "é"]
)
#: Path-shaped patterns: optional anchor, 1-3 components, optional trailing "/".
_STRUCTURED = st.builds(
    lambda anchor, parts, dir_only: anchor + "/".join(parts) + dir_only,
    st.sampled_from(["", "/"]),
    st.lists(_COMPONENT, min_size=1, max_size=3),
    st.sampled_from(["", "/"]),
)
_PATTERN = st.one_of(
    _STRUCTURED,
    _JOINED,
    st.text(alphabet="ab/*?[]!-\\.x", min_size=1, max_size=6),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(patterns=st.lists(_PATTERN, min_size=1, max_size=3))
def test_generated_patterns_match_rsync(tree: Path, patterns: list[str]) -> None:
    assert matcher_sent(tree, patterns) == rsync_sent(tree, patterns)
