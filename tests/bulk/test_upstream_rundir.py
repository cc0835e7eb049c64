"""A run dir written by upstream xfer (FluidNumerics/xfer) is resumed safely.

The fixture writes the files upstream writes, in its formats (manifest records with its
fields, ``shards.meta.json`` named ``xfer.shards.v1`` with its keys, empty ``.done``
markers, ``config.resolved.json`` as ``xfer.runconfig.v1``), including one upstream
``.done`` shard whose object never arrived.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xfer_core.errors import XferError
from xfer_core.manifest.shard import UpstreamRunDirError, load_shard_meta

from .runtools import make_tree, read_tree, xfer


def _upstream_run_dir(
    tmp_path: Path, rebased: bool = False
) -> tuple[Path, Path, Path, dict[str, bytes]]:
    """``rebased``: manifest.jsonl keeps roots of another host (/old/...); the shards and
    the config were cut from the rebased manifest (upstream's rebase → shard → render)."""
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    files = make_tree(src, [f"d{i % 2}/f{i}.txt" for i in range(6)])
    conf = tmp_path / "rclone.conf"
    conf.write_text("")
    conf.chmod(0o600)
    names = sorted(files)
    records = [
        {
            "schema": "xfer.manifest.v1", "run_id": "20250101T000000Z",
            "source_root": str(src), "dest_root": str(dst),
            "source": f"{src}/{n}", "dest": f"{dst}/{n}", "path": n, "size": len(files[n]),
            "mtime": "2025-01-01T00:00:00Z", "hashes": {}, "etag": None,
            "storage_class": None, "meta": {},
        }
        for n in names
    ]  # fmt: skip
    (run / "shards").mkdir(parents=True)
    old = [{**r, "source_root": "/old/src", "dest_root": "/old/dst"} for r in records]
    listed = old if rebased else records
    (run / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in listed))
    for k in range(2):
        part = records[k::2]
        (run / "shards" / f"shard_{k:06d}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in part)
        )
    (run / "shards" / "shards.meta.json").write_text(
        json.dumps(
            {
                "schema": "xfer.shards.v1", "input": str(run / "manifest.jsonl"),
                "outdir": str(run / "shards"), "num_shards": 2, "strategy": "bytes",
                "num_records": len(records), "bytes_total": sum(map(len, files.values())),
                "created_at": "2025-01-01T00:00:00Z",
            }
        )
    )  # fmt: skip
    (run / "state").mkdir()
    (run / "logs").mkdir()
    # upstream marked shard 0 done, but one of its objects never arrived
    (run / "state" / "shard_0.done").write_text("")
    (run / "state" / "shard_1.attempt").write_text("5\n")
    (run / "state" / "shard_1.fail").write_text("")
    for r in records[0::2][1:]:
        (dst / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        (dst / r["path"]).write_bytes(files[r["path"]])
    (run / "config.resolved.json").write_text(
        json.dumps(
            {
                "schema": "xfer.runconfig.v1", "run_dir": str(run), "num_shards": 2,
                "array_concurrency": 64, "job_name": "xfer", "time_limit": "24:00:00",
                "partition": "transfer", "cpus_per_task": 4, "mem": "8G",
                "source_root": str(src), "dest_root": str(dst),
                "rclone_image": "rclone/rclone:latest", "rclone_config_host": str(conf),
                "rclone_conf_in_container": "/etc/rclone/rclone.conf",
                "rclone_flags": "--transfers 4 --checkers 4", "max_attempts": 5,
                "sbatch_extras": "", "pyxis_extra": "", "created_at": "2025-01-01T00:00:00Z",
            }
        )
    )  # fmt: skip
    return run, src, dst, files


def test_upstream_shard_meta_is_told_apart(tmp_path: Path) -> None:
    run, *_ = _upstream_run_dir(tmp_path)
    with pytest.raises(UpstreamRunDirError, match="upstream xfer's shard metadata"):
        load_shard_meta(run / "shards")
    proc = xfer("status", "--run-dir", str(run))
    assert proc.returncode == 2 and "upstream xfer's shard metadata (2 shards" in proc.stderr
    assert "xfer run --run-dir" in proc.stderr


def test_slurm_submit_on_an_upstream_run_dir_names_the_resume_command(tmp_path: Path) -> None:
    run, *_ = _upstream_run_dir(tmp_path)
    proc = xfer("slurm", "submit", "--run-dir", str(run))
    assert proc.returncode == 2 and "upstream xfer's run config" in proc.stderr
    assert f"xfer run --run-dir {run}" in proc.stderr
    assert (run / "state" / "shard_0.done").is_file()  # nothing moved or lost


def test_unknown_schema_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "shards.meta.json").write_text('{"schema": "other.tool.v9"}')
    with pytest.raises(XferError, match=r"unknown schema 'other\.tool\.v9'"):
        load_shard_meta(tmp_path)


def test_our_old_v1_meta_is_still_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, ["a", "b", "c"])
    manifest, out = tmp_path / "m.jsonl", tmp_path / "shards"
    assert (
        xfer("manifest", "build", "-s", str(src), "-d", "/d", "-o", str(manifest)).returncode == 0
    )
    assert (
        xfer("manifest", "shard", "--in", str(manifest), "--outdir", str(out), "-n", "2").returncode
        == 0
    )
    meta_path = out / "shards.meta.json"
    data = json.loads(meta_path.read_text())
    assert data["schema"] == "xfer.shardmeta.v1"
    data["schema"] = "xfer.shards.v1"
    meta_path.write_text(json.dumps(data))
    assert load_shard_meta(out).num_shards == 2


def test_resume_upstream_run_dir_verifies_its_done_shards(tmp_path: Path) -> None:
    run, _src, dst, files = _upstream_run_dir(tmp_path)
    proc = xfer(
        "run", "--run-dir", str(run), "--runtime", "host", "--scheduler", "local", "--submit"
    )
    assert proc.returncode == 0, proc.stderr
    assert "is an upstream xfer run dir" in proc.stderr
    assert "1 .done marker(s) set aside unverified" in proc.stderr
    # the object upstream's .done claimed arrived is there now, and everything else too
    assert read_tree(dst) == files
    # nothing of upstream's was deleted: set aside
    assert (run / "state.upstream" / "shard_0.done").is_file()
    assert (run / "state.upstream" / "shard_1.attempt").read_text() == "5\n"
    upstream_conf = json.loads((run / "config.resolved.upstream.json").read_text())
    assert upstream_conf["schema"] == "xfer.runconfig.v1"
    # the new run is ours, its values seeded from upstream's
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert resolved["partition"] == "transfer" and resolved["max_attempts"] == 5
    assert resolved["rclone_flags"] == ["--transfers", "4", "--checkers", "4"]
    meta = load_shard_meta(run / "shards")
    assert meta.num_shards == 2 and meta.schema == "xfer.shardmeta.v1"
    # every shard done, each with our verified digest
    for s in meta.shards:
        assert (run / "state" / f"shard_{s.index}.done").read_text().strip() == s.sha256


def test_resume_rebased_upstream_run_dir_uses_its_shards(tmp_path: Path) -> None:
    run, _src, dst, files = _upstream_run_dir(tmp_path, rebased=True)
    proc = xfer(
        "run", "--run-dir", str(run), "--runtime", "host", "--scheduler", "local", "--submit"
    )
    assert proc.returncode == 0, proc.stderr
    assert "their records are the manifest now" in proc.stderr
    assert read_tree(dst) == files
    kept = (run / "manifest.upstream.jsonl").read_text()
    assert '"source_root": "/old/src"' in kept
    assert json.loads((run / "manifest.jsonl").read_text().splitlines()[0])["source_root"] == str(
        _src
    )
