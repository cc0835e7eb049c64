"""Hostile input: names holding every byte a POSIX filesystem allows, end to end.

One generated set of names contains every byte 0x01-0xFF but ``/`` (NUL and ``/``
are the only bytes a name cannot hold): each byte alone as a whole name (``...``
stands in for ``.``), plus names built to trip parsers: control characters inside
and at the ends (tab, CR, LF, ESC sequences, DEL), leading dashes, leading and
trailing spaces, dot-only-ish names, invalid UTF-8 (lone continuation bytes,
overlong forms, surrogates, beyond U+10FFFF), valid multi-byte UTF-8 (2-4 bytes,
BOM, zero-width, bidi override), one 255-byte name holding every byte at once,
and a 24-level deep path of awkward directory names.

Every route must deliver each name byte-identical with its content, and create
nothing else (names are compared as bytes; directories too):

- ``xfer sync`` then ``xfer fetch`` with rsync and with sftp (real sshd);
- ``xfer manifest build`` (posix lister), ``xfer manifest shard`` and ``xfer run``
  local -> local with the rclone engine;
- S3: keys are UTF-8, so only names that are valid UTF-8 without control
  characters can be S3 keys as they are. Names holding every such byte go
  local -> S3 with the rclone and the s5cmd engine, byte-identical (the default
  suite packs the bytes into fewer names: S3 is slow per object); under soak,
  every such name, and S3 -> local with rclone too. The other
  names are refused by s5cmd before anything runs, with an error counting and
  naming them; the rclone engine accepts them (rclone carries them on real S3,
  invalid UTF-8 with its encoding), which the test S3 server (``rclone serve s3``)
  cannot store: the run fails with rclone's error and no shard is marked done
  (that round trip is not checked here).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xfer_core.testing.services import S3Server, SshServer

from .conftest import Tally
from .helpers import canaries, cluster_config, local_run, ssh_env, xfer

CLASS = "hostile input: every byte in names"


def _lead(lead: int) -> bytes:
    """A valid UTF-8 character starting with byte ``lead`` (0xC2-0xF4)."""
    if lead < 0xE0:
        return bytes([lead, 0xA9])
    if lead < 0xF0:
        return bytes([lead, 0xA4 if lead == 0xE0 else 0x80, 0x80])
    return bytes([lead, 0x90 if lead == 0xF0 else 0x80, 0x80, 0x80])


def _names() -> list[bytes]:
    names = [b"..." if b == 0x2E else bytes([b]) for b in range(1, 256) if b != 0x2F]
    every = bytes(b for b in range(1, 256) if b != 0x2F)  # 254 bytes
    names += [
        every + b"!",  # 255 bytes: the longest name, every byte at once
        b"--rf",
        b"-e x",
        b"  two leading",
        b"two trailing  ",
        b" . ",
        b"..x",
        b"x..",
        b".hidden",
        b"....",
        b"\x1b[31mred\x1b[0m",
        b"cr\r\nlf",
        b"\nleading-newline",
        b"trailing-newline\n",
        b"tab\tand space",
        b"del\x7f",
        b"bad-\xff\nboth",
        b"\xc3( invalid 2-byte",
        b"\xc0\xaf overlong slash",
        b"\xed\xa0\x80 surrogate",
        b"\xf4\x90\x80\x80 beyond U+10FFFF",
        b"\x80\xbf lone continuations",
        "é-ü-日本-🙂".encode(),
        "\ufeffbom \u200bzero-width".encode(),
        "bidi \u202eevil\u202c.txt".encode(),
        "line\u2028para\u2029sep".encode(),
        "e\u0301 combining".encode(),
        # valid UTF-8 holding every continuation byte and every lead byte
        "".join(map(chr, range(0xC0, 0x100))).encode(),
        b"utf8 leads " + b"".join(_lead(lead) for lead in range(0xC2, 0xF5)),
    ]
    deep = [
        b"d-" + bytes([b]) + b" " + bytes([0xFF - i])
        for i, b in enumerate(b"-\t\n\r $`'\\\"*?[;|&<>(){}~#!%^=+,")
    ]
    names.append(b"/".join(deep[:24]) + b"/leaf\x01\xfe")
    names += [b"d-dir -/--x", b"d-dir -/ lead", b"d-\xff\xfe/\n", b"d-...../...."]
    assert len(set(names)) == len(names)
    return names


NAMES = _names()


def s3_key_ok(name: bytes) -> bool:
    """Can ``name`` be an S3 key as it is (valid UTF-8, no control character)?"""
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(b < 0x20 or b == 0x7F for b in name)


S3_NAMES = [n for n in NAMES if s3_key_ok(n)]
NOT_S3_NAMES = [n for n in NAMES if not s3_key_ok(n)]
_PRINTABLE = bytes(b for b in range(0x20, 0x7F) if b != 0x2F)
#: Fewer objects with the same bytes, for the default suite (S3 is slow per object).
S3_COMPACT = [
    _PRINTABLE,
    (b"-" + _PRINTABLE[::-1] * 3)[:255],
    *(bytes([b]) for b in b" -~*\\'\"#$`"),
    *(n for n in S3_NAMES if len(n) > 1),
]


def test_the_names_hold_every_byte() -> None:
    seen = {b for name in NAMES for part in name.split(b"/") for b in part}
    assert seen == set(range(1, 256)) - {0x2F}
    assert max(len(c) for n in NAMES for c in n.split(b"/")) == 255
    # the S3 subset still holds every byte a UTF-8 key without control characters can
    utf8_bytes = set(range(0x20, 0x7F)) | set(range(0x80, 0xC0)) | set(range(0xC2, 0xF5))
    for names in (S3_NAMES, S3_COMPACT):
        s3_seen = {b for name in names for part in name.split(b"/") for b in part}
        assert s3_seen == utf8_bytes - {0x2F}
        assert all(s3_key_ok(n) for n in names) and len(set(names)) == len(names)


def write_names(root: Path, names: list[bytes]) -> dict[bytes, bytes]:
    """Files named ``names`` (bytes) under ``root``, distinct contents, one empty."""
    files = {}
    base = os.fsencode(root)
    for i, name in enumerate(names):
        data = b"" if i == 0 else b"%d:" % i + name + b"\n" + bytes([i % 256]) * (i % 50)
        path = base + b"/" + name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        files[name] = data
    return files


def tree(root: Path) -> tuple[dict[bytes, bytes], set[bytes]]:
    """``({relative name: content}, {relative dir})`` below ``root``, all as bytes."""
    files: dict[bytes, bytes] = {}
    dirs: set[bytes] = set()
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        prefix = b"" if rel == b"." else rel + b"/"
        dirs.update(prefix + d for d in dirnames)
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as fh:
                files[prefix + name] = fh.read()
    return files, dirs


def parents(names: list[bytes]) -> set[bytes]:
    return {n.rsplit(b"/", i)[0] for n in names for i in range(1, n.count(b"/") + 1)}


def assert_same(root: Path, files: dict[bytes, bytes], where: str) -> int:
    """``root`` holds exactly ``files`` (and their directories); return the number lost."""
    got, dirs = tree(root)
    missing = sorted(set(files) - set(got))
    extra = sorted(set(got) - set(files))
    assert not missing and not extra, f"{where}: missing {missing[:8]}, extra {extra[:8]}"
    wrong = [n for n in files if got[n] != files[n]]
    assert not wrong, f"{where}: content differs for {wrong[:8]}"
    assert dirs == parents(list(files)), f"{where}: dirs {sorted(dirs ^ parents(list(files)))}"
    return len(missing) + len(wrong)


@pytest.mark.sshd
@pytest.mark.parametrize("backend", ["rsync", "sftp"])
def test_sync_and_fetch_carry_every_byte(
    sshd: SshServer, tmp_path: Path, backend: str, tally: Tally
) -> None:
    src, back = tmp_path / "src", tmp_path / "back"
    files = write_names(src, NAMES)
    rdir = sshd.mkdtemp("everybyte")
    rel = rdir.relative_to(sshd.home)
    config = cluster_config(
        tmp_path / "remotes.toml",
        sshd,
        sync_dirs=[{"alias": "p", "local": str(src), "remote": f"~/{rel}/dst"}],
        fetch_dirs=[{"alias": "b", "local": str(back), "remote": f"~/{rel}/dst"}],
    )
    env = ssh_env(sshd, tmp_path)
    common = ["--config", str(config), "-b", backend]
    push = xfer("sync", *common, env=env, cwd=tmp_path)
    assert push.returncode == 0, push.stderr[-3000:]
    lost = assert_same(rdir / "dst", files, f"{backend} sync")
    fetch = xfer("fetch", *common, env=env, cwd=tmp_path)
    assert fetch.returncode == 0, fetch.stderr[-3000:]
    lost += assert_same(back, files, f"{backend} fetch")
    assert_same(src, files, "source")  # the source is untouched
    assert set(os.listdir(rdir)) == {"dst"}
    assert canaries(tmp_path, rdir) == []
    tally(cases=2 * len(NAMES), lost=lost)


def test_manifest_build_shard_and_local_run(tmp_path: Path, tally: Tally) -> None:
    src, dst, run = tmp_path / "src", tmp_path / "dst", tmp_path / "run"
    files = write_names(src, NAMES)
    manifest = run / "manifest.jsonl"
    built = xfer(
        "manifest", "build", "--lister", "posix", "--source", str(src), "--dest", str(dst),
        "--out", str(manifest),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    from xfer_core.manifest.jsonl import read_manifest
    from xfer_core.manifest.record import path_bytes

    listed = {path_bytes(r): r.size for r in read_manifest(manifest)}
    assert listed == {n: len(d) for n, d in files.items()}
    shards = tmp_path / "shards"
    sharded = xfer("manifest", "shard", "--in", str(manifest), "--outdir", str(shards), "-n", "3")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    in_shards = [
        path_bytes(r) for p in sorted(shards.glob("shard_*.jsonl")) for r in read_manifest(p)
    ]
    assert sorted(in_shards) == sorted(files)
    proc = xfer("--json", *local_run(run, src, dst, 3, "--max-attempts", "1"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["done"] == summary["shards"] == 3
    lost = assert_same(dst, files, "run local->local")
    assert canaries(tmp_path) == []
    tally(cases=3 * len(NAMES), lost=lost)


def s3_run(engine: str, s3: S3Server, run: Path, source: str, dest: str) -> list[str]:
    return [
        "--json", "run", "--run-dir", str(run), "--source", source, "--dest", dest,
        "--num-shards", "2", "--rclone-config", str(s3.rclone_config), "--max-attempts", "1",
        "--rclone-flags", "--retries 1", "--engine", engine, "--scheduler", "local",
    ]  # fmt: skip


def s3_uploads(s3: S3Server, tmp_path: Path, names: list[bytes]) -> tuple[int, str]:
    """``names`` local -> S3 with the rclone and the s5cmd engine; (objects lost, prefix)."""
    import uuid

    prefix = f"everybyte-{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src"
    files = write_names(src, names)
    lost = 0
    for engine in ("rclone", "s5cmd"):
        dest = s3.remote("dst", f"{prefix}-{engine}")
        proc = xfer(*s3_run(engine, s3, tmp_path / f"run-{engine}", str(src), dest), "--submit")
        assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
        lost += assert_same(s3.root / "dst" / f"{prefix}-{engine}", files, f"{engine} local->S3")
    return lost, prefix


@pytest.mark.s3
def test_s3_routes_carry_every_key_byte_and_refuse_the_rest(
    s3: S3Server, tmp_path: Path, tally: Tally
) -> None:
    lost, prefix = s3_uploads(s3, tmp_path, S3_COMPACT)
    cases = 2 * len(S3_COMPACT)
    # names no S3 key can hold as they are: s5cmd refuses them all before anything runs
    bad = tmp_path / "bad"
    write_names(bad, NOT_S3_NAMES)
    args = s3_run("s5cmd", s3, tmp_path / "run-bad", str(bad), s3.remote("dst", prefix + "-bad"))
    proc = xfer(*args, "--submit", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("xfer: error:") and "Traceback" not in proc.stderr
    assert f"cannot copy {len(NOT_S3_NAMES)} object(s)" in proc.stderr, proc.stderr
    assert f"(and {len(NOT_S3_NAMES) - 5} more)" in proc.stderr, proc.stderr
    assert sum(repr(n) in proc.stderr for n in NOT_S3_NAMES) == 5, proc.stderr
    assert not (s3.root / "dst" / (prefix + "-bad")).exists()
    assert list((tmp_path / "run-bad").glob("state/shard_*.done")) == []
    cases += len(NOT_S3_NAMES)
    # the rclone engine accepts them (rclone carries them on real S3, invalid UTF-8 with
    # its encoding); the test server cannot store them: the run fails, nothing is done
    some = tmp_path / "some"
    write_names(some, [b"\x01", b"\n", b"\x7f", b"x\xe9", b"\xff"])
    args = s3_run("rclone", s3, tmp_path / "run-rc", str(some), s3.remote("dst", prefix + "-b"))
    args[args.index("--num-shards") + 1] = "1"
    args[args.index("--rclone-flags") + 1] = "--retries 1 --low-level-retries 1"  # fail fast
    proc = xfer(*args, "--submit", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:] + proc.stdout[-2000:]
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert (summary["done"], summary["failed"]) == (0, 1), summary
    assert "rclone copy exit" in summary["failures"][0]["reason"], summary
    assert list((tmp_path / "run-rc").glob("state/shard_*.done")) == []
    cases += 5
    assert canaries(tmp_path, s3.root) == []
    tally(cases=cases, lost=lost)


@pytest.mark.s3
@pytest.mark.soak  # slow per object; `rclone serve s3` hung listing these keys in one run
def test_s3_every_name_up_and_back(s3: S3Server, tmp_path: Path, tally: Tally) -> None:
    lost, prefix = s3_uploads(s3, tmp_path, S3_NAMES)
    back = tmp_path / "back"
    src = s3.remote("dst", f"{prefix}-rclone")
    proc = xfer(*s3_run("rclone", s3, tmp_path / "run-down", src, str(back)), "--submit")
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    lost += assert_same(back, tree(tmp_path / "src")[0], "rclone S3->local")
    tally(cases=3 * len(S3_NAMES), lost=lost)
