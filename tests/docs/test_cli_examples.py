"""The `Examples:` of every command's --help (and so of docs/cli.md) run, or say why not.

Each command with examples is in :data:`RUN` (the scenario of tests/docs/test_doc_examples.py
its examples run in, one script per command, in order) and an example that cannot run here
matches a key of :data:`NOT_RUN`, whose value says why. A command with examples in neither
fails the suite, so a new example is run or explained.
"""

from __future__ import annotations

import inspect
import re
import shutil
from pathlib import Path

import pytest

from tests.docs.test_doc_examples import PRELUDE, SCENARIOS, SYNC_CONFIG, run_script

#: command -> (scenario, setup lines run before its examples)
RUN: dict[str, tuple[str, str]] = {
    "sync": (
        "sync",
        SYNC_CONFIG + "mkdir -p ~/projects/experiments && echo x > ~/projects/experiments/e.txt\n"
        "xfer config add-dir cluster-a experiments --local ~/projects/experiments "
        "--remote '~/myproject/experiments'\n",
    ),
    "fetch": ("sync", SYNC_CONFIG),
    "plugins": ("local", ""),
    "config init": ("config", ""),
    "config show": ("config", "xfer config init\nxfer config add-cluster lab --host lab-login\n"),
    "config validate": (
        "config",
        "xfer config init\nxfer config init --config ./remotes.toml\n"
        "xfer config init --config ~/.config/sbatchman/remotes-config.toml\n",
    ),
    "config path": ("config", "xfer config init\n"),
    "config add-cluster": ("config", "xfer config init\ntouch ~/.ssh/id_lab\n"),
    "config add-dir": (
        "config",
        "xfer config init\nxfer config add-cluster leonardo --host login.leonardo.cineca.it\n",
    ),
    "run": ("config", "mkdir -p ~/data/sub && echo x > ~/data/sub/x.txt\n"),
    "status": ("config", "RUN_001"),
    "retry": ("config", "RUN_001"),
    "manifest verify": ("config", "RUN_001"),
    "manifest analyze": ("config", "MANIFEST"),
    "manifest shard": ("config", "MANIFEST"),
}

#: An example containing the key is not run, for the reason given.
NOT_RUN: dict[str, str] = {
    "s3src:bucket/set": "needs remotes s3src/s3dst and pyxis; docs/s3.md runs this on the fixtures",
    "/lustre/proj/dataset": "a site's file system and remotes; tests/manifest_io runs build",
    "s3src:bucket/dataset": "needs remotes s3src/s3dst; docs/s3.md lists an S3 source",
    "--runtime podman": "podman cannot start containers on the test machines (docs/run.md)",
    "manifest rebase": "file names of a site; tests/manifest_io/test_rebase_combine.py runs rebase",
    "manifest combine": "file names of a site; tests/manifest_io/test_rebase_combine.py runs combine",
    "--dest /scratch/copy": "a site's file system; tests/manifest_io/test_verify.py runs --dest",
    "--rclone-config rclone.conf --json": "needs an S3 destination; docs/s3.md verifies one",
    "slurm render": "needs pyxis and a partition named transfer; docs/s3.md renders on the fixture",
    "slurm submit": "needs a rendered run dir on Slurm; docs/s3.md submits one",
}

#: A finished local run dir named run_001 (with run/manifest.jsonl beside it), for the
#: examples that inspect one.
RUN_001 = """\
mkdir -p ~/data/sub && echo x > ~/data/sub/x.txt
xfer run --run-dir run_001 --source ~/data --dest ~/dest --num-shards 2 --scheduler local --submit
mkdir -p run && cp run_001/manifest.jsonl run/manifest.jsonl
"""


#: A manifest of 600 small files (enough for 512 shards) as run/manifest.jsonl and m.jsonl.
MANIFEST = """\
mkdir -p ~/data && for i in $(seq 1 600); do echo "$i" > ~/data/f$i.txt; done
xfer manifest build --source ~/data --dest ~/dest --out run/manifest.jsonl
cp run/manifest.jsonl m.jsonl
"""
SETUPS = {"RUN_001": RUN_001, "MANIFEST": MANIFEST}


def help_examples() -> dict[str, list[str]]:
    """command -> the example command lines of its --help (continuations joined)."""
    import typer

    from xfer_core.cli.app import app
    from xfer_core.cli.docgen import _walk

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="xfer")
    found: dict[str, list[str]] = {}
    for path, cmd, _ctx in _walk(root, ctx, ("xfer",)):
        text = inspect.cleandoc(cmd.help or "")
        match = re.search(r"^Examples?:\n(.*)", text, re.S | re.M)
        if not match:
            continue
        lines, current = [], ""
        for line in match.group(1).splitlines():
            stripped = line.strip()
            if current:
                current += "\n" + line
            elif stripped.startswith("xfer "):
                current = stripped
            if current and not stripped.endswith("\\"):
                lines.append(current)
                current = ""
        found[" ".join(path[1:])] = lines
    return found


EXAMPLES = help_examples()


def _not_run(command: str, line: str) -> str | None:
    return next((why for key, why in NOT_RUN.items() if key in line or key == command), None)


def test_every_help_example_runs_or_says_why_not() -> None:
    assert EXAMPLES, "no Examples: found in any --help"
    unplaced = [
        f"{cmd}: {line}"
        for cmd, lines in EXAMPLES.items()
        for line in lines
        if cmd not in RUN and _not_run(cmd, line) is None
    ]
    assert not unplaced, f"help examples neither run nor explained: {unplaced}"


def _scenario(name: str, tmp: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if name == "config":  # a fresh HOME, commands run in an empty work dir
        sc = SCENARIOS["local"](tmp, request)
        sc.cwd = tmp / "work"
        (sc.home / ".ssh").mkdir()
        return sc
    return SCENARIOS[name](tmp, request)


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
@pytest.mark.parametrize("command", sorted(RUN))
def test_help_examples_run(command: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    scenario_name, setup = RUN[command]
    if scenario_name == "sync":
        request.node.add_marker(pytest.mark.sshd)
    sc = _scenario(scenario_name, tmp_path, request)
    lines = [line for line in EXAMPLES.get(command, []) if _not_run(command, line) is None]
    assert lines, f"{command}: no example left to run"
    body = SETUPS.get(setup, setup) + "\n".join(lines) + "\n"
    for old, new in sc.replace.items():
        body = body.replace(old, new)
    run_script(PRELUDE + body, sc, f"xfer {command} --help examples")
