"""The migration pages' flag tables are true: every flag they name exists in the CLI, and the
upstream xfer page names every flag upstream has (as of upstream HEAD 85bea9b)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]

#: Every option of upstream FluidNumerics/xfer 85bea9b (src/xfer/cli.py), by command.
UPSTREAM = {
    "run": "--run-dir --source --dest --num-shards --array-concurrency --rclone-image "
    "--rclone-config --container-conf-path --extra-lsjson-flags --rclone-flags --job-name "
    "--time-limit --partition --cpus-per-task --mem --max-attempts --sbatch-extras --submit "
    "--no-submit --pyxis-extra",
    "manifest build": "--source --dest --out --rclone-image --rclone-config --container-conf-path "
    "--recursive --no-recursive --fast-list --no-fast-list --no-modtime --extra-lsjson-flags "
    "--pyxis-extra --run-id -v -vv",
    "manifest shard": "--in --outdir --num-shards --strategy",
    "manifest analyze": "--in --out --base-flags --assumed-cpus-per-task "
    "--assumed-array-concurrency --assumed-core-budget --max-shard-bytes-tb",
    "manifest rebase": "--in --out --source-root --dest-root",
    "manifest combine": "--source --dest --parts-dir --out --run-id",
    "slurm render": "--run-dir --num-shards --array-concurrency --job-name --time-limit "
    "--partition --cpus-per-task --mem --rclone-image --rclone-config --rclone-conf-in-container "
    "--rclone-flags --source-root --dest-root --max-attempts --sbatch-extras --pyxis-extra "
    "--manifest",
    "slurm submit": "--run-dir",
}

_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _options(path: str) -> set[str]:
    """Every option name ``xfer PATH --help`` lists (``-vv`` counts for a counting ``-v``)."""
    from xfer_core.cli.app import app

    cmd: Any = typer.main.get_command(app)
    ctx = cmd.context_class(cmd, info_name="xfer", **cmd.context_settings)
    for part in path.split():
        cmd = cmd.get_command(ctx, part)
        ctx = cmd.context_class(cmd, info_name=part, parent=ctx)
    names = set(ctx.help_option_names)
    for param in cmd.params:
        names.update(param.opts, param.secondary_opts)
        if getattr(param, "count", False):
            names.update(o + o[1:] for o in param.opts if len(o) == 2)  # -v → -vv
    return names


def _flags(cell: str) -> list[str]:
    return [f for code in re.findall(r"`([^`]*)`", cell) for f in _FLAG.findall(code)]


def _table(page: str, header: str) -> list[list[str]]:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    start = text.index(header)
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
    return rows


def test_upstream_flag_table_matches_the_cli() -> None:
    rows = _table("migrate-xfer-seed.md", "| command | upstream flag | this xfer |")
    assert len(rows) > 50
    listed: dict[str, set[str]] = {}
    for command, upstream, ours, _what in rows:
        path = command.strip("`")
        have = _options(path)
        for flag in _flags(upstream) + _flags(ours):
            assert flag in have, f"{path}: {flag} is in the page but not in `xfer {path} --help`"
        listed.setdefault(path, set()).update(_flags(upstream))
    for path, flags in UPSTREAM.items():
        missing = set(flags.split()) - listed.get(path, set())
        assert not missing, f"{path}: upstream flags missing from the page: {sorted(missing)}"


@pytest.mark.parametrize("command", ["sync", "fetch"])
def test_sbatchman_flag_table_matches_the_cli(command: str) -> None:
    rows = _table("migrate-sbatchman.md", "| sbatchman | xfer | notes |")
    assert len(rows) > 10
    have = _options(command)
    for theirs, ours, _notes in rows:
        for flag in _flags(ours):
            assert flag in have, f"{flag} is in the page but not in `xfer {command} --help`"
        for flag in _flags(theirs):
            if flag not in ("-z",):  # sbatchman's rsync flag, not an option of sbatchman's
                assert flag in have, f"sbatchman's {flag} is not accepted by `xfer {command}`"


def test_sbatchman_page_names_every_sbatchman_option() -> None:
    text = (ROOT / "docs" / "migrate-sbatchman.md").read_text(encoding="utf-8")
    # sbatchman 2.0.3's `sync`/`fetch` options (sbatchman/cli.py)
    for flag in ("-c", "--clusters", "-a", "--aliases", "-b", "--backend", "-e", "--exclude",
                 "-n", "--dry-run", "--help"):  # fmt: skip
        assert f"`{flag}`" in text
