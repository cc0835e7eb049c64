"""Shell completion (Typer's): `xfer --install-completion` and `--show-completion` work as docs/install.md says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

XFER = Path(sys.executable).parent / "xfer"
pytestmark = [
    pytest.mark.skipif(not XFER.exists(), reason="the xfer console script is not installed"),
    pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed"),
]


def bash(script: str, home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    # `; true` keeps bash as the parent process: Typer detects the shell from it
    env = {
        **os.environ,
        "HOME": str(home),
        "SHELL": "/bin/bash",
        "PATH": f"{XFER.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }
    return subprocess.run(
        ["bash", "-c", script + "; true"], capture_output=True, text=True, env=env, timeout=60
    )


def complete(script_setup: str, words: str, cword: int, home: Path) -> list[str]:
    res = bash(
        f"{script_setup}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; _xfer_completion xfer;"
        ' printf "%s\\n" "${COMPREPLY[@]}"',
        home,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_show_completion_prints_a_bash_script(tmp_path: Path) -> None:
    res = bash("xfer --show-completion", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "complete -o default -F _xfer_completion xfer" in res.stdout


def test_named_shell_script_via_env(tmp_path: Path) -> None:
    res = bash("_XFER_COMPLETE=source_zsh xfer", tmp_path)
    assert "#compdef xfer" in res.stdout, res.stdout + res.stderr


def test_install_completion_then_complete_commands(tmp_path: Path) -> None:
    res = bash("xfer --install-completion", tmp_path)
    assert res.returncode == 0, res.stderr
    script = tmp_path / ".bash_completions" / "xfer.sh"
    assert script.is_file()
    assert str(script) in (tmp_path / ".bashrc").read_text()
    # a new shell that sources ~/.bashrc completes `xfer pl<TAB>` and `xfer --ver<TAB>`
    assert complete("source ~/.bashrc", "xfer pl", 1, tmp_path) == ["plugins"]
    assert "--version" in complete("source ~/.bashrc", "xfer --ver", 1, tmp_path)
