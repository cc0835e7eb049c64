"""Hostile input that used to crash xfer or slip past it (issue 19, item 9).

A NUL byte in a config string (host, remote, local...) was "internal error:
ValueError"; a deeply nested ``meta`` in a manifest line was "internal error:
RecursionError"; and the worker copied whatever a shard's ``.files`` list named,
never checking it against the ``files_sha256`` that ``manifest shard`` recorded.
Now: one-line config error (exit 2, FILE:LINE: key), one-line manifest error
(exit 2, FILE:LINE) with a depth limit for ``meta``, and a changed list fails its
shard with the reason before anything is copied.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.helpers import local_run, read_tree, write_tree, xfer
from xfer_core.manifest.record import MAX_META_DEPTH

from .conftest import Tally

CLASS = "security: robustness (NUL, nesting, tampered lists)"

_CONFIG = """\
[[clusters]]
name = "c"
host = {host}

  [[clusters.sync_dirs]]
  alias = "p"
  local = {local}
  remote = {remote}

  [[clusters.fetch_dirs]]
  alias = "f"
  local = {local}
  remote = "~/out"
"""


@pytest.mark.parametrize("key,line", [("host", 3), ("remote", 8), ("local", 7)])
def test_nul_in_config_string_is_a_config_error(
    tmp_path: Path, key: str, line: int, tally: Tally
) -> None:
    local = tmp_path / "l"
    local.mkdir()
    values = {"host": '"127.0.0.1"', "local": json.dumps(str(local)), "remote": '"~/x"'}
    values[key] = values[key][:-1] + '\\u0000z"'
    config = tmp_path / "remotes.toml"
    config.write_text(_CONFIG.format(**values))
    before = config.read_bytes()
    for argv in (
        ["sync", "--dry-run", "-b", "rsync"],
        ["sync", "--dry-run", "-b", "sftp"],
        ["fetch", "--dry-run"],
        ["config", "validate"],
    ):
        proc = xfer(*argv, "--config", str(config))
        assert proc.returncode == 2, (argv, proc.stderr)
        first = proc.stderr.splitlines()[0]
        assert first.startswith(f"xfer: error: {config}:{line}: "), proc.stderr
        assert "must not contain a NUL byte" in first and "internal error" not in proc.stderr
    assert config.read_bytes() == before and not list(local.iterdir())
    tally(cases=4)


def _record(meta: object) -> bytes:
    return (
        json.dumps(
            {
                "schema": "xfer.manifest.v1",
                "path": "a.txt",
                "size": 1,
                "source_root": "/s",
                "dest_root": "/d",
                "meta": {"x": meta},
            }
        ).encode()
        + b"\n"
    )


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_META_DEPTH + 1, 100_000])
def test_deeply_nested_meta_is_a_bad_manifest_line(
    tmp_path: Path, depth: int, tally: Tally
) -> None:
    ok = _record("fine")
    deep = ok.replace(b'"fine"', _nested(depth - 1).encode())  # meta itself is level 1
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(ok + deep)
    outs = {
        "analyze": ["manifest", "analyze", "--in", str(manifest)],
        "shard": [
            "manifest",
            "shard",
            "--in",
            str(manifest),
            "--outdir",
            str(tmp_path / "sh"),
            "-n",
            "1",
        ],
        "verify": ["manifest", "verify", "--in", str(manifest), "--dest", str(tmp_path)],
        "rebase": [
            "manifest",
            "rebase",
            "--in",
            str(manifest),
            "--out",
            str(tmp_path / "r.jsonl"),
            "--dest-root",
            "/e",
        ],
        "combine": ["manifest", "combine", str(manifest), "--out", str(tmp_path / "c.jsonl")],
    }
    for name, argv in outs.items():
        proc = xfer(*argv)
        assert proc.returncode == 2, (name, proc.stderr)
        first = proc.stderr.splitlines()[0]
        assert first.startswith(f"xfer: error: {manifest}:2: "), (name, proc.stderr)
        assert "nest" in first and "internal error" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"], "something was written"
    tally(cases=len(outs))


def test_meta_at_the_depth_limit_is_accepted(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(_record("fine").replace(b'"fine"', _nested(MAX_META_DEPTH - 1).encode()))
    proc = xfer("manifest", "analyze", "--in", str(manifest))
    assert proc.returncode == 0, proc.stderr


def test_worker_refuses_a_changed_files_list(tmp_path: Path, tally: Tally) -> None:
    """A name added to a shard's .files after sharding (here: a file the manifest never
    listed) fails the shard with the reason; nothing of it is copied. The other shard runs."""
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    files = write_tree(src, [f"f{i}.txt" for i in range(6)])
    prep = xfer(*local_run(run, src, dst, 2)[:-1])  # rendered, not started
    assert prep.returncode == 0, prep.stderr
    (src / "private.key").write_text("not in the manifest\n")
    listed = run / "shards" / "shard_000000.files"
    original = listed.read_bytes()
    listed.write_bytes(original + b"private.key\n")
    go = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert go.returncode == 1, go.stderr
    reason = (run / "state" / "shard_0.fail").read_text()
    assert "shard_000000.files does not match its files_sha256" in reason, reason
    assert "shard 0: failed" in go.stderr or "shard 0:" in go.stderr, go.stderr
    copied = read_tree(dst)
    assert "private.key" not in copied
    kept = [n.decode() for n in original.splitlines()]
    assert not set(kept) & set(copied), "a name of the refused shard was copied"
    assert copied and all(copied[n] == files[n] for n in copied)
    assert (run / "state" / "shard_1.done").exists()
    # the list put back as it was: the shard runs
    listed.write_bytes(original)
    again = xfer("run", "--run-dir", str(run), "--scheduler", "local", "--submit")
    assert again.returncode == 0, again.stderr
    assert read_tree(dst) == files
    tally(cases=1)
