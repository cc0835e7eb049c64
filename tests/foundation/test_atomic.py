"""Atomic writes: the real name holds the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from xfer_core.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_new_content_replaces_old(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    atomic_write_text(target, "new ünïcode")
    assert target.read_text(encoding="utf-8") == "new ünïcode"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_parent_dirs_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    atomic_write_bytes(target, b"\x00\xff")
    assert target.read_bytes() == b"\x00\xff"


def test_default_perms_follow_umask_and_explicit_perms_win(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "default", b"x")
        atomic_write_bytes(tmp_path / "secret", b"x", perms=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "default").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_mid_write_keeps_old_file_and_leaves_no_litter(
    tmp_path: Path, exc: BaseException
) -> None:
    target = tmp_path / "state.json"
    target.write_text('{"old": true}')
    with pytest.raises(type(exc)), atomic_write(target, "w") as fh:
        fh.write('{"new": ')
        fh.flush()
        raise exc
    assert target.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["state.json"]


def test_exception_before_first_write_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "never.txt"
    with pytest.raises(ValueError), atomic_write(target, "wb"):
        raise ValueError
    assert os.listdir(tmp_path) == []


def test_bad_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):  # type: ignore[call-overload]
        pass


_WRITER = """
import sys, time
from xfer_core.atomic import atomic_write
with atomic_write(sys.argv[1], "wb") as fh:
    fh.write(b"partial new content " * 1000)
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_process_killed_mid_write_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.jsonl"
    target.write_bytes(b"old complete content\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "writing\n"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    assert target.read_bytes() == b"old complete content\n"
    # a hard kill can leave the temp file behind, but only as a hidden dot-file beside it
    litter = [n for n in os.listdir(tmp_path) if n != "manifest.jsonl"]
    assert all(n.startswith(".manifest.jsonl.") and n.endswith(".tmp") for n in litter)


def test_concurrent_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    versions = [bytes([i]) * 200_000 for i in range(20)]
    atomic_write_bytes(target, versions[0])
    seen: list[bytes] = []
    done = threading.Event()
    reading = threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.append(target.read_bytes())
            reading.set()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        # the writes begin once the reader reads (a starved thread may not have yet)
        assert reading.wait(60)
        for data in versions[1:]:
            atomic_write_bytes(target, data)
    finally:
        done.set()
        thread.join()
    assert seen
    assert all(data in versions for data in seen)
