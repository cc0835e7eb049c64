"""What a newcomer meets without Slurm (issue 18): the runtime choice is printed and
checked for real (pyxis needs `srun --help` to list `--container-image`), a failing shard's
reason carries the tool's first error line and the log's path, host-tool runtimes get
absolute tool paths, global options work after the command, flags show no `<bool>`."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from xfer_backends.runtimes import PyxisRuntime
from xfer_core.bulk.render import RenderOptions
from xfer_core.bulk.runtime import ContainerRuntime, Mount
from xfer_core.cli.app import hoist_global_options, quiet_library_warnings
from xfer_core.registry import Registry, build_registry

from .runtools import make_tree, xfer

#: A stand-in for Slurm's srun without the pyxis plugin (pyxis cannot be installed here).
SRUN_WITHOUT_PYXIS = """#!/bin/sh
if [ "$1" = --help ]; then echo "Usage: srun [OPTIONS(0)... [executable(0) [args(0)...]]]"; exit 0; fi
for a in "$@"; do case $a in --container-image*)
    echo "srun: unrecognized option '$a'" >&2; echo "Try \\"srun --help\\" for more information" >&2; exit 255;;
esac; done
exec "$@"
"""


def fake_srun(tmp_path: Path, text: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / "srun"
    srun.write_text(text)
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_pyxis_is_available_only_when_srun_knows_container_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = fake_srun(tmp_path, SRUN_WITHOUT_PYXIS)
    monkeypatch.setenv("PATH", env["PATH"])
    avail = PyxisRuntime().check()
    assert not avail.ok and "lists no --container-image" in (avail.reason or "")
    (tmp_path / "bin" / "srun").write_text(
        '#!/bin/sh\necho "      --container-image=[USER@][REGISTRY#]IMAGE[:TAG]|PATH"\n'
    )
    assert PyxisRuntime().check().ok


def test_image_without_pyxis_says_why_and_the_reason_names_the_error_and_log(
    tmp_path: Path,
) -> None:
    env = fake_srun(tmp_path, SRUN_WITHOUT_PYXIS)
    src, run = tmp_path / "src", tmp_path / "run"
    make_tree(src, ["a.txt"])
    proc = xfer(
        "run", "--run-dir", str(run), "--source", str(src), "--dest", str(tmp_path / "dst"),
        "--num-shards", "1", "--max-attempts", "1", "--scheduler", "local",
        "--rclone-image", "rclone/rclone:latest", "--submit",
        env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "scheduler: local (--scheduler)" in err
    assert "render: runtime pyxis (the default with --rclone-image; --runtime NAME" in err
    assert "runtime pyxis (the default with --rclone-image" in err
    assert "is not available here: srun --help lists no --container-image" in err
    reason = (run / "state" / "shard_0.fail").read_text()
    log = run / "logs" / "shard_0_attempt_1.log"
    assert "rclone copy exit 255: srun: unrecognized option '--container-image=" in reason
    assert reason.rstrip().endswith(f"(log: {log})")
    assert f"(log: {log})" in err  # the summary line shows it too


class NameOnlyRuntime(ContainerRuntime):
    """Runs argv as given: what plugins.md's `nice` example did with a bare name."""

    name = "as-given"
    needs_image = False

    def wrap(
        self,
        argv: Sequence[str],
        *,
        image: str | None,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        return list(argv)


class _Module:
    from xfer_core.hookspecs import hookimpl

    @hookimpl
    def register_runtimes(self, register):  # type: ignore[no-untyped-def]
        register(NameOnlyRuntime())


def test_host_tool_runtimes_get_an_absolute_path_even_from_a_relative_xfer_rclone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xfer_core import registry as registry_mod
    from xfer_core.bulk.pipeline import PrepareOptions, prepare_run
    from xfer_core.tools import find_rclone

    registry: Registry = build_registry(extra=[_Module()])
    monkeypatch.setattr(registry_mod, "get_registry", lambda: registry)
    real = find_rclone()
    assert real is not None
    # a relative XFER_RCLONE is made absolute against the directory xfer runs in
    (tmp_path / "tools").mkdir()
    os.symlink(real, tmp_path / "tools" / "rclone")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XFER_RCLONE", "tools/rclone")
    src = tmp_path / "src"
    make_tree(src, ["a.txt"])
    prepared = prepare_run(
        tmp_path / "run",
        PrepareOptions(source=str(src), dest=str(tmp_path / "dst"), num_shards=1),
        RenderOptions(runtime="as-given", max_array_size=1001),
    )
    assert prepared.resolved.tool_command.startswith(f"{tmp_path}/tools/rclone ")
    assert f"    {tmp_path}/tools/rclone " in (tmp_path / "run" / "worker.sh").read_text()


def test_global_options_after_the_command() -> None:
    assert hoist_global_options(["sync", "-v"]) == ["-v", "sync"]
    assert hoist_global_options(["slurm", "submit", "-r", "x", "-q"]) == [
        "-q", "slurm", "submit", "-r", "x",
    ]  # fmt: skip
    # a command's own --json stays its own; an option's value is never moved
    assert hoist_global_options(["status", "--json", "-vv"]) == ["-vv", "status", "--json"]
    assert hoist_global_options(["sync", "-e", "-v"]) == ["sync", "-e", "-v"]
    assert hoist_global_options(["run", "--", "-v"]) == ["run", "--", "-v"]


def test_sync_dash_v_after_the_command_runs(tmp_path: Path) -> None:
    # no config: the command itself runs (and says so) instead of a usage error
    env = {**os.environ, "HOME": str(tmp_path), "XFER_CONFIG": str(tmp_path / "none.toml")}
    proc = xfer("sync", "-v", env=env)
    assert "No such option" not in proc.stderr
    assert proc.returncode == 2 and "none.toml" in proc.stderr, proc.stderr
    proc = xfer("plugins", "-q", env=env)
    assert proc.returncode == 0, proc.stderr


def test_flags_show_no_bool_in_help() -> None:
    proc = xfer("status", "--help", env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout
    assert "--watch" in proc.stdout and "<float" in proc.stdout  # types of values stay


def test_warnings_raised_for_asyncssh_are_ignored() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_library_warnings()
        # what cryptography's deprecated attributes raise, attributed to their user
        warnings.warn_explicit(
            "TripleDES has been moved", UserWarning, "cipher.py", 1, module="asyncssh.crypto"
        )
        warnings.warn_explicit("something of ours", UserWarning, "x.py", 1, module="xfer_core.x")
    assert [str(w.message) for w in seen] == ["something of ours"]


def test_rebuild_lists_the_source_again(tmp_path: Path) -> None:
    src, run = tmp_path / "src", tmp_path / "run"
    make_tree(src, ["a.txt"])
    args = ("run", "--run-dir", str(run), "--source", str(src), "--dest", str(tmp_path / "dst"))
    assert xfer(*args, "--num-shards", "1").returncode == 0
    (src / "b.txt").write_text("new")
    proc = xfer(*args)
    assert proc.returncode == 0 and "manifest: reusing" in proc.stderr
    proc = xfer(*args, "--rebuild")
    assert proc.returncode == 0, proc.stderr
    assert "manifest: 2 objects" in proc.stderr
    assert b"b.txt" in (run / "manifest.jsonl").read_bytes()
