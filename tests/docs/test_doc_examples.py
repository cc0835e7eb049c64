"""Every shell example of the docs runs, or says why not (see ``doc_examples.py``).

Each ``run`` block runs in bash (``set -e``: the first failing command fails the test) in a
scenario: a temp HOME, the fixtures it needs, and the placeholders of the docs (host names,
users, ``/tmp/`` paths) replaced by the fixtures' values. ``uv run CMD`` runs CMD from this
checkout's environment (as it would after ``uv sync``); ``pip install uv`` is a no-op since uv
is here; everything else runs as written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.docs.doc_examples import ROOT, Example, all_examples

EXAMPLES = all_examples()
BIN = Path(sys.executable).parent

PRELUDE = """\
set -eo pipefail
set -m   # job control, as in a terminal: `cmd &` is a process group that `kill %1` stops whole
trap 'for job in $(jobs -p); do kill -- "-$job" 2>/dev/null || true; done' EXIT
uv() {
    if [ "${1:-}" = run ] && [ "${2:-}" = pytest ]; then
        echo "(doc test: the test suite is not re-run inside itself)"; return 0
    fi
    if [ "${1:-}" = run ]; then shift; "$@"; else command uv "$@"; fi
}
pip() { if [ "$*" = "install uv" ]; then return 0; fi; command pip "$@"; }
"""


@dataclass
class Scenario:
    """Where and how a block runs."""

    home: Path
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    replace: dict[str, str] = field(default_factory=dict)


def _base(tmp: Path) -> Scenario:
    home = tmp / "home"
    home.mkdir()
    work = tmp / "work"
    work.mkdir()
    env = {
        "HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "XFER_PLAIN": "1",
        "SHELL": "/bin/bash",
        # uv's own state stays in the temp dir; its download cache is shared
        "UV_TOOL_DIR": str(tmp / "uv-tools"),
        "UV_TOOL_BIN_DIR": str(tmp / "uv-bin"),
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR")
        or str(Path(os.environ.get("HOME", "/root")) / ".cache" / "uv"),
    }
    for var in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "XFER_CONFIG", "SLURM_CONF"):
        env[var] = ""
    env["AWS_CA_BUNDLE"] = ""  # breaks rclone's S3 client (docs/testing.md)
    return Scenario(home=home, cwd=work, env=env, replace={"/tmp/": f"{tmp}/tmpdir/"})


def local(tmp: Path, request: pytest.FixtureRequest) -> Scenario:
    """No service: a temp HOME with ``~/data``; commands run in a work dir that looks
    like the checkout (README's ``--source xfer_core``) but leaves it untouched."""
    sc = _base(tmp)
    (tmp / "tmpdir").mkdir()
    data = sc.home / "data"
    (data / "sub").mkdir(parents=True)
    for i in range(6):
        (data / "sub" / f"f{i}.bin").write_bytes(bytes([i]) * (1000 * (i + 1)))
    (sc.cwd / "xfer_core").symlink_to(ROOT / "xfer_core")
    return sc


def tool_install(tmp: Path, request: pytest.FixtureRequest) -> Scenario:
    """``uv tool install .`` from the checkout into a temp tool dir, then its ``xfer``."""
    sc = _base(tmp)
    sc.cwd = ROOT
    sc.env["PATH"] = f"{tmp / 'uv-bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return sc


def plugin_walkthrough(tmp: Path, request: pytest.FixtureRequest) -> Scenario:
    """plugins.md from an empty folder: the ``# file:`` blocks are written where the
    walkthrough's ``mkdir && cd`` leaves the shell; xfer's checkout is ``~/xfer``."""
    sc = tool_install(tmp, request)
    sc.cwd = tmp / "empty"
    sc.cwd.mkdir()
    (sc.home / "xfer").symlink_to(ROOT)
    return sc


def sbatchman_copy(tmp: Path, request: pytest.FixtureRequest) -> Scenario:
    """A machine where sbatchman was used: its config file exists, xfer's does not."""
    sc = _base(tmp)
    conf = sc.home / ".config" / "sbatchman" / "remotes-config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        '[global]\ntransfer_backend = "rsync"\n\n[[clusters]]\nname = "cluster-a"\n'
        'host = "login.cluster-a.example.org"\nuser = "alice"\n'
    )
    return sc


def sync(tmp: Path, request: pytest.FixtureRequest) -> Scenario:
    """The real sshd stands in for ``login.cluster-a.example.org`` (user, port, key and
    known_hosts of the fixture); remote ``~/myproject`` goes to a fresh remote dir.
    Blocks that do not write the config themselves get README's config first."""
    sshd = request.getfixturevalue("sshd")
    sc = _base(tmp)
    rdir = sshd.mkdtemp("docs").relative_to(sshd.home)
    ssh_config = tmp / "ssh_config"
    ssh_config.write_text(
        f"Host *\n  UserKnownHostsFile {sshd.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
    )
    sc.env["XFER_SSH_CONFIG"] = str(ssh_config)
    sc.replace.update(
        {
            "login.cluster-a.example.org --user alice": f"{sshd.host} --user {sshd.user} "
            f"--port {sshd.port} --key-path {sshd.key_path}",
            "~/myproject": f"~/{rdir}/myproject",
        }
    )
    project = sc.home / "projects" / "myproject"
    for sub in ("results", "checkpoints", "wandb"):
        (project / sub).mkdir(parents=True)
        (project / sub / "x.txt").write_text(sub)
    (project / "main.py").write_text("print('hi')\n")
    return sc


def s3(tmp: Path, request: pytest.FixtureRequest) -> Scenario:
    """docs/s3.md: its own two ``rclone serve s3`` (on free ports instead of 9000/9001),
    and the real Slurm fixture with its ``debug`` partition."""
    from xfer_core.testing.services import free_port

    slurm = request.getfixturevalue("slurm")
    sc = _base(tmp)
    sc.env.update(slurm.env)
    sc.replace.update(
        {"127.0.0.1:9000": f"127.0.0.1:{free_port()}", "127.0.0.1:9001": f"127.0.0.1:{free_port()}"}
    )
    return sc


SCENARIOS: dict[str, Callable[[Path, pytest.FixtureRequest], Scenario]] = {
    "local": local,
    "tool-install": tool_install,
    "plugin-walkthrough": plugin_walkthrough,
    "sbatchman-copy": sbatchman_copy,
    "sync": sync,
    "s3": s3,
}

#: Scenarios whose blocks build on each other: the blocks of one page run as one script,
#: in page order (one test, named after the last block).
SEQUENTIAL = {"plugin-walkthrough", "s3"}

#: README's everyday-sync config, for sync blocks that assume it.
SYNC_CONFIG = """\
xfer config init
xfer config add-cluster cluster-a --host login.cluster-a.example.org --user alice
xfer config add-dir cluster-a myproject --local ~/projects/myproject --remote '~/myproject'
xfer config add-dir cluster-a results --fetch --local ~/results --remote '~/myproject/results'
xfer sync >/dev/null
"""


def run_script(script: str, scenario: Scenario, label: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (PRELUDE included) with bash in ``scenario``; fail with its output."""
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=scenario.cwd,
        env={**os.environ, **scenario.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"{label} failed (exit {proc.returncode})\n--- script\n{script}\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )
    return proc


def script_for(example: Example, scenario: Scenario) -> str:
    text = example.commands()
    if example.arg == "sync" and "config init" not in text:
        text = SYNC_CONFIG + text
    if example.arg in SEQUENTIAL:
        text = "\n".join(ex.commands() for ex in _group(example))
    if example.arg == "plugin-walkthrough":
        text = _walkthrough_script(example)
    for old, new in scenario.replace.items():
        text = text.replace(old, new)
    return PRELUDE + text


def _walkthrough_script(example: Example) -> str:
    """The walkthrough's blocks in page order, with its ``# file:`` blocks written by
    the shell after the ``cd`` (as a reader saves them): run once, by its last block."""
    from tests.docs.test_plugins_md import walkthrough_files

    blocks = _group(example)
    parts = [blocks[0].commands()]
    for name, code in walkthrough_files().items():
        parts.append(f"cat > {name} <<'XFER_DOC_EOF'\n{code}XFER_DOC_EOF\n")
    parts += [ex.commands() for ex in blocks[1:]]
    return "\n".join(parts)


def _params() -> list[object]:
    out = []
    for ex in EXAMPLES:
        if ex.action != "run":
            continue
        marks = []
        if ex.arg == "sync":
            marks.append(pytest.mark.sshd)
        if ex.arg == "s3":
            marks.append(pytest.mark.slurm)
        if ex.arg in SEQUENTIAL and ex is not _group(ex)[-1]:
            continue  # the page's blocks of this scenario run once, as one script
        out.append(pytest.param(ex, id=ex.id, marks=marks))
    return out


def _group(example: Example) -> list[Example]:
    """The blocks of ``example``'s page and scenario, in page order."""
    return [ex for ex in EXAMPLES if ex.path == example.path and ex.arg == example.arg]


def test_every_shell_example_runs_or_says_why_not() -> None:
    unmarked = [ex.id for ex in EXAMPLES if ex.action is None]
    assert not unmarked, (
        "these doc examples have no `<!-- doc-test: run SCENARIO -->` or "
        f"`<!-- doc-test: skip REASON -->` line before their fence: {unmarked}"
    )
    unknown = [f"{ex.id}: {ex.arg}" for ex in EXAMPLES if ex.action == "run"]
    unknown = [u for u in unknown if u.rsplit(": ", 1)[1] not in SCENARIOS]
    assert not unknown, f"unknown doc-test scenarios: {unknown}"
    assert all(len(ex.arg) > 10 for ex in EXAMPLES if ex.action == "skip"), "say why"


def test_the_extractor_sees_console_commands_only() -> None:
    ex = Example(ROOT, 1, "console", "$ a \\\n  --b\nout\n$ c\nmore\n", "run", "local")
    assert ex.commands() == "a \\\n  --b\nc\n"


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
@pytest.mark.parametrize("example", _params())
def test_doc_example_runs(example: Example, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    scenario = SCENARIOS[example.arg](tmp_path, request)
    proc = run_script(script_for(example, scenario), scenario, example.id)
    CHECKS.get(example.arg, lambda *_: None)(example, scenario, proc)


def _check_walkthrough(ex: Example, sc: Scenario, proc: subprocess.CompletedProcess[str]) -> None:
    assert "xfer-nice" in proc.stdout and '"name": "nice"' in proc.stdout, proc.stdout
    assert "1/1 shards done" in proc.stderr, proc.stderr
    assert (sc.home / "nice-demo-dest" / "hello.txt").read_text() == "hello\n"


def _check_sbatchman(ex: Example, sc: Scenario, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.stdout.strip().endswith(".config/xfer/remotes.toml"), proc.stdout


def _check_s3(ex: Example, sc: Scenario, proc: subprocess.CompletedProcess[str]) -> None:
    out = proc.stdout + proc.stderr
    assert "4/4 shards done: 41 objects" in out, out
    assert "runtime apptainer (--runtime)" in out and "docker://rclone/rclone:1.68" in out
    site_b = sc.home / "s3" / "site-b" / "bucket-b"
    source = sorted(p.name for p in (sc.home / "s3/site-a/bucket-a/dataset").rglob("*.bin"))
    for copy in ("dataset", "copy"):  # the local run and the Slurm run
        assert sorted(p.name for p in (site_b / copy).rglob("*.bin")) == source, copy


def _check_tool_install(ex: Example, sc: Scenario, proc: subprocess.CompletedProcess[str]) -> None:
    """`uv tool install` ignores uv.lock: the newest cryptography deprecates what asyncssh
    registers (DSA, ...). xfer's CLI must not print those warnings over its progress bars."""
    python = Path(sc.env["UV_TOOL_DIR"]) / "hpc-xfer" / "bin" / "python"
    code = "import asyncssh.connection"
    loud = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    quiet = subprocess.run(
        [python, "-c", f"from xfer_core.cli.app import quiet_library_warnings\n"
         f"quiet_library_warnings()\n{code}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert loud.returncode == 0 and quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "Warning" not in quiet.stderr, quiet.stderr
    if "Warning" not in loud.stderr:
        pytest.skip("this cryptography warns about nothing asyncssh uses: nothing to filter")


CHECKS: dict[str, Callable[[Example, Scenario, subprocess.CompletedProcess[str]], None]] = {
    "plugin-walkthrough": _check_walkthrough,
    "sbatchman-copy": _check_sbatchman,
    "s3": _check_s3,
    "tool-install": _check_tool_install,
}
