"""``xfer sync`` / ``xfer fetch`` against raw rsync, on random trees and pre-states.

Each example draws a few pairs: a source tree, a destination pre-state derived from it
(files kept, missing, changed with the same size and mtime, older, newer, read-only;
directories read-only; files, directories and symlinks turned into one another;
symlinks to files, directories, nowhere and out of the pair; unrelated extras, some
excluded) and the pair's excludes, plus ``--delete`` / ``--checksum``. One ``xfer sync``
(or ``fetch``) moves every pair through the real sshd with the backend under test; raw
``rsync -rlpt --update`` (what docs/sync.md says sync is) with the same ``--exclude``
rules and flags moves an identical copy of each pre-state through the same sshd. Then:

- a pair rsync completes is completed by xfer, and the two destination trees are equal
  (type, content, mode bits, mtime of files and directories, symlink targets), except
  for the differences listed in docs/sync.md "Differences from rsync";
- a pair rsync cannot complete (exit 23) is reported failed by xfer, and every file
  that rsync left in place is still there;
- the source, and a sentinel directory next to the destination, are untouched;
- the exit status is 1 exactly when a pair failed.

The default suite runs a fixed (derandomized) slice; ``XFER_SOAK=1`` runs a longer one.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability.conftest import Tally

from .profiles import FAST, SOAK
from .sync_oracle import Env, run_differential
from .trees import BASE, Tree, cases

CLASS = "differential: sync/fetch vs rsync"

pytestmark = pytest.mark.sshd

#: Pairs per xfer run (one example).
PAIRS = 5


def pair_lists(
    hostile: bool, backend: str
) -> st.SearchStrategy[list[tuple[Tree, Tree, list[str]]]]:
    one = cases(hostile=hostile, sftp=backend == "sftp")  # see trees.cases
    return st.lists(one, min_size=PAIRS, max_size=PAIRS)


FLAGS = st.sampled_from([[], ["--delete"], ["--checksum"], ["--delete", "--checksum"]])
BACKENDS = ["rsync", "sftp"]
DIRECTIONS = ["push", "pull"]


def check(
    env: Env,
    factory: pytest.TempPathFactory,
    backend: str,
    direction: str,
    data: st.DataObject,
    tally: Tally,
    hostile: bool = False,
) -> None:
    drawn = data.draw(pair_lists(hostile=hostile, backend=backend), label="pairs")
    flags = data.draw(FLAGS, label="flags")
    tmp = factory.mktemp(f"{direction}-{backend}")
    run_differential(env, tmp, direction, backend, drawn, flags, tally)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("backend", BACKENDS)
@settings(FAST, max_examples=3)
@given(data=st.data())
def test_sync_matches_rsync(
    env: Env,
    tmp_path_factory: pytest.TempPathFactory,
    backend: str,
    direction: str,
    data: st.DataObject,
    tally: Tally,
) -> None:
    """Names from a plain pool and the conformance suite's hostile names (one not UTF-8)."""
    check(env, tmp_path_factory, backend, direction, data, tally, hostile=True)


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("backend", BACKENDS)
@settings(SOAK, max_examples=40)
@given(data=st.data())
def test_soak_sync_matches_rsync(
    env: Env,
    tmp_path_factory: pytest.TempPathFactory,
    backend: str,
    direction: str,
    data: st.DataObject,
    tally: Tally,
) -> None:
    hostile = data.draw(st.booleans(), label="hostile")
    check(env, tmp_path_factory, backend, direction, data, tally, hostile=hostile)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_sftp_link_over_other_kinds(
    env: Env, tmp_path_factory: pytest.TempPathFactory, direction: str, tally: Tally
) -> None:
    """Source symlinks where the destination holds a file, an empty and a full directory
    (issue 16: sftp deleted what was in the way, then failed with "No such file")."""
    src: Tree = {"a": ("file", b"a\n", 0o644, BASE), "l": ("link", "a"), "m": ("link", "a")}
    src["n"] = ("link", "nowhere")
    pre: Tree = {"l": ("file", b"was a file\n", 0o644, BASE), "m": ("dir", 0o755, BASE)}
    pre |= {"n": ("dir", 0o755, BASE), "n/x": ("file", b"x\n", 0o644, BASE)}
    drawn = [(src, pre, []), (src, pre, [])]
    tmp = tmp_path_factory.mktemp(f"{direction}-links")
    run_differential(env, tmp, direction, "sftp", drawn, ["--delete"], tally)
