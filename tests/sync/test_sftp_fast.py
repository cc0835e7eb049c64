"""The sftp backend's fast paths (docs/sync.md, "SFTP performance"), against the real sshd.

- a large file goes as one range per SFTP channel, all at once, into the temp file, and
  arrives byte-identical with its mode and mtime, both ways;
- a range that fails (the remote disk fills up at a fixed byte) leaves nothing under
  the final name and no temp file, and the re-run completes it;
- many small files go at once, capped by the server's open-handle limit
  (``limits@openssh.com``), and a whole tree of them arrives;
- one SSH packet per SFTP request (no empty ignore message before each), and blocks
  sent by xfer's own write path arrive whole across key exchanges;
- the ssh config's ``Ciphers`` win over xfer's AES-GCM preference;
- how many files go at once, and how a file is cut into ranges (pure functions).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh.packet import PacketDecodeError, SSHPacket
from hypothesis import given
from hypothesis import strategies as st

from xfer_backends import sftp
from xfer_backends.sftp import SftpBackend, SftpSession, files_in_flight, ranges
from xfer_core.sync.backend import PairResult, TransferOptions
from xfer_core.sync.progress import CollectingSink
from xfer_core.testing.conformance import job_for, remote_for_server, run_pair, snapshot
from xfer_core.testing.fixtures import remote_tmpfs
from xfer_core.testing.services import SshServer

MTIME = 1_600_000_000


def _big(path: Path, size: int, seed: int) -> bytes:
    import random

    data = random.Random(seed).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o640)
    os.utime(path, (MTIME, MTIME))
    return data


async def _move(sshd: SshServer, job: Any) -> tuple[PairResult, dict[str, Any]]:
    """Run one pair over a session of our own: the result and what the session did."""
    session = await SftpBackend().open(remote_for_server(sshd), TransferOptions())
    assert isinstance(session, SftpSession)
    try:
        result = await session.transfer(job, CollectingSink())
        seen = {
            "channels": len(session._channels),
            "ranged": session.ranged,
            "handles": await session.handles(),
        }
        return result, seen
    finally:
        await session.close()


@pytest.mark.sshd
def test_large_file_goes_in_ranges_over_channels_both_ways(sshd: SshServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    # not a multiple of the block: the last range is short
    data = _big(src / "sub" / "big.bin", 3 * sftp._RANGE_MIN + 12345, seed=1)
    (src / "small.txt").write_bytes(b"small\n")
    rdir = sshd.mkdtemp("ranges")
    result, seen = asyncio.run(_move(sshd, job_for(src, rdir)))
    assert result.error == "", result.error
    assert seen["channels"] == sftp._CHANNELS
    assert seen["ranged"] == 1
    assert (rdir / "sub" / "big.bin").read_bytes() == data
    assert snapshot(rdir) == snapshot(src)  # mode and mtime too
    assert [p.name for p in (rdir / "sub").iterdir()] == ["big.bin"]  # no temp file left

    back = tmp_path / "back"
    result, seen = asyncio.run(_move(sshd, job_for(back, rdir, "pull")))
    assert result.error == "", result.error
    assert seen["ranged"] == 1
    assert (back / "sub" / "big.bin").read_bytes() == data
    assert snapshot(back) == snapshot(src)
    assert sorted(p.name for p in (back / "sub").iterdir()) == ["big.bin"]


@pytest.mark.sshd
def test_failed_range_leaves_nothing_under_the_final_name(sshd: SshServer, tmp_path: Path) -> None:
    """The remote dir is a tmpfs smaller than the file: a range's write fails at a fixed
    byte (no space), deterministically; the other ranges stop, the temp file goes."""
    src = tmp_path / "src"
    data = _big(src / "big.bin", 2 * sftp._RANGE_MIN + 4096, seed=2)
    (src / "small.txt").write_bytes(b"small\n")
    rdir = sshd.mkdtemp("rfull")
    mnt = rdir / "dst"
    mnt.mkdir()
    with remote_tmpfs(sshd, mnt, str(sftp._RANGE_MIN)):
        result, seen = asyncio.run(_move(sshd, job_for(src, mnt)))
        assert seen["channels"] > 1, "the file was not sent in ranges"
        assert result.failed == 1 and "big.bin" in result.error, result
        assert sorted(p.name for p in mnt.iterdir()) == ["small.txt"]  # no big.bin, no temp
    result, _ = run_pair(SftpBackend(), remote_for_server(sshd), job_for(src, mnt))
    assert result.error == ""
    assert (mnt / "big.bin").read_bytes() == data


@pytest.mark.sshd
def test_many_small_files_at_once_capped_by_the_server(sshd: SshServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = {}
    for i in range(600):
        path = src / f"d{i % 7}" / f"f{i:04d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        files[path] = os.urandom(100 + i * 50)  # up to ~30 KiB: all in the unbounded class
        path.write_bytes(files[path])
    rdir = sshd.mkdtemp("many")
    result, seen = asyncio.run(_move(sshd, job_for(src, rdir)))
    assert result.error == "" and result.files_sent == 600
    assert snapshot(rdir) == snapshot(src)
    # the server said how many handles it allows (limits@openssh.com), and the cap follows it
    assert seen["handles"] > 0
    wide = files_in_flight(TransferOptions().parallel_files, seen["handles"])
    assert 600 <= wide <= seen["handles"] // 2
    # 600 small files to push (>= _SPREAD_MIN): spread over the extra channels
    assert seen["channels"] == sftp._CHANNELS
    result, seen = asyncio.run(_move(sshd, job_for(src, rdir)))
    assert result.files_sent == 0 and result.skipped == 600
    assert seen["channels"] == 0  # nothing to send: no extra channel opened


def _served_tree(sshd: SshServer, files: int) -> tuple[Path, dict[str, bytes]]:
    """A server-side tree of ``files`` small files (empty ones, hostile names, mixed modes
    and mtimes), owned by the server's user."""
    rdir = sshd.mkdtemp("served")
    names = ["-rf", "a\nb", " sp ", "ü.txt", "*?[x]"]
    made = {}
    for i in range(files):
        rel = f"d{i % 5}/{names[i] if i < len(names) else f'f{i:04d}'}"
        data = os.urandom(i * 37 % 9000) if i % 50 else b""
        path = rdir / rel
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o600 | (0o044 if i % 3 else 0) | (0o100 if i % 7 == 0 else 0))
        os.utime(path, (MTIME + i, MTIME + i))
        made[rel] = data
    sshd.chown(rdir)
    return rdir, made


def _record_lean_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, tuple[bytes, ...]]]:
    """Record every request xfer sends itself (``lean_request``): its type and fields."""
    sent: list[tuple[int, tuple[bytes, ...]]] = []
    real = sftp.lean_request

    def spy(handler: Any, kind: int, *fields: bytes) -> Any:
        sent.append((kind, fields))
        return real(handler, kind, *fields)

    monkeypatch.setattr(sftp, "lean_request", spy)
    return sent


def _kinds(requests: list[tuple[int, tuple[bytes, ...]]]) -> list[int]:
    return [kind for kind, _ in requests]


@pytest.mark.sshd
@pytest.mark.parametrize("lean", [True, False], ids=["lean", "asyncssh"])
def test_many_small_files_pulled_whole(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lean: bool
) -> None:
    """A pull of many small files: xfer's own requests (``lean_request``: open, then read
    and close at once), spread over the channels like a push; byte-identical with modes and
    mtimes, no temp file. Without the lean path (``lean_handler`` says no, as for a server
    other than SFTP version 3) asyncssh's requests give the same tree."""
    requests = _record_lean_requests(monkeypatch)
    if not lean:
        monkeypatch.setattr(sftp, "lean_handler", lambda _sftp: None)
    rdir, made = _served_tree(sshd, sftp._SPREAD_MIN + 44)
    back = tmp_path / "back"
    result, seen = asyncio.run(_move(sshd, job_for(back, rdir, "pull")))
    assert result.error == "" and result.files_sent == len(made), result
    assert snapshot(back) == snapshot(rdir)  # bytes, modes, mtimes
    for rel, data in made.items():
        assert (back / rel).read_bytes() == data
    assert not [p for p in back.rglob("*") if sftp.is_own_temp(p.name)]
    assert seen["channels"] == sftp._CHANNELS
    assert _kinds(requests).count(sftp._FXP_READ) == (len(made) if lean else 0)
    result, seen = asyncio.run(_move(sshd, job_for(back, rdir, "pull")))
    assert result.files_sent == 0 and result.skipped == len(made)


@pytest.mark.sshd
def test_pull_of_an_unreadable_file_fails_it_alone(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the server cannot read (mode 000, at a chosen file) fails on the lean path with
    one line naming it; its older local copy is kept as it was, every other file arrives
    whole, and no temp file is left."""
    requests = _record_lean_requests(monkeypatch)
    rdir, made = _served_tree(sshd, 40)
    bad = "d2/f0017"
    (rdir / bad).chmod(0)
    back = tmp_path / "back"
    (back / "d2").mkdir(parents=True)
    (back / bad).write_bytes(b"old copy")
    os.utime(back / bad, (MTIME - 60, MTIME - 60))  # older: to be replaced (a newer one stays)
    result, _ = asyncio.run(_move(sshd, job_for(back, rdir, "pull")))
    assert result.failed == 1 and result.files_sent == len(made) - 1, result
    assert bad in result.error and "ermission denied" in result.error, result.error
    assert "\n" not in result.error.strip()
    opened = [fields[0] for kind, fields in requests if kind == sftp._FXP_OPEN]
    assert any(name.endswith(b"/" + bad.encode()) for name in opened)  # it was tried, lean
    assert (back / bad).read_bytes() == b"old copy"
    for rel, data in made.items():
        if rel != bad:
            assert (back / rel).read_bytes() == data
            assert (back / rel).stat().st_mtime == (rdir / rel).stat().st_mtime
    assert not [p for p in back.rglob("*") if sftp.is_own_temp(p.name)]


@pytest.mark.sshd
def test_small_file_failing_on_the_lean_path_leaves_nothing(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small files go as xfer's own requests (``lean_request``); a write the server refuses
    (a 64 KiB tmpfs: the third 24 KiB file does not fit) fails that file with one line,
    leaves nothing under its final name and no temp file; the others arrive whole."""
    requests = _record_lean_requests(monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.dat").write_bytes(bytes([i]) * 24 * 1024)
        os.utime(src / f"f{i}.dat", (MTIME, MTIME))
    rdir = sshd.mkdtemp("smallfull")
    mnt = rdir / "dst"
    mnt.mkdir()
    with remote_tmpfs(sshd, mnt, "64k"):
        result, _ = asyncio.run(_move(sshd, job_for(src, mnt)))
        arrived = sorted(p.name for p in mnt.iterdir())
        assert result.failed == 1 and result.files_sent == 2, result
        assert len(arrived) == 2 and all(not sftp.is_own_temp(n) for n in arrived), arrived
        (lost,) = {"f0.dat", "f1.dat", "f2.dat"} - set(arrived)
        assert lost in result.error and "\n" not in result.error.strip()
        for name in arrived:
            assert (mnt / name).read_bytes() == (src / name).read_bytes()
            assert (mnt / name).stat().st_mtime == MTIME
    # open, write, fsetstat, close per file; posix-rename for the two that arrived
    assert _kinds(requests).count(sftp._FXP_OPEN) == 3
    assert _kinds(requests).count(sftp._FXP_EXTENDED) == 2


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(1, 700)))
def test_packet_reader_cuts_replies_from_any_pieces(packets: list[bytes], cuts: list[int]) -> None:
    """However the channel hands the bytes over, the replies come out whole, in order,
    and the end of the channel is an ``EOFError`` (what asyncssh's receive loop expects)."""
    stream = b"".join(len(p).to_bytes(4, "big") + p for p in packets)
    pieces, at = [], 0
    for n in cuts:
        if at < len(stream):
            pieces.append(stream[at : at + n])
            at += n
    pieces.append(stream[at:])

    class Pieces:  # the channel's reader: one piece per read, then the end
        def __init__(self) -> None:
            self.left = [p for p in pieces if p]

        async def read(self, _n: int) -> bytes:
            return self.left.pop(0) if self.left else b""

        async def readexactly(self, n: int) -> bytes:
            raise AssertionError("only replies over _JOIN_MAX are read exactly")

    async def go() -> list[bytes]:
        reader = sftp._PacketReader(Pieces(), 1 << 20)
        got = [(await reader()).get_remaining_payload() for _ in packets]
        with pytest.raises(EOFError):
            await reader()
        return got

    assert asyncio.run(go()) == packets


def test_cancelled_thread_work_is_waited_for() -> None:
    """A small file's local writes run in a thread (``in_thread``); a cancelled transfer
    waits for the thread to end, so the temp file it made is there for the clean-up (a
    thread cannot be stopped half-way)."""
    import threading

    started, release = threading.Event(), threading.Event()
    made: list[str] = []

    def work() -> None:
        started.set()
        release.wait(30)
        made.append("tmp")

    async def main() -> None:
        task = asyncio.ensure_future(sftp.in_thread(work))
        await asyncio.to_thread(started.wait, 30)
        task.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()  # still waiting for the thread
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert made == ["tmp"]

    asyncio.run(main())


@given(
    st.one_of(
        st.binary(max_size=64).map(sftp._string),  # a well-formed reply's payload
        st.binary(max_size=64),  # anything
        st.tuples(st.binary(max_size=64), st.binary(min_size=1, max_size=8)).map(
            lambda t: sftp._string(t[0]) + t[1]  # bytes after the string
        ),
    )
)
def test_reply_string_decodes_as_asyncssh_does(payload: bytes) -> None:
    """A handle or data reply's string (``lean_reply``) is what asyncssh's ``get_string`` and
    ``check_end`` give; what they refuse is ``SFTPBadMessage`` (never a wrong value)."""
    try:
        packet = SSHPacket(payload)
        theirs: bytes | None = packet.get_string()
        packet.check_end()
    except PacketDecodeError:
        theirs = None
    if theirs is None:
        with pytest.raises(asyncssh.SFTPBadMessage):
            sftp.reply_string(payload)
    else:
        assert sftp.reply_string(payload) == theirs


@pytest.mark.sshd
def test_one_ssh_packet_per_request_without_ignore_messages(sshd: SshServer) -> None:
    """asyncssh precedes every packet with an empty SSH_MSG_IGNORE (a countermeasure for
    CBC only); with AES-GCM each SFTP request is one SSH packet (sequence numbers count
    the packets sent)."""

    async def go() -> tuple[str, int]:
        conn = await sftp.connect(remote_for_server(sshd))
        try:
            client = await conn.start_sftp_client()
            before = conn._send_seq
            for _ in range(10):  # one at a time: each request is its own packet
                await client.stat(b"/")
            return str(conn.get_extra_info("send_cipher")), conn._send_seq - before
        finally:
            conn.close()

    cipher, packets = asyncio.run(go())
    assert cipher.startswith("aes128-gcm")
    assert packets == 10


@pytest.mark.sshd
def test_blocks_arrive_whole_across_key_exchanges(sshd: SshServer, tmp_path: Path) -> None:
    """Blocks written with ``write_block`` (one request each, the data framed and
    encrypted by xfer's own GCM path) arrive byte-identical while the connection renews
    its keys every 1 MiB sent (asyncssh's rekey limit, lowered here): each key exchange
    falls back to asyncssh's path and the next keys are picked up.

    Key exchanges are counted where asyncssh installs the new keys (``send_newkeys``),
    not by sampling ``id()`` of the cipher object: a freed cipher's id can be reused by
    the next one, which made an earlier version of this test count 3 of 5 renewals."""
    data = _big(tmp_path / "blocks.bin", 6 * 1024 * 1024 + 777, seed=3)
    rdir = sshd.mkdtemp("rekey")

    async def go() -> int:
        conn = await sftp.connect(remote_for_server(sshd))
        try:
            conn._rekey_bytes = 1024 * 1024  # asyncssh's rekey_bytes (default: 1 GiB)
            renewals = 0
            install = conn.send_newkeys

            def counted(k: bytes, h: bytes) -> None:
                nonlocal renewals
                renewals += 1
                install(k, h)

            conn.send_newkeys = counted  # type: ignore[method-assign]
            client = sftp.coalesce_requests(await conn.start_sftp_client())
            fd = os.open(tmp_path / "blocks.bin", os.O_RDONLY)
            try:
                async with client.open(os.fsencode(rdir / "blocks.bin"), "wb") as out:
                    block = client.limits.max_write_len
                    for at in range(0, len(data), 8 * block):
                        await asyncio.gather(
                            *(
                                sftp.write_block(out, fd, off, min(block, len(data) - off))
                                for off in range(at, min(at + 8 * block, len(data)), block)
                            )
                        )
            finally:
                os.close(fd)
            return renewals
        finally:
            conn.close()

    # A renewal starts at the first packet after 1 MiB was sent since the last one
    # began, and every renewal begun during a write finishes before that write's reply
    # (the data waits behind it). 6 MiB of writes in channel packets of at most 32 KiB
    # renew the keys 5 times (5 in every run here); 4 leaves room for larger packets.
    assert asyncio.run(go()) >= 4
    assert (rdir / "blocks.bin").read_bytes() == data


@pytest.mark.sshd
def test_ssh_config_ciphers_are_kept(sshd: SshServer, tmp_path: Path) -> None:
    """``Ciphers`` in the user's ssh config wins over xfer's AES-GCM preference; a large
    file then goes through asyncssh's own packet path (no GCM), byte-identical."""
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  Ciphers aes256-ctr,aes128-ctr\n")
    remote = remote_for_server(sshd, ssh_config=str(config))
    src = tmp_path / "src"
    data = _big(src / "big.bin", sftp._RANGE_MIN + 4321, seed=4)
    rdir = sshd.mkdtemp("ciphers")

    async def go() -> tuple[str, PairResult]:
        session = await SftpBackend().open(remote, TransferOptions())
        assert isinstance(session, SftpSession) and session.conn is not None
        try:
            cipher = str(session.conn.get_extra_info("send_cipher"))
            return cipher, await session.transfer(job_for(src, rdir), CollectingSink())
        finally:
            await session.close()

    cipher, result = asyncio.run(go())
    assert cipher == "aes256-ctr"
    assert result.error == ""
    assert (rdir / "big.bin").read_bytes() == data


def test_cipher_order_follows_the_ssh_config() -> None:
    from xfer_backends.sftp_login import PREFERRED_CIPHERS, ciphers
    from xfer_core.sync.ssh_login import parse_ssh_g

    def order(line: str) -> list[str]:
        return ciphers(parse_ssh_g(f"hostname h\n{line}\n"))

    # none set (ssh -G prints OpenSSH's defaults): xfer's order, AES-GCM first
    default = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,"
    default += "aes128-gcm@openssh.com,aes256-gcm@openssh.com"
    assert order(f"ciphers {default}") == list(PREFERRED_CIPHERS)
    assert order("") == list(PREFERRED_CIPHERS)
    # set: the user's, in the user's order, without those asyncssh lacks
    assert order("ciphers aes256-ctr,no-such-cipher,aes128-gcm@openssh.com") == [
        "aes256-ctr",
        "aes128-gcm@openssh.com",
    ]
    # none that asyncssh has: all of them, for asyncssh to refuse with its message
    assert order("ciphers no-such-cipher") == ["no-such-cipher"]


@given(st.integers(1, 100_000), st.integers(-1, 100_000))
def test_files_in_flight_follows_the_server_limit(wanted: int, handles: int) -> None:
    wide = files_in_flight(wanted, handles)
    assert 1 <= wide <= wanted
    if handles > 0:
        assert wide <= max(1, handles // 2)
    else:  # not offered: the cautious default
        assert wide <= sftp._FILES_UNKNOWN_LIMIT
    if handles >= 2 * wanted:
        assert wide == wanted


@given(st.integers(0, 10**10), st.integers(1, 16), st.integers(1, 1 << 20))
def test_ranges_cover_the_file_in_whole_blocks(size: int, parts: int, block: int) -> None:
    cut = ranges(size, parts, block)
    assert 1 <= len(cut) <= parts
    assert cut[0][0] == 0
    assert sum(length for _, length in cut) == size
    for (off, length), (nxt, _) in itertools.pairwise(cut):
        assert off + length == nxt
        assert length % block == 0 and length > 0
