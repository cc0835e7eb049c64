"""Manifest records and the streaming JSONL reader/writer: hostile names, bad lines, atomicity."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xfer_core.errors import ExitCode, ManifestError
from xfer_core.manifest.jsonl import ManifestWriter, read_manifest, write_manifest
from xfer_core.manifest.record import (
    PATH_B64,
    SCHEMA,
    ManifestRecord,
    check_relative_path,
    path_bytes,
    path_fields,
)

HOSTILE_NAMES = [
    'quote"double',
    "quote'single",
    "hash#mark",
    "semi;colon",
    "back\\slash",
    "new\nline",
    "tab\there",
    "carriage\rreturn",
    "ünïcödé/日本語/😀",
    "spaces  and trailing ",
    " leading space",
    "-dash-first",
    "dir with space/sub dir/file name",
    "$(touch pwned)`id`",
    "*?[glob]{a,b}",
    "percent%20encoded",
    "\u202eright-to-left",
    "zero\u200bwidth",
]


def _record(path: str, size: int = 1, **kw: object) -> ManifestRecord:
    return ManifestRecord(path=path, size=size, **kw)  # type: ignore[arg-type]


def test_hostile_names_round_trip(tmp_path: Path) -> None:
    records = [_record(name, i) for i, name in enumerate(HOSTILE_NAMES)]
    out = tmp_path / "m.jsonl"
    assert write_manifest(out, records) == len(records)
    # one record per physical line, whatever the names contain
    assert len(out.read_bytes().splitlines()) == len(records)
    assert list(read_manifest(out)) == records


def test_all_fields_round_trip(tmp_path: Path) -> None:
    rec = ManifestRecord(
        path="a/b.txt",
        size=12,
        run_id="r1",
        source_root="s3:src/pre",
        dest_root="/dst",
        source="s3:src/pre/a/b.txt",
        dest="/dst/a/b.txt",
        mtime="2024-01-02T03:04:05.123456789Z",
        hashes={"md5": "0" * 32},
        etag='"abc-2"',
        storage_class="STANDARD",
        meta={"x": [1, 2], "y": None},
    )
    out = tmp_path / "m.jsonl"
    write_manifest(out, [rec, _record("c", 0, mtime=1700000000.5)])
    assert list(read_manifest(out)) == [rec, _record("c", 0, mtime=1700000000.5)]
    first = msgspec.json.decode(out.read_bytes().splitlines()[0])
    assert first["schema"] == SCHEMA


@pytest.mark.parametrize(
    "name",
    [b"latin1-\xe9t\xe9", b"\xff\xfe", b"ok/\x80bad/\xc3", b"mixed-\xc3\xa9-\xe9"],
)
def test_non_utf8_names_keep_their_exact_bytes(tmp_path: Path, name: bytes) -> None:
    path, meta = path_fields(name)
    assert PATH_B64 in meta
    assert base64.b64decode(meta[PATH_B64]) == name
    rec = _record(path, 3, meta=meta)
    out = tmp_path / "m.jsonl"
    write_manifest(out, [rec])
    (back,) = read_manifest(out)
    assert path_bytes(back) == name
    # the readable form is valid text and shows the bad bytes as \xNN
    assert "\\x" in back.path
    back.path.encode("utf-8")


def test_utf8_names_need_no_meta() -> None:
    assert path_fields("ünï/ok".encode()) == ("ünï/ok", {})
    assert path_bytes(_record("ünï/ok")) == "ünï/ok".encode()


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    line = msgspec.json.encode(_record("a")).decode()
    out.write_text(f"\n{line}\n   \n\t\n{line}\n\n")
    assert [r.path for r in read_manifest(out)] == ["a", "a"]


def _bad_manifest(tmp_path: Path, bad: str) -> Path:
    good = msgspec.json.encode(_record("fine")).decode()
    out = tmp_path / "bad.jsonl"
    out.write_text(f"{good}\n\n{bad}\n{good}\n")
    return out


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"path": "a", "size": 1', "not valid JSON"),
        ("not json at all", "not valid JSON"),
        ('{"path": "a", "size": "12"}', "Expected `int`"),
        ('{"path": 5, "size": 1}', "Expected `str`"),
        ('{"size": 1}', "missing required field `path`"),
        ('{"path": "a", "size": 1, "schema": "other.v9"}', "unknown schema 'other.v9'"),
        ('{"path": "/etc/passwd", "size": 1}', "absolute path"),
        ('{"path": "a/../../b", "size": 1}', "'..'"),
        ('{"path": "..", "size": 1}', "'..'"),
        ('{"path": "", "size": 1}', "empty path"),
        ('{"path": "a", "size": -1}', "negative size"),
        ("[1, 2]", "Expected `object`"),
    ],
)
def test_bad_line_is_reported_with_file_and_line(tmp_path: Path, bad: str, reason: str) -> None:
    out = _bad_manifest(tmp_path, bad)
    seen: list[str] = []
    with pytest.raises(ManifestError) as info:
        seen.extend(r.path for r in read_manifest(out))
    message = str(info.value)
    assert message.startswith(f"{out}:3: ")
    assert reason in message
    assert "\n" not in message
    assert info.value.exit_code == ExitCode.USAGE
    assert seen == ["fine"]  # streaming: the good line before it was delivered


def test_unreadable_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read manifest"):
        list(read_manifest(tmp_path / "missing.jsonl"))


def test_unknown_fields_from_other_tools_are_ignored(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    out.write_text('{"path": "a", "size": 1, "tool_specific": {"k": 1}}\n')
    assert list(read_manifest(out)) == [_record("a")]


def test_writer_failure_leaves_old_manifest(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    write_manifest(out, [_record("old")])
    before = out.read_bytes()
    with pytest.raises(RuntimeError), ManifestWriter(out) as writer:
        writer.write(_record("new"))
        raise RuntimeError("boom")
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.jsonl"]


def test_writer_counts(tmp_path: Path) -> None:
    with ManifestWriter(tmp_path / "m.jsonl") as writer:
        writer.write_all(_record(f"f{i}", i) for i in range(100))
    assert (writer.count, writer.total_bytes) == (100, sum(range(100)))


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("a", True),
        ("a/b/c", True),
        ("..a/b..", True),
        ("a/./b", True),
        ("/a", False),
        ("a/../b", False),
        ("../a", False),
        ("a/..", False),
        ("", False),
        ("a\x00b", False),
    ],
)
def test_check_relative_path(path: str, ok: bool) -> None:
    assert (check_relative_path(path) is None) == ok


# -- property: any acceptable record survives write + read unchanged -----------------------

_segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
_paths = st.lists(_segment, min_size=1, max_size=4).map("/".join)
_records = st.builds(
    ManifestRecord,
    path=_paths,
    size=st.integers(min_value=0, max_value=2**63 - 1),
    run_id=st.text(max_size=8),
    source=st.text(max_size=20),
    mtime=st.one_of(
        st.none(), st.text(max_size=30), st.floats(allow_nan=False, allow_infinity=False)
    ),
    hashes=st.dictionaries(
        st.sampled_from(["md5", "sha1", "crc32"]), st.text("0123456789abcdef", max_size=40)
    ),
    etag=st.one_of(st.none(), st.text(max_size=20)),
    # meta["path_b64"] is xfer's own key (exact bytes of a non-UTF-8 name), checked on read
    meta=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k != PATH_B64),
        st.one_of(st.integers(), st.text(max_size=8), st.none()),
    ),
)


@settings(max_examples=150, deadline=None)
@given(records=st.lists(_records, max_size=20))
def test_manifest_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory, records: list[ManifestRecord]
) -> None:
    out = tmp_path_factory.mktemp("prop") / "m.jsonl"
    assert write_manifest(out, records) == len(records)
    assert list(read_manifest(out)) == records


@settings(max_examples=150, deadline=None)
@given(name=st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00" not in b))
def test_path_fields_round_trip_property(name: bytes) -> None:
    path, meta = path_fields(name)
    assert path_bytes(_record(path, meta=meta)) == name
    path.encode("utf-8")  # always valid text for JSON


def test_invalid_utf8_inside_a_line_is_a_bad_line(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    out.write_bytes(b'{"path": "ok", "size": 1}\n{"path": "bad\xff", "size": 1}\n')
    with pytest.raises(ManifestError, match=rf"^{out}:2: not valid JSON"):
        list(read_manifest(out))


def test_crlf_line_endings_are_accepted(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    out.write_bytes(b'{"path": "a", "size": 1}\r\n\r\n{"path": "b", "size": 2}\r\n')
    assert [(r.path, r.size) for r in read_manifest(out)] == [("a", 1), ("b", 2)]
