"""The CLI frame: version, global options, exit codes, one-line errors, interrupts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from xfer_core import __version__

# The real app plus a few probe commands that raise what commands raise.
DRIVER = """
import sys, time
import typer
from xfer_core.cli import main
from xfer_core.cli.app import app
from xfer_core.errors import ExitCode, TransferError, UnavailableError, XferError
from xfer_core.output import current

@app.command("t-fail")
def t_fail(kind: str = "usage") -> None:
    if kind == "usage":
        raise XferError("bad value for --x", hint="use --x=1")
    if kind == "unavailable":
        raise UnavailableError("rsync: not on PATH")
    if kind == "failed":
        raise TransferError("2 of 5 pairs failed")
    if kind == "internal":
        raise RuntimeError("invariant broken\\nsecond line")
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "exit":
        raise typer.Exit(4)

@app.command("t-mode")
def t_mode() -> None:
    out = current()
    out.event("hello", n=1)
    out.info("an info line")
    out.warn("a warning")
    print(f"json={out.json} quiet={out.quiet} verbose={out.verbose}", file=sys.stderr)

@app.command("t-sleep")
def t_sleep() -> None:
    print("ready", flush=True)
    time.sleep(60)

@app.command("t-spam")
def t_spam() -> None:
    for i in range(100000):
        print("line", i)

main(sys.argv[1:])
"""


def run_xfer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    for argv in (
        [sys.executable, "-m", "xfer_core.cli", "--version"],
        [sys.executable, "-c", DRIVER, "--version"],
    ):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0
        assert res.stdout == f"xfer {__version__}\n"


def test_help_lists_commands_and_exit_codes() -> None:
    res = run_xfer("--help")
    assert res.returncode == 0
    assert "plugins" in res.stdout
    assert "Exit codes" in res.stdout


def test_unknown_command_is_usage_error() -> None:
    res = run_xfer("no-such-command")
    assert res.returncode == 2
    assert "no-such-command" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_option_is_usage_error() -> None:
    res = run_xfer("plugins", "--no-such-option")
    assert res.returncode == 2
    assert "--no-such-option" in res.stderr


@pytest.mark.parametrize(
    ("kind", "code", "message"),
    [
        ("usage", 2, "xfer: error: bad value for --x\n  hint: use --x=1\n"),
        ("unavailable", 3, "xfer: error: rsync: not on PATH\n"),
        ("failed", 1, "xfer: error: 2 of 5 pairs failed\n"),
        (
            "internal",
            1,
            "xfer: error: internal error: RuntimeError: invariant broken\n"
            "  hint: run with -v for the traceback\n",
        ),
        ("interrupt", 130, "xfer: interrupted\n"),
        ("exit", 4, ""),
    ],
)
def test_errors_are_one_clear_line_with_their_exit_code(kind: str, code: int, message: str) -> None:
    res = run_xfer("t-fail", "--kind", kind)
    assert res.returncode == code
    assert res.stderr == message
    assert res.stdout == ""


@pytest.mark.parametrize(("kind", "code"), [("usage", 2), ("internal", 1), ("unavailable", 3)])
def test_verbose_adds_the_traceback_and_keeps_the_exit_code(kind: str, code: int) -> None:
    res = run_xfer("-v", "t-fail", "--kind", kind)
    assert res.returncode == code
    assert res.stderr.startswith("Traceback (most recent call last):")
    # the traceback comes first, the one-line error stays the last word
    assert res.stderr.index("Traceback") < res.stderr.index("\nxfer: error: ")
    assert "run with -v" not in res.stderr


def test_global_json_quiet_verbose_reach_the_command() -> None:
    res = run_xfer("--json", "t-mode")
    assert res.returncode == 0
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines == [{"event": "hello", "n": 1}, {"event": "warning", "message": "a warning"}]
    assert "json=True" in res.stderr
    assert "an info line" not in res.stderr

    res = run_xfer("-q", "-vv", "t-mode")
    assert res.stdout == ""
    assert "an info line" not in res.stderr
    assert "xfer: warning: a warning" in res.stderr
    assert "quiet=True verbose=2" in res.stderr

    res = run_xfer("t-mode")
    assert "an info line" in res.stderr
    assert "json=False quiet=False verbose=0" in res.stderr


def test_sigterm_exits_130() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "t-sleep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err == "xfer: interrupted\n"


def test_closed_stdout_pipe_is_not_a_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "t-spam"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 1
    assert "Traceback" not in err
    assert err == ""


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 << 30, "5.0 GiB"), (3 << 50, "3.0 PiB")],
)
def test_human_bytes(n: int, text: str) -> None:
    from xfer_core.output import human_bytes

    assert human_bytes(n) == text
