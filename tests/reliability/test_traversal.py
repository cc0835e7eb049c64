"""Hostile input: paths that try to leave the roots.

Manifests naming ``..`` or absolute paths (in ``path`` or in the exact-bytes
``meta.path_b64``) are refused with exit 2 and no output by ``manifest shard`` and
``run``; remote trees with symlinks pointing out of the root, and a local destination
holding a symlink to elsewhere, never make ``fetch`` write outside its root.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from xfer_core.testing.services import SshServer

from .conftest import Tally
from .helpers import canaries, cluster_config, local_run, read_tree, ssh_env, write_tree, xfer

CLASS = "hostile input: path traversal"


def _b64(name: bytes) -> dict[str, str]:
    return {"path_b64": base64.b64encode(name).decode()}


BAD_RECORDS: dict[str, dict[str, object]] = {
    "dotdot": {"path": "../escape.txt"},
    "inner dotdot": {"path": "a/../../escape.txt"},
    "absolute": {"path": "/tmp/escape.txt"},
    "b64 dotdot": {"path": "harmless.txt", "meta": _b64(b"../escape.txt")},
    "b64 absolute": {"path": "harmless.txt", "meta": _b64(b"/tmp/escape.txt")},
}


def _manifest(path: Path, src: Path, dst: Path, bad: dict[str, object]) -> None:
    good = {"path": "ok.txt", "size": 3}
    lines = [
        {
            **rec,
            "size": 3,
            "schema": "xfer.manifest.v1",
            "source_root": str(src),
            "dest_root": str(dst),
        }
        for rec in (good, bad)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.mark.parametrize(
    "kind",
    list(BAD_RECORDS),
)
def test_traversal_manifest_refused_by_shard_and_run(
    tmp_path: Path, kind: str, tally: Tally
) -> None:
    src, dst = tmp_path / "s" / "src", tmp_path / "d" / "dst"
    write_tree(src, ["ok.txt"])
    (tmp_path / "s" / "escape.txt").write_text("outside source\n")
    run = tmp_path / "run"
    _manifest(run / "manifest.jsonl", src, dst, BAD_RECORDS[kind])
    shard = xfer(
        "manifest",
        "shard",
        "--in",
        str(run / "manifest.jsonl"),
        "--num-shards",
        "1",
        "--outdir",
        str(tmp_path / "shards"),
    )
    assert shard.returncode == 2, shard.stderr
    assert not (tmp_path / "shards").exists()
    proc = xfer(*local_run(run, src, dst, 1))
    assert proc.returncode == 2, proc.stderr
    assert "manifest.jsonl:2:" in proc.stderr
    assert not dst.exists() and not (run / "shards").exists()
    assert not (tmp_path / "d").exists()
    tally(cases=1)


@pytest.mark.sshd
@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_fetch_never_writes_outside_the_destination(
    sshd: SshServer, tmp_path: Path, backend: str, tally: Tally
) -> None:
    """The cluster's tree holds symlinks out of its root (relative and absolute, to
    files and to dirs), and the local destination already holds a symlinked dir where
    the cluster has a real one: every write stays inside the destination root."""
    rdir = sshd.mkdtemp("trav")
    outside_remote = rdir / "outside"
    write_tree(outside_remote, ["target.txt"])
    root = rdir / "root"
    files = write_tree(root, ["real/file.txt", "top.txt"])
    os.symlink("../outside", root / "rel-dir-link")
    os.symlink("../outside/target.txt", root / "rel-file-link")
    os.symlink(str(outside_remote), root / "abs-dir-link")
    os.symlink("/etc/passwd", root / "abs-file-link")
    sshd.chown(rdir)
    # locally: a victim dir outside the destination, and a trap symlink inside it
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(victim), dest / "real")
    remote = f"~/{rdir.relative_to(sshd.home)}/root"
    config = cluster_config(
        tmp_path / "remotes.toml",
        sshd,
        fetch_dirs=[{"alias": "r", "remote": remote, "local": str(dest)}],
    )
    proc = xfer("fetch", "--config", str(config), "-b", backend, env=ssh_env(sshd, tmp_path))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert sorted(os.listdir(victim)) == [], "fetch wrote through a local symlink"
    assert sorted(os.listdir(tmp_path)) == sorted(["victim", "dest", "remotes.toml", "ssh_config"])
    # links arrive as links (never followed into copies of outside content)
    for link in ("rel-dir-link", "rel-file-link", "abs-dir-link", "abs-file-link"):
        path = dest / link
        assert not path.exists() or path.is_symlink(), link
    got = read_tree(dest)
    assert "top.txt" in got and got["top.txt"] == files["top.txt"]
    assert canaries(tmp_path) == []
    tally(cases=6)


@pytest.mark.parametrize("kind", ["b64 dotdot", "b64 absolute"])
def test_exact_bytes_traversal_writes_nothing_outside_and_is_never_done(
    tmp_path: Path, kind: str, tally: Tally
) -> None:
    """Until the bug above is fixed: the run may accept such a record, but rclone
    never writes outside the destination and the shard is never reported done."""
    src, dst = tmp_path / "s" / "src", tmp_path / "d" / "dst"
    write_tree(src, ["ok.txt"])
    (tmp_path / "s" / "escape.txt").write_text("outside source\n")
    run = tmp_path / "run"
    _manifest(run / "manifest.jsonl", src, dst, BAD_RECORDS[kind])
    proc = xfer(*local_run(run, src, dst, 1, "--max-attempts", "1"))
    assert proc.returncode in (1, 2), proc.stderr
    outside = tmp_path / "d"
    assert not outside.exists() or os.listdir(outside) == ["dst"]
    assert not Path("/tmp/escape.txt").exists()
    state = run / "state"
    false_done = len(list(state.glob("*.done"))) if state.exists() else 0
    assert false_done == 0
    tally(cases=1, false_done=false_done)


@pytest.mark.parametrize(
    "meta,needle",
    [
        (_b64(b"../escape.txt"), "climbs out"),
        (_b64(b"/tmp/escape.txt"), "absolute path"),
        ({"path_b64": 5}, "not base64"),
        ({"path_b64": "!!not base64!!"}, "not base64"),
    ],
)
def test_exact_bytes_name_checked_by_the_reader_and_combine(
    tmp_path: Path, meta: dict[str, object], needle: str, tally: Tally
) -> None:
    """``meta.path_b64`` (the name actually copied) is held to the same rules as ``path``:
    ``manifest combine`` (and every reader of the manifest) refuses it, exit 2, no output."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"path": "harmless.txt", "size": 1, "meta": meta}) + "\n")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"path": "ok.txt", "size": 1}) + "\n")
    out = tmp_path / "out.jsonl"
    proc = xfer("manifest", "combine", str(good), str(bad), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:1: " in proc.stderr and needle in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr and not out.exists()
    tally(cases=1)
