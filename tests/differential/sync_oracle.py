"""The sync/fetch differential harness: one ``xfer sync``/``fetch`` run against raw rsync
on identical pre-states (see test_sync_vs_rsync.py for what is compared)."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xfer_core.testing import cli
from xfer_core.testing.services import SshServer

from .trees import Tree, describe, differences, materialise, snapshot

OUTSIDE = {"sentinel": ("file", b"outside the pair\n", 0o644, 1_600_000_000)}


@dataclass
class Env:
    sshd: SshServer
    ssh: list[str]
    xfer_env: dict[str, str]
    tmp: Path


def rsync_oracle(
    e: Env, src: str, dst: str, excludes: list[str], flags: list[str]
) -> subprocess.CompletedProcess[bytes]:
    """Raw rsync, as docs/sync.md says sync is: ``-rlpt --update`` + the flags."""
    argv = ["rsync", "-rlpt", "--update", "-s", *flags]
    argv += [f"--exclude={p}" for p in excludes]
    argv += ["-e", shlex.join(e.ssh), f"{src}/", f"{dst}/"]
    return subprocess.run(argv, capture_output=True, timeout=120, check=False)


def xfer(e: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.xfer(*args, env=e.xfer_env, timeout=120)


def toml_str(value: str) -> str:
    return json.dumps(value)  # JSON strings are TOML basic strings for these paths


def config(e: Env, kind: str, pairs: list[tuple[str, str, list[str]]]) -> str:
    """A config with one cluster on the test sshd and one pair per (local, remote, excludes)."""
    s = e.sshd
    text = f'[[clusters]]\nname = "d"\nhost = "{s.host}"\nport = {s.port}\nuser = "{s.user}"\n'
    text += f"key_path = {toml_str(str(s.key_path))}\n"
    for i, (local, remote, excludes) in enumerate(pairs):
        text += f'\n[[clusters.{kind}]]\nalias = "c{i}"\nlocal = {toml_str(local)}\n'
        text += f"remote = {toml_str(remote)}\nexcludes = {json.dumps(excludes)}\n"
    return text


def documented(src: Tree, rel: str, oracle: Any, got: Any) -> str:
    """Why ``rel`` may differ (a difference listed in docs/sync.md), or ""."""
    if (
        rel != "."
        and rel not in src
        and oracle is not None
        and got is not None
        and oracle[0] == got[0] == "dir"
        and oracle[1] == got[1]
    ):
        # a destination-only directory kept by --delete (it holds excluded entries): its
        # mtime is when the deletions in it happened, in both runs
        return "mtime of a destination-only directory"
    return ""


def kept_files(pre: Tree, oracle: Tree) -> set[str]:
    """Files of the pre-state that rsync left as they were."""
    return {r for r, v in pre.items() if v[0] == "file" and oracle.get(r) == v}


def run_differential(
    e: Env,
    tmp: Path,
    direction: str,
    backend: str,
    drawn: list[tuple[Tree, Tree, list[str]]],
    flags: list[str],
    tally: Callable[..., None] | None = None,
) -> None:
    """Move ``drawn`` (source, pre-state, excludes) pairs with xfer and with rsync and
    compare (see test_sync_vs_rsync.py); ``tally`` records the pairs compared."""
    s = e.sshd
    remote_base = s.mkdtemp(f"diff-{direction}-{backend}")
    local_base = tmp
    pairs: list[tuple[str, str, list[str]]] = []
    layout = []
    for i, (src_tree, dst_tree, excludes) in enumerate(drawn):
        src_side, dst_side = (
            (local_base, remote_base)
            if direction == "push"
            else (
                remote_base,
                local_base,
            )
        )
        src = src_side / f"src{i}"
        materialise(src, src_tree)
        sides = {}
        for who in ("xfer", "rsync"):
            materialise(dst_side / who / f"c{i}" / "outside", OUTSIDE)
            materialise(dst_side / who / f"c{i}" / "pair", dst_tree)
            sides[who] = dst_side / who / f"c{i}"
        if direction == "pull":
            s.chown(src)
        else:
            s.chown(remote_base)
        layout.append((src, sides))
        if direction == "push":
            pairs.append((str(src), str(sides["xfer"] / "pair"), excludes))
        else:
            pairs.append((str(sides["xfer"] / "pair"), str(src), excludes))
    src_before = [snapshot(src) for src, _ in layout]
    pre = [snapshot(sides["xfer"] / "pair") for _, sides in layout]
    conf = tmp / "remotes.toml"
    kind = "sync_dirs" if direction == "push" else "fetch_dirs"
    conf.write_text(config(e, kind, pairs))
    command = "sync" if direction == "push" else "fetch"
    proc = xfer(e, "-v", command, "--config", str(conf), "-b", backend, "--json", *flags)
    assert "Traceback" not in proc.stderr, proc.stderr
    done = {
        ev["alias"]: ev
        for ev in map(json.loads, proc.stdout.splitlines())
        if ev.get("event") == "pair_done"
    }
    assert len(done) == len(drawn), (proc.returncode, proc.stderr)
    problems = []
    lost_total = 0
    for i, ((src, sides), (src_tree, dst_tree, excludes)) in enumerate(
        zip(layout, drawn, strict=True)
    ):
        remote = f"{s.user}@{s.host}:"
        if direction == "push":
            oracle = rsync_oracle(
                e, str(src), remote + str(sides["rsync"] / "pair"), excludes, flags
            )
        else:
            oracle = rsync_oracle(
                e, remote + str(src), str(sides["rsync"] / "pair"), excludes, flags
            )
        want = snapshot(sides["rsync"] / "pair")
        got = snapshot(sides["xfer"] / "pair")
        error = done[f"c{i}"]["error"]
        case = (
            f"c{i} {direction} {backend} {flags} excludes={excludes}\n  src={describe(src_tree)}"
            f"\n  pre={describe(dst_tree)}"
        )
        assert snapshot(src) == src_before[i], f"{case}: the source changed"
        for who in ("xfer", "rsync"):
            assert snapshot(sides[who] / "outside") == snapshot_of(OUTSIDE), (
                f"{case}: {who} wrote outside the pair"
            )
        if oracle.returncode not in (0, 23):
            pytest.fail(f"{case}: the oracle failed: {oracle.stderr.decode(errors='replace')}")
        if oracle.returncode == 0:
            if error:
                problems.append(f"{case}\n  rsync completed, xfer failed: {error}")
            diff = {
                rel: pair
                for rel, pair in differences(want, got).items()
                if not documented(src_tree, rel, *pair)
            }
            if diff:
                problems.append(f"{case}\n  DIFF (rsync | xfer): {describe(diff)}")
        else:
            if not error:
                problems.append(
                    f"{case}\n  rsync exit 23 ({oracle.stderr.decode(errors='replace')!r}) "
                    "but xfer reported the pair done"
                )
            lost = {r for r in kept_files(pre[i], want) if got.get(r) != pre[i][r]}
            lost_total += len(lost)
            if lost:
                problems.append(f"{case}\n  files rsync kept were lost: {sorted(lost)}")
    failed = any(d["error"] for d in done.values())
    assert proc.returncode == (1 if failed else 0), (proc.returncode, proc.stderr)
    if tally is not None:
        tally(cases=len(drawn), lost=lost_total)
    assert not problems, "\n".join(problems)


def snapshot_of(tree: Tree) -> Tree:
    return {".": ("dir", 0o755, 1_600_000_000), **tree}
