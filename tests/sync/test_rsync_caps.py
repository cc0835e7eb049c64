"""Which flags xfer gives the local rsync, from its --version (no flag an old rsync lacks)."""

from __future__ import annotations

import shutil

import pytest

from xfer_backends.rsync import (
    RsyncBackend,
    RsyncSession,
    detect_caps,
    explain_ssh_failure,
    parse_version,
    unescape_name,
)
from xfer_core.sync.backend import PairJob, Remote
from xfer_core.sync.excludes import ExcludeMatcher


def test_versions() -> None:
    new = parse_version("rsync  version 3.2.7  protocol version 31\n")
    assert new.version == (3, 2, 7) and new.mkpath and new.protect_args and new.progress2
    mac = parse_version("rsync  version 2.6.9  protocol version 29\n")
    assert not (mac.mkpath or mac.protect_args or mac.progress2 or mac.old_args)
    mid = parse_version("rsync  version v3.1.3  protocol version 31")
    assert mid.protect_args and mid.progress2 and not mid.mkpath
    openrsync = parse_version("openrsync: protocol version 29\nrsync version 2.6.9 compatible")
    assert openrsync.openrsync and not openrsync.protect_args and not openrsync.eight_bit


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync not installed")
def test_emulating_an_old_rsync_with_a_new_binary() -> None:
    rsync = shutil.which("rsync")
    assert rsync is not None
    real = detect_caps(rsync)
    fake = detect_caps(rsync, "2.6.9")
    assert fake.version == (2, 6, 9) and fake.real_version == real.version
    assert fake.old_args == (real.version >= (3, 2, 4))


@pytest.mark.parametrize("emulate", [None, "2.6.9"])
def test_argv_has_only_supported_flags(emulate: str | None) -> None:
    caps = parse_version(f"version {emulate or '3.2.7'}")
    session = RsyncSession("rsync", caps, Remote(name="c", host="h", port=2222))
    job = PairJob("c", "a", "push", "/src", "~/x", ExcludeMatcher(["*.o"]), delete=True)
    argv = session.argv(job, "/home/u/it's here")
    assert argv[:3] == ["rsync", "-rlpt", "--update"]
    assert "--delete" in argv and "--exclude=*.o" in argv
    if emulate:
        assert not {"-s", "--mkpath", "--info=progress2"} & set(argv)
        assert argv[-1] == "h:'/home/u/it'\"'\"'s here/'"  # quoted for the remote shell
    else:
        assert {"-s", "--mkpath", "--info=progress2"} <= set(argv)
        assert argv[-1] == "h:/home/u/it's here/"
    shutil.rmtree(session._dir, ignore_errors=True)


def test_ssh_failures_are_one_line() -> None:
    remote = Remote(name="c", host="h", port=22, user="u")
    changed = "@@@@\n@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\n@@@@\nHost key verification failed.\n"
    assert "does not match" in explain_ssh_failure(changed, remote)
    assert "unknown" in explain_ssh_failure("Host key verification failed.\r\n", remote)
    assert "login refused" in explain_ssh_failure("u@h: Permission denied (publickey).", remote)
    refused = explain_ssh_failure("ssh: connect to host h port 22: Connection refused", remote)
    assert refused.startswith("c (u@h:22): unreachable") and "\n" not in refused


def test_unescape_rsync_names() -> None:
    assert unescape_name(b"new\\#012line.txt") == "new\nline.txt"
    assert unescape_name(b"caf\xc3\xa9") == "café"


def test_backend_check_names_the_missing_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    avail = RsyncBackend().check()
    assert not avail.ok and avail.reason == "rsync: not on PATH"


@pytest.mark.parametrize(
    ("path", "relative"),
    [("~", "."), ("~/", "."), ("~/proj/a b", "proj/a b"), ("~/-x", "-x"), ("rel/p", "rel/p")],
)
def test_home_paths_need_no_round_trip(path: str, relative: str) -> None:
    # rsync starts in the login directory, the home: `~/x` is `x` there. The host cannot
    # be reached: asking it for $HOME would fail.
    import asyncio

    session = RsyncSession(
        "rsync", parse_version("version 3.2.7"), Remote(name="c", host="nowhere.invalid")
    )
    try:
        assert asyncio.run(session.resolve(path)) == relative
        job = PairJob("c", "a", "push", "/src", path, ExcludeMatcher([]))
        assert session.argv(job, relative)[-1] == (
            "nowhere.invalid:./-x/" if relative == "-x" else f"nowhere.invalid:{relative}/"
        )
    finally:
        shutil.rmtree(session._dir, ignore_errors=True)


def test_other_home_references_are_still_asked_for() -> None:
    import asyncio

    from xfer_core.errors import TransferError

    session = RsyncSession(
        "rsync",
        parse_version("version 3.2.7"),
        Remote(name="c", host="nowhere.invalid", connect_timeout=2),
    )
    try:
        for path in ("~other/x", "~/$SCRATCH/x"):
            with pytest.raises(TransferError):
                asyncio.run(session.resolve(path))  # needs the cluster: unreachable
    finally:
        shutil.rmtree(session._dir, ignore_errors=True)
