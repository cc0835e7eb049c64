"""Start-up work of one command: only its own Click command is built, and plain option
values are taken without pydantic -- with the same values, help and errors as before."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from xfer_core.cli.app import app, app_for

PROBE = """
import sys
from xfer_core.cli.app import app, main
import typer

seen = {}

@app.command("t-values")
def t_values(
    name: str = typer.Option("x", "--name"),
    items: list[str] | None = typer.Option(None, "-i"),
    count: int = typer.Option(1, "-n", min=1, max=9),
) -> None:
    print(repr((name, items, count)))

try:
    main(sys.argv[1:])
except SystemExit as exc:
    print("exit", exc.code)
print("pydantic" in sys.modules)
"""


def _probe(*args: str) -> tuple[list[str], str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    return out.stdout.splitlines(), out.stderr


def test_plain_values_need_no_pydantic() -> None:
    lines, _ = _probe("t-values", "--name", "a b", "-i", "p", "-i", "q", "-n", "7")
    assert lines == ["('a b', ['p', 'q'], 7)", "exit 0", "False"]
    lines, _ = _probe("t-values")  # defaults
    assert lines == ["('x', None, 1)", "exit 0", "False"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "Input should be greater than or equal to 1"),
        ("10", "Input should be less than or equal to 9"),
        ("x", "Input should be a valid integer"),
        ("-3", "Input should be greater than or equal to 1"),
    ],
)
def test_other_values_get_typers_own_message(value: str, message: str) -> None:
    lines, err = _probe("t-values", "-n", value)
    assert lines[0] == "exit 2"
    assert f"Invalid value for '-n': {message}" in err


def test_one_command_is_built_with_the_same_help() -> None:
    slim = app_for(["--json", "sync", "-h"])
    assert [c.name for c in slim.registered_commands] == ["sync"]
    assert len(app.registered_commands) > 1  # the app itself is left whole
    runner = CliRunner()
    for args in (["sync", "-h"], ["fetch", "--help"], ["status", "-h"]):
        whole = runner.invoke(app, args)
        one = runner.invoke(app_for(args), args)
        assert one.exit_code == whole.exit_code == 0
        assert one.output == whole.output


@pytest.mark.parametrize("args", [[], ["--help"], ["snyc"], ["config", "show"], ["manifest"]])
def test_no_plain_command_gets_the_whole_app(args: list[str]) -> None:
    # no command, a typo (Click suggests from every name), a group: all of them
    assert app_for(args) is app


def test_a_typo_still_gets_suggestions() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xfer_core.cli", "snyc"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "sync" in out.stderr


def test_app_for_is_a_typer() -> None:
    assert isinstance(app_for(["sync"]), typer.Typer)


def test_command_modules_name_their_plain_commands() -> None:
    # app_for imports only the module that COMMAND_MODULES names for a command: the names
    # must be what each module registers
    import importlib

    from xfer_core.cli.app import COMMAND_MODULES

    for module, names in COMMAND_MODULES.items():
        probe = typer.Typer()
        importlib.import_module(f"xfer_core.cli.{module}").register(probe)
        assert tuple(c.name for c in probe.registered_commands) == names, module
    assert {c.name for c in app.registered_commands} == {
        n for names in COMMAND_MODULES.values() for n in names
    }


def test_a_command_imports_only_its_own_module() -> None:
    code = (
        "import sys\n"
        "from xfer_core.cli.app import app_for\n"
        "slim = app_for(['sync', '--help'])\n"
        "print([c.name for c in slim.registered_commands])\n"
        "print(sorted(m for m in sys.modules if m.startswith('xfer_core.cli.') and m.endswith('_cmd')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['sync']", "['xfer_core.cli.sync_cmd']"]
