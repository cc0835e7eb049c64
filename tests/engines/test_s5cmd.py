"""The third-party s5cmd engine (plugins/xfer-s5cmd): loading, what it refuses, and its
verification run for real against the S3 server fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from xfer_s5cmd import S5cmdEngine, json_key, parse_root, s5cmd_flags, unexpressible

from xfer_core.bulk.engine import EngineContext
from xfer_core.errors import ConfigError
from xfer_core.manifest.jsonl import write_manifest
from xfer_core.manifest.record import ManifestRecord, path_fields
from xfer_core.testing.engine_conformance import xfer
from xfer_core.testing.services import S3Server

S3_CONF = """\
[s3]
type = s3
provider = Other
endpoint = http://127.0.0.1:9
access_key_id = AKEXAMPLE
secret_access_key = SECRET-NEVER-PRINTED
force_path_style = true

[other]
type = s3
endpoint = http://127.0.0.1:10
access_key_id = AK2
secret_access_key = SK2

[box]
type = sftp
host = example.org

[anon]
type = s3
endpoint = http://127.0.0.1:9
"""


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "rclone.conf"
    path.write_text(S3_CONF)
    path.chmod(0o600)
    return str(path)


def test_listed_by_xfer_plugins_with_its_own_distribution() -> None:
    res = xfer("plugins", "--json", timeout=60)
    assert res.returncode == 0, res.stderr
    rows = [r for r in json.loads(res.stdout)["plugins"] if r["name"] == "s5cmd"]
    assert len(rows) == 1
    assert rows[0]["kind"] == "shard_engine"
    assert rows[0]["distribution"] == "xfer-s5cmd"
    assert rows[0]["available"], rows[0]["reason"]


def test_roots(conf: str) -> None:
    dest = parse_root("s3:dst/a/b/", conf)
    assert dest is not None
    assert (dest.url("x y"), dest.endpoint, dest.keys_in_config) == (
        "s3://dst/a/b/x y",
        "http://127.0.0.1:9",
        True,
    )
    url = parse_root("s3://bkt", None)
    assert url is not None and url.url("k") == "s3://bkt/k"
    assert parse_root("/data/set", conf) is None


@pytest.mark.parametrize(
    ("source", "dest", "message"),
    [
        ("/data", "/elsewhere", "is a local path"),
        ("/data", "box:dir", "of type 'sftp'"),
        ("/data", "nosuch:bkt", "not in"),
        ("/data", "anon:bkt", "no access_key_id"),
        ("other:bkt", "s3:bkt", "same S3 endpoint"),
        ("relative/dir", "s3:bkt", "absolute path"),
        ("/data", "s3:", "names no bucket"),
    ],
)
def test_refuses_what_s5cmd_cannot_reach(conf: str, source: str, dest: str, message: str) -> None:
    ctx = EngineContext(source_root=source, dest_root=dest, config_path=conf)
    with pytest.raises(ConfigError, match=message):
        S5cmdEngine().render_functions(ctx)


def test_encrypted_rclone_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rclone.conf"
    path.write_text("# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\nabc\n")
    ctx = EngineContext(source_root="/d", dest_root="s3:b", config_path=str(path))
    with pytest.raises(ConfigError, match="encrypted"):
        S5cmdEngine().render_functions(ctx)


def test_flags_translated_dropped_or_refused() -> None:
    suggested = [
        "--transfers",
        "32",
        "--checkers",
        "64",
        "--fast-list",
        "--retries",
        "10",
        "--stats",
        "30s",
    ]
    assert s5cmd_flags(suggested) == ["--numworkers", "32", "--retry-count", "10"]
    assert s5cmd_flags(["--numworkers=8", "--no-verify-ssl", "--log", "debug"]) == [
        "--numworkers",
        "8",
        "--no-verify-ssl",
        "--log",
        "debug",
    ]
    for bad in (["--dry-run"], ["--bogus"], ["--numworkers"]):
        with pytest.raises(ConfigError):
            s5cmd_flags(bad)


def test_xfer_run_gives_s5cmd_the_suggestions_in_its_own_spelling(
    tmp_path: Path, conf: str
) -> None:
    """Without --rclone-flags, `xfer run` records analyze's suggestions as s5cmd takes
    them (--numworkers, --retry-count), not rclone's --checkers/--fast-list/..."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    run = tmp_path / "run"
    args = ["run", "--run-dir", str(run), "--source", str(src), "--dest", "s3:dst/p"]
    res = xfer(*args, "--rclone-config", conf, "--engine", "s5cmd", "--num-shards", "1")
    assert res.returncode == 0, res.stderr
    rclone_flags = json.loads((run / "analysis.json").read_text())["suggested_rclone_flags"]
    flags = json.loads((run / "config.resolved.json").read_text())["rclone_flags"]
    assert flags == s5cmd_flags(rclone_flags)
    assert flags[:2] == ["--numworkers", rclone_flags[rclone_flags.index("--transfers") + 1]]


def test_json_key_spells_keys_like_go() -> None:
    assert json_key('s3://b/a"b\\c') == '"s3://b/a\\"b\\\\c"'
    assert json_key("s3://b/<&>") == '"s3://b/\\u003c\\u0026\\u003e"'
    assert json_key("s3://b/ü\u2028") == '"s3://b/ü\\u2028"'


def test_unexpressible_names() -> None:
    assert unexpressible("ok $(x) 'q' ü".encode()) is None
    assert "control" in (unexpressible(b"a\nb") or "")
    assert "control" in (unexpressible(b"a\tb") or "")
    assert "UTF-8" in (unexpressible(b"\xe9") or "")


def test_render_refuses_newline_names_naming_them(tmp_path: Path, conf: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "fine.txt").write_text("a")
    (src / "new\nline.txt").write_text("b")
    run = tmp_path / "run"
    args = ["run", "--run-dir", str(run), "--source", str(src), "--dest", "s3:dst/p"]
    res = xfer(*args, "--rclone-config", conf, "--engine", "s5cmd", "--num-shards", "1")
    assert res.returncode == 2, res.stderr
    assert "s5cmd engine cannot copy 1 object(s)" in res.stderr
    assert "new\\nline.txt" in res.stderr
    assert "--engine rclone" in res.stderr
    assert not (run / "worker.sh").exists()
    assert "SECRET-NEVER-PRINTED" not in res.stderr + res.stdout


# -- verification, run for real: the engine's bash against the S3 server fixture ------------


def _shard(run: Path, names: list[str], sizes: list[int]) -> None:
    shards = run / "shards"
    shards.mkdir(parents=True)
    records = []
    for name, size in zip(names, sizes, strict=True):
        path, meta = path_fields(name.encode())
        records.append(ManifestRecord(path=path, size=size, meta=meta))
    write_manifest(shards / "shard_000000.jsonl", records)
    (shards / "shard_000000.files").write_text("".join(n + "\n" for n in names))


def _run_step(step: str, engine: S5cmdEngine, ctx: EngineContext, run: Path) -> tuple[int, str]:
    s5cmd = Path(sys.executable).parent / "s5cmd"
    script = (
        f'xfer_tool() {{ "{s5cmd}" "$@"; }}\n'
        # the worker's helper engines create their files with (worker.sh)
        'xfer_new_file() { rm -f -- "$1" && (umask 077 && set -C && : >"$1"); }\n'
        + engine.render_functions(ctx)
        + f'\nXFER_REASON="$3"\n{step} "$1" "$2"\n'
    )
    files, log, reason = run / "shards/shard_000000.files", run / "log", run / "reason"
    reason.write_text("")
    res = subprocess.run(
        ["bash", "-c", script, "worker", str(files), str(log), str(reason)],
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return res.returncode, reason.read_text()


def _prepared(
    tmp_path: Path, s3: S3Server, prefix: str, run: Path
) -> tuple[S5cmdEngine, EngineContext]:
    """The engine and its context for the shards of ``run``, prepared (lists written)."""
    engine = S5cmdEngine()
    ctx = EngineContext(
        source_root=str(tmp_path / "unused"),
        dest_root=s3.remote("dst", prefix),
        config_path=str(s3.rclone_config),
        run_dir=str(run),
    )
    engine.prepare(run, [0], ctx)
    return engine, ctx


@pytest.mark.s3
def test_verify_finds_missing_and_wrong_size_objects(tmp_path: Path, s3: S3Server) -> None:
    prefix = f"s5v-{uuid.uuid4().hex[:8]}"
    names = ["a b.txt", "q'\"<&>.txt", "sub/empty", "star*?[x]"]
    sizes = [3, 4, 0, 5]
    run = tmp_path / "run"
    _shard(run, names, sizes)
    engine, ctx = _prepared(tmp_path, s3, prefix, run)
    dest = s3.root / "dst" / prefix
    for name, size in zip(names, sizes, strict=True):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(b"x" * size)
    # a look-alike key that a prefix listing also returns must not confuse it
    (dest / "a b.txt.bak").write_bytes(b"zzzzzz")
    assert _run_step("xfer_verify", engine, ctx, run) == (0, "")

    (dest / "star*?[x]").unlink()
    (dest / "a b.txt").write_bytes(b"xxxx")
    rc, reason = _run_step("xfer_verify", engine, ctx, run)
    assert rc == 1
    assert reason.strip() == (
        "verify: 2 of 4 records not verified (1 missing at destination, 1 differ in size or MD5)"
    )
    # the secret of the rclone config went nowhere near the run dir
    for path in run.rglob("*"):
        if path.is_file():
            assert s3.secret_key not in path.read_text(errors="replace")


@pytest.mark.s3
def test_copy_failure_reports_the_s5cmd_error(tmp_path: Path, s3: S3Server) -> None:
    run = tmp_path / "run"
    _shard(run, ["gone.txt"], [1])
    engine = S5cmdEngine()
    ctx = EngineContext(
        source_root=str(tmp_path / "src"),
        dest_root=s3.remote("dst", f"s5c-{uuid.uuid4().hex[:8]}"),
        config_path=str(s3.rclone_config),
        run_dir=str(run),
    )
    engine.prepare(run, [0], ctx)
    rc, reason = _run_step("xfer_copy", engine, ctx, run)
    assert rc != 0
    assert reason.startswith("s5cmd exit 1: ERROR"), reason
    assert "gone.txt" in reason


@pytest.mark.s3
def test_verify_lists_each_directory_once_when_the_cost_model_says_so(
    tmp_path: Path, s3: S3Server
) -> None:
    from xfer_core.manifest.shard import shard_manifest

    prefix = f"s5d-{uuid.uuid4().hex[:8]}"
    names = [f"d{i // 20}/f {i}.bin" for i in range(60)] + ["top.bin", "glob*[d]/x.bin"]
    run = tmp_path / "run"
    records = []
    for name in names:
        path, meta = path_fields(name.encode())
        records.append(ManifestRecord(path=path, size=3, meta=meta))
    write_manifest(tmp_path / "m.jsonl", records)
    meta = shard_manifest(tmp_path / "m.jsonl", run / "shards", num_shards=1)
    assert meta.shards[0].lookup == "list"  # 5 directories' pages < 62 records
    engine, ctx = _prepared(tmp_path, s3, prefix, run)
    lines = (run / "shards/shard_000000.s5ls").read_text().splitlines()
    # one ls per directory; the directory s5cmd would read as a wildcard: per object
    assert sorted(lines) == sorted(
        [f"ls s3://dst/{prefix}/d{k}/" for k in range(3)]
        + [f"ls s3://dst/{prefix}/", f"ls 's3://dst/{prefix}/glob*[d]/x.bin'"]
    )
    dest = s3.root / "dst" / prefix
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(b"xyz")
    assert _run_step("xfer_verify", engine, ctx, run) == (0, "")
    (dest / "d1/f 25.bin").unlink()
    (dest / "glob*[d]/x.bin").write_bytes(b"wrong size")
    rc, reason = _run_step("xfer_verify", engine, ctx, run)
    assert rc == 1
    assert reason.strip() == (
        "verify: 2 of 62 records not verified (1 missing at destination, 1 differ in size or MD5)"
    )


def test_verification_lookup_is_the_cost_model_for_the_destination_alone(tmp_path: Path) -> None:
    """A server-side shard of 3 records in a directory of 1,500 (2 LIST pages): rclone
    looks objects up (3 HEADs < 2 pages on each side), s5cmd's verification, which
    reads only the destination, lists (2 pages < 3 HEADs)."""
    from xfer_s5cmd import _lookups

    from xfer_core.manifest.shard import shard_manifest

    records = []
    for i in range(1500):
        path, meta = path_fields(f"flat/k{i:05d}".encode())
        records.append(
            ManifestRecord(
                path=path, size=3, meta=meta, source_root="s3:src/p", dest_root="s3:dst/p"
            )
        )
    write_manifest(tmp_path / "m.jsonl", records)
    meta = shard_manifest(tmp_path / "m.jsonl", tmp_path / "shards", num_shards=500)
    assert {s.list_pages for s in meta.shards} == {2} and {s.records for s in meta.shards} == {3}
    assert {s.lookup for s in meta.shards} == {"objects"}
    assert set(_lookups(tmp_path / "shards").values()) == {"list"}
