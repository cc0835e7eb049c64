"""plugins.md documents every hook, and its examples work (datasette/llm style).

- every hook of ``xfer_core/hookspecs.py`` has a section with a working example;
- every ```python block of plugins.md runs, and the plugins it registers load cleanly;
- the "from an empty folder" walkthrough (the blocks starting with ``# file: NAME``) is written to
  an empty directory, installed into a fresh virtualenv next to xfer, and ``xfer plugins --json``
  there lists it with its distribution name.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.foundation.test_plugins import _uv
from xfer_core import hookspecs
from xfer_core.registry import HOOKS, Registry

ROOT = Path(__file__).resolve().parents[2]
PLUGINS_MD = ROOT / "plugins.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)


def blocks(lang: str) -> list[str]:
    text = PLUGINS_MD.read_text(encoding="utf-8")
    return [body for tag, body in FENCE.findall(text) if tag == lang]


def hook_names() -> list[str]:
    return [
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, f"{hookspecs.PROJECT}_spec")
    ]


def section(hook: str) -> str:
    text = PLUGINS_MD.read_text(encoding="utf-8")
    match = re.search(rf"^### `{hook}`\n(.*?)(?=^##)", text, re.S | re.M)
    assert match, f"plugins.md has no section '### `{hook}`'"
    return match.group(1)


def run_block(code: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = str(PLUGINS_MD)
    sys.modules[name] = module  # dataclasses/msgspec look classes' modules up
    try:
        exec(compile(code, f"{PLUGINS_MD}:{name}", "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    return module


def test_hookspecs_are_the_five_kinds() -> None:
    # the documentation test below is only as good as this list
    assert sorted(hook_names()) == sorted(HOOKS.values())


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented_with_an_example(hook: str) -> None:
    body = section(hook)
    examples = [code for tag, code in FENCE.findall(body) if tag == "python"]
    assert any(f"def {hook}(" in code and "@hookimpl" in code for code in examples), (
        f"plugins.md: the section of {hook} needs a ```python example implementing it"
    )


PYTHON_BLOCKS = blocks("python")


def test_there_are_examples() -> None:
    assert len(PYTHON_BLOCKS) >= len(hook_names())


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_example_runs_and_registers(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = PYTHON_BLOCKS[index]
    monkeypatch.chdir(tmp_path)
    module = run_block(code, f"plugins_md_example_{index}")
    implemented = [hook for hook in HOOKS.values() if hasattr(module, hook)]
    if not implemented:
        return  # a usage example: running without error (and its asserts) is the test
    registry = Registry()
    registry.add(module, name=f"example{index}", distribution="plugins-md")
    assert registry.broken == [], registry.broken
    for kind, hook in HOOKS.items():
        if hook in implemented:
            assert registry.all(kind), f"{hook} in example {index} registered nothing"
            for plugin in registry.all(kind):
                assert plugin.check() is not None


def walkthrough_files() -> dict[str, str]:
    files = {}
    for tag in ("toml", "python"):
        for code in blocks(tag):
            first = code.partition("\n")[0]
            if first.startswith("# file: "):
                files[first.removeprefix("# file: ").strip()] = code
    return files


def test_walkthrough_is_complete() -> None:
    files = walkthrough_files()
    assert set(files) == {"pyproject.toml", "xfer_nice.py"}
    assert '[project.entry-points."xfer.runtime"]' in files["pyproject.toml"]


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_walkthrough_installs_and_is_listed(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "xfer-nice"
    plugin_dir.mkdir()
    for name, code in walkthrough_files().items():
        (plugin_dir / name).write_text(code, encoding="utf-8")
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    # the foundation's helper: uv with the cache first (--offline), then the index
    _uv("venv", "--quiet", "--python", sys.executable, str(venv), cwd=tmp_path)
    # xfer itself (as in a checkout) and the plugin exactly as the walkthrough says: `-e .`
    _uv("pip", "install", "--quiet", "--python", python, "-e", str(ROOT), cwd=tmp_path)
    _uv("pip", "install", "--quiet", "--python", python, "-e", ".", cwd=plugin_dir)
    res = subprocess.run(
        [str(venv / "bin" / "xfer"), "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    rows = [row for row in data["plugins"] if row["name"] == "nice"]
    assert len(rows) == 1, data
    assert rows[0]["kind"] == "runtime"
    assert rows[0]["distribution"] == "xfer-nice"
    assert rows[0]["version"] == "0.1.0"
    assert data["broken"] == []
