"""The helpers every test suite of xfer needs: the CLI in a subprocess, and trees of files.

One implementation for the whole suite (``tests/*/helpers.py`` re-export these, with their
suite's defaults) and for plugin authors' tests (:mod:`xfer_core.testing.engine_conformance`)::

    from xfer_core.testing.cli import make_tree, read_tree, xfer

    files = make_tree(tmp_path / "src", ["a.txt", "sub/b.bin"])
    res = xfer("run", "--source", str(tmp_path / "src"), ..., env={"XFER_PLAIN": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert read_tree(tmp_path / "dst") == files
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def xfer_argv(*, script: bool = False) -> list[str]:
    """The command line that starts this environment's xfer CLI: ``python -m xfer_core.cli``,
    or with ``script`` the installed ``xfer`` console script beside it (what ``uv run xfer``
    runs) where there is one."""
    if script:
        path = Path(sys.executable).with_name("xfer")
        if path.exists():
            return [str(path)]
    return [sys.executable, "-m", "xfer_core.cli"]


def _env(env: Mapping[str, str] | None, drop: tuple[str, ...]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in drop}
    return {**base, **(env or {})}


def xfer(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 300,
    drop_env: tuple[str, ...] = (),
    script: bool = False,
    **popen: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``xfer ARGS`` in a subprocess, as a user does; never raises on a non-zero exit.

    ``env`` is laid over this process's environment (``drop_env`` names variables to leave
    out of it); ``script`` runs the console script (:func:`xfer_argv`); other keywords (``stdin``, ``start_new_session``, ...) go to
    :func:`subprocess.run`.
    """
    return subprocess.run(
        [*xfer_argv(script=script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(env, drop_env),
        timeout=timeout,
        check=False,
        **popen,
    )


def popen_xfer(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``xfer ARGS`` in the background (stdout and stderr piped)."""
    return subprocess.Popen(
        [*xfer_argv(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(env, ()),
    )


def write_files(root: Path, files: Mapping[str, bytes]) -> dict[str, bytes]:
    """Write ``{relative name: content}`` under ``root`` (parents made); returns it as a dict."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return dict(files)


def make_tree(root: Path, names: list[str], *, big: int = 300_000) -> dict[str, bytes]:
    """Write ``names`` under ``root`` with distinct contents of assorted sizes.

    ``empty.bin`` is empty and ``big.bin`` holds ``big`` random bytes; any other name
    holds its index and name repeated (longer for later names). Returns
    ``{name: content}``.
    """

    def content(i: int, name: str) -> bytes:
        if name == "empty.bin":
            return b""
        if name == "big.bin":
            return os.urandom(big)
        return (f"{i}:{name}\n" * (i * 37 + 1)).encode()

    return write_files(root, {name: content(i, name) for i, name in enumerate(names)})


def read_tree(root: Path, *, symlinks: bool = True) -> dict[str, bytes]:
    """Every file under ``root`` by relative name (``{}`` if ``root`` does not exist).

    Symlinked directories are not entered; a symlink to a file counts as that file's
    bytes unless ``symlinks`` is false (then only regular files count).
    """
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and (symlinks or not path.is_symlink()):
                out[os.fsdecode(path.relative_to(root))] = path.read_bytes()
    return dict(sorted(out.items()))
