"""``xfer run`` against one ``rclone copy``, on random trees whose destination already
holds objects: the same, changed, the same size with other content (same or older
mtime), newer, and extra ones.

Each example draws a source (a local tree or an S3 prefix) and a destination pre-state;
identical copies of the pre-state go to one S3 prefix per shard count (1, 3, 8) and one
for the oracle. ``xfer run --scheduler local`` (copy + verify per shard) moves the source
to each; ``rclone copy`` with the same flags to the oracle's. Then:

- every destination holds exactly what the oracle's holds (content of every object);
- the run's verdict (exit 0: every shard copied and verified) is ``rclone check
  --one-way``'s on the oracle's destination;
- ``xfer manifest verify`` of the run's manifest agrees with ``rclone check --one-way``
  on the run's destination (``--size-only`` when the manifest has no hashes: a local
  source is listed without reading its files).

The default suite runs a fixed (derandomized) slice; ``XFER_SOAK=1`` a longer one.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability.conftest import Tally

from xfer_core.manifest.jsonl import read_manifest
from xfer_core.testing import cli
from xfer_core.testing.services import S3Server

from .profiles import FAST, SOAK

CLASS = "differential: run vs rclone copy"

pytestmark = pytest.mark.s3

FLAGS = "--transfers 4 --checkers 4 --retries 1 --low-level-retries 2"
SHARDS = (1, 3, 8)
BASE = 1_600_000_000
NAMES = (
    "a",
    "b.txt",
    "d/c",
    "d/e/f.bin",
    "d/e/g",
    "with space.txt",
    "quote'single.txt",
    "$(touch CANARY).txt",
    "-leading-dash.txt",
    "ünïcødé/ファイル.txt",
    "back\\slash.txt",
    "semi;colon #hash.txt",
)

Obj = tuple[bytes, int]  # content, mtime
contents = st.sampled_from([b"", b"one\n", b"two\n", b"0123456789" * 40, bytes(range(256)) * 9])


@st.composite
def states(draw: st.DrawFn) -> tuple[dict[str, Obj], dict[str, Obj]]:
    """(source objects, destination pre-state)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=3, max_size=10, unique=True))
    names = [n for n in names if not any(m.startswith(n + "/") for m in names)]
    src = {n: (draw(contents), BASE + 60 * i) for i, n in enumerate(names)}
    dst: dict[str, Obj] = {}
    for name, (data, mtime) in src.items():
        other = bytes(b ^ 0x33 for b in data) or b"?"
        op = draw(
            st.sampled_from(
                [
                    "absent",
                    "same",
                    "changed",
                    "same size, other content, same mtime",
                    "same size, other content, older",
                    "other content, newer",
                ]
            )
        )
        if op == "same":
            dst[name] = (data, mtime)
        elif op == "changed":
            dst[name] = (other + b"!", mtime - 500)
        elif op.startswith("same size"):
            dst[name] = (other[: len(data)], mtime if "same mtime" in op else mtime - 500)
        elif op == "other content, newer":
            dst[name] = (other, mtime + 500)
    for name in draw(st.lists(st.sampled_from(["x/extra", "extra.bin", "zz"]), unique=True)):
        dst[name] = (b"extra\n", BASE)
    return src, dst


def write(root: Path, objects: dict[str, Obj]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, (data, mtime) in objects.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))


def read(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def xfer(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return cli.xfer(*args, env={"XFER_PLAIN": "1"}, timeout=timeout)


def check(s3: S3Server, src: str, dst: str, *extra: str) -> int:
    proc = s3.run_rclone("check", "--one-way", *FLAGS.split(), *extra, src, dst)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode


def run_differential(
    s3: S3Server, tmp: Path, source: str, state: tuple[dict[str, Obj], dict[str, Obj]]
) -> int:
    """Compare; returns the number of runs compared (one per shard count)."""
    src_objects, pre = state
    tag = uuid.uuid4().hex[:8]
    if source == "local":
        write(tmp / "src", src_objects)
        src = str(tmp / "src")
    else:
        write(s3.root / "src" / tag, src_objects)
        src = s3.remote("src", tag)
    write(s3.root / "dst" / f"{tag}-rclone", pre)
    oracle = s3.run_rclone("copy", *FLAGS.split(), src, s3.remote("dst", f"{tag}-rclone"))
    assert oracle.returncode == 0, oracle.stderr
    want = read(s3.root / "dst" / f"{tag}-rclone")
    verified = check(s3, src, s3.remote("dst", f"{tag}-rclone")) == 0
    case = f"source {source}: src={src_objects} pre={pre}"
    runs = 0
    for shards in sorted({min(n, len(src_objects)) for n in SHARDS}):  # no empty shard
        dest = s3.remote("dst", f"{tag}-{shards}")
        write(s3.root / "dst" / f"{tag}-{shards}", pre)
        run = tmp / f"run{shards}"
        proc = xfer(
            *["--json", "run", "--run-dir", str(run), "--source", src, "--dest", dest],
            *["--num-shards", str(shards), "--array-concurrency", "4", "--max-attempts", "1"],
            *["--rclone-config", str(s3.rclone_config), "--rclone-flags", FLAGS],
            *["--scheduler", "local", "--submit"],
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode in (0, 1), proc.stderr
        got = read(s3.root / "dst" / f"{tag}-{shards}")
        assert got == want, f"{case}, {shards} shards: the destination differs from rclone copy's"
        assert (proc.returncode == 0) == verified, (
            f"{case}, {shards} shards: xfer run exit {proc.returncode}, rclone check on "
            f"rclone copy's destination says {'equal' if verified else 'different'}: "
            f"{proc.stderr}"
        )
        verify = xfer(
            *["manifest", "verify", "--in", str(run / "manifest.jsonl")],
            *["--rclone-config", str(s3.rclone_config)],
        )
        assert verify.returncode in (0, 1), verify.stderr
        # a manifest without hashes (a local source: listing does not read files) is
        # verified by size; rclone check reads and hashes local files (docs/sync.md,
        # "Differences from rsync and rclone")
        hashed = any(r.hashes for r in read_manifest(run / "manifest.jsonl"))
        checked = check(s3, src, dest, *([] if hashed else ["--size-only"]))
        assert hashed == (source == "s3")
        runs += 1
        assert verify.returncode == checked, (
            f"{case}, {shards} shards: manifest verify exit {verify.returncode}, rclone check "
            f"exit {checked}: {verify.stdout} {verify.stderr}"
        )
    assert not list(tmp.rglob("CANARY")) and not list(Path.cwd().glob("CANARY"))
    return runs


SLICES = [
    pytest.param(settings(FAST, max_examples=1), id="fast"),
    pytest.param(
        settings(SOAK, max_examples=25),
        id="soak",
        marks=[pytest.mark.soak, pytest.mark.timeout(3600)],
    ),
]


@pytest.mark.parametrize("source", ["local", "s3"])
@pytest.mark.parametrize("profile", SLICES)
def test_run_matches_rclone_copy(
    s3: S3Server,
    tmp_path_factory: pytest.TempPathFactory,
    source: str,
    profile: settings,
    tally: Tally,
) -> None:
    @profile
    @given(state=states())
    def compare(state: tuple[dict[str, Obj], dict[str, Obj]]) -> None:
        tmp = tmp_path_factory.mktemp(f"run-{source}")
        runs = run_differential(s3, tmp, source, state)
        tally(cases=runs)

    compare()
