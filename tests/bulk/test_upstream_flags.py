"""Upstream xfer's flags that used to answer "No such option": each works or is mapped, said in one line."""

from __future__ import annotations

import json
import os
import uuid
import zlib
from pathlib import Path

import pytest

from xfer_backends.rclone_lister import RcloneLister
from xfer_core.manifest.lister import ListOptions
from xfer_core.manifest.shard import load_shard_meta
from xfer_core.testing.services import S3Server

from .runtools import make_tree, xfer


def _tree(root: Path, n: int = 6) -> None:
    make_tree(root, [f"f{i}.txt" for i in range(n)] + ["sub/deep.txt"])


def _rclone_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "rclone.conf"
    conf.write_text("[local]\ntype = local\n")
    conf.chmod(0o600)
    return conf


def _manifest(tmp_path: Path, n: int = 6) -> Path:
    src = tmp_path / "src"
    _tree(src, n)
    out = tmp_path / "m.jsonl"
    proc = xfer(
        "manifest", "build", "--source", str(src), "--dest", str(tmp_path / "d"), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    return out


def _sharded_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    manifest = _manifest(tmp_path)
    proc = xfer(
        "manifest",
        "shard",
        "--in",
        str(manifest),
        "--outdir",
        str(run / "shards"),
        "--num-shards",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    return run


# --- run ---------------------------------------------------------------------------------


def test_run_accepts_upstream_flags_and_says_what_it_does(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    conf = _rclone_conf(tmp_path)
    run = tmp_path / "run"
    proc = xfer(
        "run", "--run-dir", str(run), "--source", str(src), "--dest", str(tmp_path / "dst"),
        "--num-shards", "2", "--rclone-config", str(conf),
        "--container-conf-path", "/etc/rclone/rclone.conf",
        "--extra-lsjson-flags", "--fast-list",
        "--sbatch-extras", "#SBATCH --account=proj\\n#SBATCH --qos=high",
        "--pyxis-extra", "--container-writable",
        "--scheduler", "slurm", "--no-submit",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        "--container-conf-path /etc/rclone/rclone.conf: accepted for upstream xfer" in proc.stderr
    )
    assert "--extra-lsjson-flags ignored" in proc.stderr  # a local source: the posix lister
    assert "--pyxis-extra ignored: the runtime is host" in proc.stderr
    sbatch = (run / "sbatch_array.sh").read_text()
    assert "#SBATCH --account=proj\n#SBATCH --qos=high\n" in sbatch
    assert "ready:" in proc.stderr and not (run / "jobs.json").exists()  # --no-submit
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert resolved["scheduler_options"] == {
        "extras": "#SBATCH --account=proj\\n#SBATCH --qos=high"
    }


def test_run_extra_lsjson_flags_reach_rclone(tmp_path: Path, s3: S3Server) -> None:
    prefix = f"lsj-{uuid.uuid4().hex[:8]}"
    make_tree(s3.root / "src" / prefix, ["keep.txt", "drop.skip", "d/keep2.txt"])
    run = tmp_path / "run"
    proc = xfer(
        "run", "--run-dir", str(run), "--source", s3.remote("src", prefix),
        "--dest", str(tmp_path / "dst"), "--num-shards", "1",
        "--rclone-config", str(s3.rclone_config), "--scheduler", "local",
        "--extra-lsjson-flags", "--exclude '*.skip'",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    paths = [json.loads(ln)["path"] for ln in (run / "manifest.jsonl").read_text().splitlines()]
    assert sorted(paths) == ["d/keep2.txt", "keep.txt"]


# --- slurm render ------------------------------------------------------------------------


def test_render_source_and_dest_root_override(tmp_path: Path) -> None:
    run = _sharded_run(tmp_path)
    proc = xfer(
        "slurm", "render", "--run-dir", str(run), "--num-shards", "2",
        "--source-root", "s3src:b/x", "--dest-root", "s3dst:b/y",
        "--rclone-conf-in-container", "/etc/rclone/rclone.conf",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert (resolved["source_root"], resolved["dest_root"]) == ("s3src:b/x", "s3dst:b/y")
    assert "--container-conf-path /etc/rclone/rclone.conf: accepted" in proc.stderr


def test_render_manifest_gives_the_roots(tmp_path: Path) -> None:
    run = _sharded_run(tmp_path)
    rebased = tmp_path / "rebased.jsonl"
    proc = xfer(
        "manifest", "rebase", "--in", str(tmp_path / "m.jsonl"), "--out", str(rebased),
        "--source-root", "/mnt/src", "--dest-root", "/mnt/dst",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = xfer("slurm", "render", "--run-dir", str(run), "--manifest", str(rebased))
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert (resolved["source_root"], resolved["dest_root"]) == ("/mnt/src", "/mnt/dst")


def test_render_pyxis_extra_goes_after_srun(tmp_path: Path) -> None:
    run = _sharded_run(tmp_path)
    proc = xfer(
        "slurm", "render", "--run-dir", str(run), "--runtime", "pyxis",
        "--rclone-image", "rclone/rclone:latest", "--pyxis-extra", "--container-writable",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads((run / "config.resolved.json").read_text())
    assert resolved["tool_command"].startswith("srun --container-writable --ntasks=1 ")
    assert resolved["pyxis_extra"] == ["--container-writable"]


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        ("--account=$(touch CANARY)", "is not an sbatch option xfer can write"),
        ("--array=0-3", "--array is set by xfer itself"),
        ("--export=ALL", "--export is set by xfer itself"),
        ("--comment 'a b'", "is not an sbatch option xfer can write"),
    ],
)
def test_bad_sbatch_extras_are_refused_and_nothing_is_written(
    tmp_path: Path, extras: str, message: str
) -> None:
    run = _sharded_run(tmp_path)
    proc = xfer("slurm", "render", "--run-dir", str(run), "--sbatch-extras", extras)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (run / "sbatch_array.sh").exists() and not (run / "config.resolved.json").exists()
    assert not list(tmp_path.rglob("CANARY"))


def test_sbatch_extras_forms() -> None:
    from xfer_backends.slurm import sbatch_extra_options

    assert sbatch_extra_options("--account proj --qos=high") == ["--account=proj", "--qos=high"]
    assert sbatch_extra_options("#SBATCH --constraint=ib\\n#SBATCH --reservation=r1") == [
        "--constraint=ib",
        "--reservation=r1",
    ]
    assert sbatch_extra_options("") == []


# --- manifest build ----------------------------------------------------------------------


def _build(tmp_path: Path, *flags: str) -> tuple[int, list[str], str]:
    src = tmp_path / "src"
    if not src.exists():
        _tree(src)
    out = tmp_path / f"m{len(list(tmp_path.glob('m*.jsonl')))}.jsonl"
    proc = xfer(
        "manifest", "build", "--source", str(src), "--dest", "/d", "--out", str(out),
        "--lister", "rclone", *flags,
    )  # fmt: skip
    paths = (
        sorted(json.loads(ln)["path"] for ln in out.read_text().splitlines())
        if out.exists()
        else []
    )
    return proc.returncode, paths, proc.stderr


def test_build_no_recursive_lists_the_top_level_only(tmp_path: Path) -> None:
    code, deep, err = _build(tmp_path, "--recursive")
    assert code == 0, err
    code, top, err = _build(tmp_path, "--no-recursive")
    assert code == 0, err
    assert "sub/deep.txt" in deep and "sub/deep.txt" not in top
    assert len(top) == len(deep) - 1


def test_build_fast_list_no_modtime_and_verbose_reach_rclone(tmp_path: Path) -> None:
    code, plain, err = _build(tmp_path)
    assert code == 0, err
    code, tuned, err = _build(tmp_path, "--fast-list", "--no-modtime", "-vv")
    assert code == 0, err
    assert tuned == plain
    code, off, err = _build(tmp_path, "--no-fast-list", "-v")
    assert code == 0, err
    assert off == plain
    # and they are rclone's: rclone refuses them where they are not valid
    lister = RcloneLister()
    argv = lister.command("/x", ListOptions(extra_flags=("--fast-list", "--no-modtime", "-vv")))
    assert argv[-5:-2] == ["--fast-list", "--no-modtime", "-vv"]


def test_build_rclone_flags_on_the_posix_lister_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    out = tmp_path / "m.jsonl"
    proc = xfer(
        "manifest",
        "build",
        "--source",
        str(src),
        "--dest",
        "/d",
        "--out",
        str(out),
        "--no-recursive",
    )
    assert proc.returncode == 2 and "listed by the posix lister" in proc.stderr
    assert not out.exists()


def test_build_container_conf_path_and_pyxis_extra_in_the_container_command(tmp_path: Path) -> None:
    conf = _rclone_conf(tmp_path)
    options = ListOptions(
        runtime="pyxis",
        rclone_image="rclone/rclone:latest",
        rclone_config=str(conf),
        container_config="/etc/rclone/rclone.conf",
        pyxis_extra=("--container-writable",),
    )
    argv = RcloneLister().command("s3src:b/x", options)
    assert argv[:3] == ["srun", "--container-writable", "--ntasks=1"]
    assert f"--container-mounts={conf.resolve()}:/etc/rclone/rclone.conf:ro" in argv
    assert argv[argv.index("--config") + 1] == "/etc/rclone/rclone.conf"


def test_build_container_conf_path_with_the_host_runtime_says_so(tmp_path: Path) -> None:
    conf = _rclone_conf(tmp_path)
    code, paths, err = _build(
        tmp_path, "--rclone-config", str(conf), "--container-conf-path", "/etc/rclone/rclone.conf"
    )
    assert code == 0, err and paths
    assert "accepted for upstream xfer; with --runtime host rclone reads --rclone-config" in err


# --- manifest shard --strategy -----------------------------------------------------------


def test_shard_strategies(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, n=20)
    records = [json.loads(ln) for ln in manifest.read_text().splitlines()]
    for strategy, method in (
        ("bytes", "locality-ranges"),
        ("count", "round-robin"),
        ("hash", "name-hash"),
    ):
        out = tmp_path / strategy
        proc = xfer(
            "manifest", "shard", "--in", str(manifest), "--outdir", str(out),
            "--num-shards", "4", "--strategy", strategy,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        meta = load_shard_meta(out)
        assert meta.method == method and sum(s.records for s in meta.shards) == len(records)
        counts = [s.records for s in meta.shards]
        if strategy == "count":
            assert max(counts) - min(counts) <= 1
        if strategy == "hash":
            for s in meta.shards:
                for line in (out / s.jsonl).read_text().splitlines():
                    path = json.loads(line)["path"]
                    assert zlib.crc32(path.encode()) % 4 == s.index


def test_shard_unknown_strategy_is_refused(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    out = tmp_path / "out"
    proc = xfer(
        "manifest",
        "shard",
        "--in",
        str(manifest),
        "--outdir",
        str(out),
        "-n",
        "2",
        "--strategy",
        "random",
    )
    assert proc.returncode == 2 and "use one of bytes, count, hash" in proc.stderr
    assert not out.exists()


# --- manifest analyze --------------------------------------------------------------------


def test_analyze_json_carries_upstream_keys_and_estimates(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, n=10)
    proc = xfer(
        "manifest", "analyze", "--in", str(manifest), "--json",
        "--base-flags", "--retries 3", "--assumed-cpus-per-task", "8",
        "--assumed-array-concurrency", "2", "--assumed-core-budget", "16",
        "--max-shard-bytes-tb", "1", "--min-rate", "1Gbps", "--max-rate", "10Gbps",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in (
        "status", "total_files", "total_bytes", "total_bytes_human", "file_size_stats",
        "profile", "profile_explanation", "suggested_flags", "suggested_shard_count",
        "shard_count_reasoning", "shard_count_assumptions", "histogram",
        "records", "suggested_shards", "suggested_rclone_flags",
    ):  # fmt: skip
        assert key in data, key
    assert data["total_files"] == data["records"] == 11
    assert data["suggested_flags"].endswith("--retries 3")
    assert data["shard_count_assumptions"]["core_budget"] == 16
    assert "shards_by_cores=2" in data["shard_count_reasoning"]
    assert {"range_min", "file_count", "pct_files", "low", "count"} <= set(data["histogram"][0])
    times = data["time_estimates"]
    assert len(times) == 7 and times[0]["rate_gbps"] == 1.0 and times[-1]["rate_gbps"] == 10.0
    assert times[0]["seconds"] == pytest.approx(data["total_bytes"] / 125e6, rel=1e-3)


def test_analyze_table_shows_upstream_limits_and_times(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    proc = xfer("manifest", "analyze", "--in", str(manifest), env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "with upstream's limits:" in proc.stdout and "estimated transfer time" in proc.stdout


def test_analyze_bad_rate_is_one_line(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    proc = xfer("manifest", "analyze", "--in", str(manifest), "--min-rate", "fast")
    assert proc.returncode == 2 and "rate 'fast': expected a number and a unit" in proc.stderr
