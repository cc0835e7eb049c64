"""``manifest rebase`` and ``manifest combine``: round trips, conflicts, every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.manifest_io.helpers import xfer
from xfer_core.errors import ConfigError, ExitCode, ManifestError
from xfer_core.manifest.build import build_manifest
from xfer_core.manifest.combine import CombineConflictError, combine_manifests
from xfer_core.manifest.jsonl import read_manifest, write_manifest
from xfer_core.manifest.lsjson import LsjsonItem, parse_lsjson_lines
from xfer_core.manifest.rebase import map_root, parse_map, rebase_manifest
from xfer_core.manifest.record import ManifestRecord, path_bytes


def _rec(path: str, size: int = 1, mtime: str = "2024-01-01T00:00:00Z", **kw) -> ManifestRecord:  # type: ignore[no-untyped-def]
    return ManifestRecord(
        path=path,
        size=size,
        source_root="s3src:b",
        dest_root="s3dst:b",
        source=f"s3src:b/{path}",
        dest=f"s3dst:b/{path}",
        mtime=mtime,
        **kw,
    )


# -- rebase ---------------------------------------------------------------------------


def test_rebase_roots_keeps_paths_and_hostile_names(tree, tmp_path: Path) -> None:
    src, made = tree
    built = tmp_path / "m.jsonl"
    build_manifest(str(src), "/old/dst", built)
    out = tmp_path / "r.jsonl"
    result = rebase_manifest(built, out, source_root="weka-s3:set", dest_root="s3dst:bucket/set/")
    assert result.records == result.changed == len(made)
    before = list(read_manifest(built))
    after = list(read_manifest(out))
    assert [path_bytes(r) for r in before] == [path_bytes(r) for r in after]
    for b, a in zip(before, after, strict=True):
        assert a.source_root == "weka-s3:set" and a.dest_root == "s3dst:bucket/set"
        assert a.source == f"weka-s3:set/{b.path}" and a.dest == f"s3dst:bucket/set/{b.path}"
        assert (a.size, a.mtime, a.meta, a.run_id) == (b.size, b.mtime, b.meta, b.run_id)


def test_rebase_maps_prefixes_by_whole_component(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    recs = [_rec("a/x"), _rec("b")]
    recs.append(
        msgspec.structs.replace(
            _rec("c"), source_root="s3src:bx", source="s3src:bx/c", dest_root="s3dst:b/sub"
        )
    )
    write_manifest(m, recs)
    result = rebase_manifest(m, m, maps=[("s3src:b", "new:src"), ("s3dst:b", "new:dst")])
    got = list(read_manifest(m))
    assert result.changed == 3
    assert got[0].source == "new:src/a/x" and got[0].dest == "new:dst/a/x"
    assert got[2].source_root == "s3src:bx"  # not a component match
    assert got[2].dest_root == "new:dst/sub" and got[2].dest == "new:dst/sub/c"


@settings(deadline=None)
@given(
    root=st.text(alphabet="ab/:", min_size=1, max_size=12),
    old=st.text(alphabet="ab/:", min_size=1, max_size=6),
)
def test_map_root_only_rewrites_matching_prefixes(root: str, old: str) -> None:
    new = "NEW"
    mapped = map_root(root, [(old, new)])
    base = old if old.endswith(("/", ":")) else old + "/"
    if root == old:
        assert mapped == new
    elif root.startswith(base):
        assert mapped.startswith(new) and mapped.endswith(root[len(base) :])
    else:
        assert mapped == root


def test_rebase_bad_inputs(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    write_manifest(m, [_rec("a")])
    with pytest.raises(ConfigError, match="nothing to rebase"):
        rebase_manifest(m, tmp_path / "o.jsonl")
    with pytest.raises(ConfigError, match="OLD=NEW"):
        parse_map("no-equals")
    with pytest.raises(ConfigError):
        parse_map("=x")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(m.read_text() + '{"path": "../escape", "size": 1}\n')
    with pytest.raises(ManifestError, match=r"bad.jsonl:2: .*climbs out"):
        rebase_manifest(bad, tmp_path / "o.jsonl", source_root="x:")
    assert not (tmp_path / "o.jsonl").exists()


def test_wrong_types_and_bad_flags_are_one_line_usage_errors(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text('{"path": "a", "size": "12"}\n')
    proc = xfer(
        "manifest", "rebase", "--in", str(m), "--out", str(tmp_path / "o"), "--dest-root", "x:"
    )
    assert proc.returncode == ExitCode.USAGE
    assert proc.stderr.startswith(f"xfer: error: {m}:1: Expected `int`, got `str`")
    assert not (tmp_path / "o").exists()
    src = tmp_path / "src"
    src.mkdir()
    flags = xfer(
        "manifest",
        "build",
        "-s",
        str(src),
        "-d",
        "/d",
        "-o",
        str(tmp_path / "o"),
        "--extra-lsjson-flags",
        "--include 'unbalanced",
    )
    assert flags.returncode == ExitCode.USAGE and "--extra-lsjson-flags" in flags.stderr


def test_rebase_cli(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    write_manifest(m, [_rec("a"), _rec("b")])
    out = tmp_path / "o.jsonl"
    proc = xfer("manifest", "rebase", "--in", str(m), "--out", str(out), "--map", "s3src:b=s2:c")
    assert proc.returncode == 0, proc.stderr
    assert "rebased 2 of 2 records" in proc.stderr
    assert [r.source for r in read_manifest(out)] == ["s2:c/a", "s2:c/b"]
    nomatch = xfer("manifest", "rebase", "--in", str(m), "--out", str(out), "--map", "zz=yy")
    assert nomatch.returncode == 0 and "no record changed" in nomatch.stderr
    schema = tmp_path / "v2.jsonl"
    schema.write_text('{"schema": "xfer.manifest.v2", "path": "a", "size": 1}\n')
    bad = xfer("manifest", "rebase", "--in", str(schema), "--out", str(out), "--source-root", "x:")
    assert bad.returncode == ExitCode.USAGE
    assert f"{schema}:1: unknown schema" in bad.stderr


# -- combine --------------------------------------------------------------------------


def test_combine_drops_exact_duplicates(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_manifest(a, [_rec("x"), _rec("y", hashes={"md5": "AA"})])
    write_manifest(b, [_rec("y", hashes={"md5": "aa"}), _rec("z")])
    result = combine_manifests([a, b], tmp_path / "m.jsonl")
    assert (result.records, result.duplicates, result.conflicts) == (3, 1, 0)
    assert [r.path for r in read_manifest(tmp_path / "m.jsonl")] == ["x", "y", "z"]


def test_combine_conflicts_fail_by_default_and_write_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_manifest(a, [_rec("x", 1), _rec("y"), _rec("h", hashes={"md5": "01"})])
    write_manifest(
        b,
        [_rec("x", 2), _rec("y", mtime="2025-01-01T00:00:00Z"), _rec("h", hashes={"md5": "02"})],
    )
    out = tmp_path / "m.jsonl"
    log = tmp_path / "conflicts.jsonl"
    with pytest.raises(CombineConflictError) as info:
        combine_manifests([a, b], out, conflicts_out=log)
    assert info.value.exit_code == ExitCode.FAILED
    assert not out.exists()
    reasons = [c.reason for c in info.value.conflicts]
    assert reasons == [
        "size 1 != 2",
        "mtime 2024-01-01T00:00:00Z != 2025-01-01T00:00:00Z",
        "md5 01 != 02",
    ]
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["path"] for c in logged] == ["x", "y", "h"]
    assert logged[0]["kept"] == f"{a}#1" and logged[0]["dropped"] == f"{b}#1"

    kept = combine_manifests([a, b], out, on_conflict="first")
    assert kept.conflicts == 3 and kept.records == 3
    assert [r.size for r in read_manifest(out)] == [1, 1, 1]


def _lsjson(items: list[dict]) -> str:  # type: ignore[type-arg]
    body = ",\n".join(json.dumps(i, ensure_ascii=False) for i in items)
    return "[\n" + body + "\n]\n"


def test_combine_raw_lsjson_parts_with_prefix_sidecars(tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "lsjson-0001.json").write_text(
        _lsjson(
            [
                {
                    "Path": "a b",
                    "Size": 3,
                    "ModTime": "2024-01-01T00:00:00Z",
                    "IsDir": False,
                    "Hashes": {"MD5": "abc"},
                    "Tier": "STANDARD",
                },
                {"Path": "sub", "Size": -1, "IsDir": True},
                {"Path": "sub/é", "Size": 4, "ModTime": "2024-01-01T00:00:00Z", "IsDir": False},
            ]
        )
    )
    (parts / "lsjson-0001.prefix").write_text("p1/\n")
    (parts / "lsjson-0002.json").write_text(
        _lsjson([{"Path": "top", "Size": 5, "ModTime": "2024-01-01T00:00:00Z", "IsDir": False}])
    )
    (parts / "lsjson-0003.json").write_text("[\n]\n")
    out = tmp_path / "m.jsonl"
    result = combine_manifests(
        [], out, parts_dir=str(parts), source_root="s3src:b", dest_root="s3dst:b", run_id="r"
    )
    assert result.parts == 3 and result.records == 3
    recs = list(read_manifest(out))
    assert [r.path for r in recs] == ["p1/a b", "p1/sub/é", "top"]
    assert recs[0].source == "s3src:b/p1/a b" and recs[0].dest == "s3dst:b/p1/a b"
    assert recs[0].hashes == {"md5": "abc"} and recs[0].storage_class == "STANDARD"
    assert {r.run_id for r in recs} == {"r"}


def test_combine_mixed_manifest_and_lsjson_equals_build(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"123")
    (src / "g").write_bytes(b"1")
    built = tmp_path / "built.jsonl"
    build_manifest(str(src), "/dst", built)
    part = tmp_path / "part.json"
    part.write_text(_lsjson([{"Path": "extra", "Size": 9, "IsDir": False}]))
    out = tmp_path / "m.jsonl"
    result = combine_manifests([built, part], out, source_root=str(src), dest_root="/dst")
    assert sorted(r.path for r in read_manifest(out)) == ["d/f", "extra", "g"]
    assert result.records == 3


def test_combine_bad_inputs(tmp_path: Path) -> None:
    part = tmp_path / "p.json"
    part.write_text(_lsjson([{"Path": "a", "Size": 1, "IsDir": False}]))
    out = tmp_path / "m.jsonl"
    with pytest.raises(ConfigError, match="needs --source-root and --dest-root"):
        combine_manifests([part], out)
    with pytest.raises(ConfigError, match="no parts"):
        combine_manifests([], out)
    with pytest.raises(ConfigError, match="on-conflict"):
        combine_manifests([part], out, on_conflict="last", source_root="a:", dest_root="b:")
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"Path": "a", "Size": 1},\n{"Path": "b", "Size": "big"}\n]\n')
    with pytest.raises(Exception) as info:
        combine_manifests([broken], out, source_root="a:", dest_root="b:")
    assert f"{broken}:3:" in str(info.value)
    climbing = tmp_path / "climb.json"
    climbing.write_text(_lsjson([{"Path": "../x", "Size": 1, "IsDir": False}]))
    with pytest.raises(ManifestError, match="climbs out"):
        combine_manifests([climbing], out, source_root="a:", dest_root="b:")
    notjson = tmp_path / "m2.jsonl"
    notjson.write_text("{not json\n")
    with pytest.raises(ManifestError, match=rf"{notjson}:1: not valid JSON"):
        combine_manifests([notjson], out)
    with pytest.raises(ManifestError, match="cannot read"):
        combine_manifests([tmp_path / "absent.jsonl"], out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_combine_cli_reports_conflicts_and_exit_codes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_manifest(a, [_rec("x", 1)])
    write_manifest(b, [_rec("x", 2), _rec("y")])
    out = tmp_path / "m.jsonl"
    proc = xfer("manifest", "combine", str(a), str(b), "--out", str(out))
    assert proc.returncode == ExitCode.FAILED
    assert "conflict: 'x': size 1 != 2" in proc.stderr
    assert "not written" in proc.stderr and not out.exists()
    ok = xfer(
        "--json", "manifest", "combine", str(a), str(b), "-o", str(out), "--on-conflict", "first"
    )
    assert ok.returncode == 0, ok.stderr
    events = [json.loads(line) for line in ok.stdout.splitlines()]
    assert events[0]["event"] == "summary" and events[0]["records"] == 2
    assert events[1] == {
        "event": "conflict",
        "path": "x",
        "reason": "size 1 != 2",
        "kept": f"{a}#1",
        "dropped": f"{b}#1",
    }
    usage = xfer("manifest", "combine", str(tmp_path / "p.json"), "--out", str(out))
    assert usage.returncode == ExitCode.USAGE


@settings(deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "Path": st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s),
                "Size": st.integers(min_value=0, max_value=2**62),
                "IsDir": st.booleans(),
            }
        ),
        max_size=20,
    )
)
def test_lsjson_parser_round_trips_rclone_format(items: list[dict]) -> None:  # type: ignore[type-arg]
    text = _lsjson(items) if items else "[\n]\n"
    parsed = list(parse_lsjson_lines(text.encode().splitlines(keepends=True), "t"))
    assert parsed == [LsjsonItem(Path=i["Path"], Size=i["Size"], IsDir=i["IsDir"]) for i in items]
