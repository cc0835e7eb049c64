"""Remote ~/$VAR expansion: parsed here, values fetched by a fixed script, nothing else run."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfer_core.errors import ConfigError
from xfer_core.sync.remote_path import Ref, needs_expansion, parse, query_command, refs, substitute

#: The only words the value-printing script may contain.
ALLOWED_WORD = re.compile(r'^("\$HOME"|"\$\{[A-Za-z_]\w*\+x\}"|"\$\{[A-Za-z_]\w*-\}"|~[\w.-]+)$')


def run_locally(command: str, env: dict[str, str]) -> bytes:
    return subprocess.run(["sh", "-c", command], capture_output=True, env=env, check=True).stdout


def test_parse() -> None:
    assert parse("~/a/$B/${C}d/$/x$") == [
        Ref("home"),
        "/a/",
        Ref("var", "B"),
        "/",
        Ref("var", "C"),
        "d/$/x$",
    ]
    assert parse("~bob/x") == [Ref("user", "bob"), "/x"]
    assert parse("a~/b") == ["a~/b"]
    assert not needs_expansion("plain/dir") and needs_expansion("~") and needs_expansion("a$B")
    with pytest.raises(ConfigError, match="unsupported expansion"):
        parse("${A:-/tmp}")


def test_expansion_through_a_real_shell() -> None:
    path = "~/x/$SCRATCH/${PROJ}/it's; `id` $(id)"
    wanted = refs(path)
    out = run_locally(query_command(wanted), {"HOME": "/home/u", "SCRATCH": "/s p", "PROJ": ""})
    assert substitute(path, wanted, out, cluster="c") == "/home/u/x//s p//it's; `id` $(id)"


def test_unset_variable_is_an_error_not_empty() -> None:
    wanted = refs("$NOPE/x")
    out = run_locally(query_command(wanted), {"HOME": "/h"})
    with pytest.raises(ConfigError, match=r"\$NOPE is not set on cluster 'c'"):
        substitute("$NOPE/x", wanted, out, cluster="c")


@given(st.text(alphabet="ab$~{}/;`'\" ()_x\\", max_size=30))
def test_script_runs_nothing_from_the_path(path: str) -> None:
    try:
        wanted = refs(path)
    except ConfigError:
        return
    command = query_command(wanted)
    assert command.startswith("sh -c ")
    script = shlex.split(command)[2]
    words = shlex.split(script, posix=False)
    assert words[:2] == ["printf", "'%s\\0'"]
    assert all(ALLOWED_WORD.match(w) for w in words[2:]), words
