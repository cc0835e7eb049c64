"""The plugin manager and ``xfer plugins``: third-party distributions load like builtins,
broken ones are reported by name and never break the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from xfer_core.bulk.runtime import ContainerRuntime
from xfer_core.errors import XferError
from xfer_core.hookspecs import hookimpl
from xfer_core.plugin import KINDS, Availability
from xfer_core.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


class Echo(ContainerRuntime):
    name = "echo-test"
    description = "test runtime"
    needs_image = False

    def wrap(self, argv, *, image, mounts=(), env=None):  # type: ignore[no-untyped-def]
        return ["echo", *argv]


def _module(name: str, **hooks: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))  # type: ignore[call-overload]
    return mod


def test_registered_plugin_is_found_by_kind_and_name() -> None:
    reg = Registry()
    reg.add(
        _module("good", register_runtimes=lambda register: register(Echo())),
        distribution="xfer-good",
        version="1.0",
    )
    assert reg.get("runtime", "echo-test").wrap(["x"], image=None) == ["echo", "x"]
    assert [p.name for p in reg.all("runtime")] == ["echo-test"]
    (info,) = reg.infos()
    assert (info.name, info.kind, info.distribution, info.version, info.available) == (
        "echo-test",
        "runtime",
        "xfer-good",
        "1.0",
        True,
    )
    assert reg.broken == []


def test_unknown_plugin_name_is_an_xfer_error_listing_known_ones() -> None:
    reg = Registry()
    reg.add(_module("good", register_runtimes=lambda register: register(Echo())))
    with pytest.raises(XferError, match=r"unknown runtime 'nope' \(known: echo-test\)") as info:
        reg.get("runtime", "nope")
    assert info.value.hint is not None and "xfer plugins" in info.value.hint


def _boom(register: object) -> None:
    raise RuntimeError("hook exploded")


@pytest.mark.parametrize(
    ("hooks", "expected"),
    [
        ({"register_runtimes": _boom}, "RuntimeError: hook exploded"),
        ({"register_runtimes": lambda register: register(object())}, "not a named xfer Plugin"),
        ({"register_listers": lambda register: register(Echo())}, "is a runtime plugin"),
        ({"register_runtime": lambda register: None}, "'register_runtime' is not an xfer hook"),
        ({"register_runtimes": lambda reg: None}, "PluginValidationError"),
    ],
)
def test_bad_plugins_are_reported_not_raised(hooks: dict[str, object], expected: str) -> None:
    reg = Registry()
    reg.add(_module("bad", **hooks), name="bad", distribution="xfer-bad")
    reg.add(_module("good", register_runtimes=lambda register: register(Echo())), name="good")
    assert [p.name for p in reg.all("runtime")] == ["echo-test"]
    assert len(reg.broken) == 1
    assert reg.broken[0].entry_point.startswith("bad")
    assert reg.broken[0].distribution == "xfer-bad"
    assert expected in reg.broken[0].error


def test_duplicate_name_keeps_the_first() -> None:
    reg = Registry()
    reg.add(_module("one", register_runtimes=lambda register: register(Echo())), name="one")
    reg.add(_module("two", register_runtimes=lambda register: register(Echo())), name="two")
    assert len(reg.all("runtime")) == 1
    assert "already registered" in reg.broken[0].error


def test_check_that_raises_makes_the_plugin_unavailable() -> None:
    class Fragile(Echo):
        name = "fragile"

        def check(self) -> Availability:
            raise OSError("no /proc")

    reg = Registry()
    reg.add(_module("f", register_runtimes=lambda register: register(Fragile())))
    (info,) = reg.infos()
    assert not info.available
    assert "OSError: no /proc" in info.reason


def _fake_distribution(
    site: Path, name: str, version: str, entry: str, code: str, groups: tuple[str, ...] = ()
) -> None:
    """A minimal installed distribution: a module plus its .dist-info with one entry point
    (in each of ``groups``; default ``xfer_test``, a group only tests load)."""
    module = entry.split("=")[1].strip()
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    sections = [f"[{group}]\n{entry}\n" for group in groups or ("xfer_test",)]
    (info / "entry_points.txt").write_text("\n".join(sections))


def test_entry_points_load_with_distribution_and_broken_import_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_distribution(
        tmp_path,
        "xfer-echo",
        "2.0.1",
        "echo = xfer_echo_ep",
        """
        from xfer_core.bulk.runtime import ContainerRuntime
        from xfer_core.hookspecs import hookimpl

        class Echo(ContainerRuntime):
            name = "echo-test"

        @hookimpl
        def register_runtimes(register):
            register(Echo())
        """,
    )
    _fake_distribution(
        tmp_path, "xfer-dead", "0.1", "dead = xfer_dead_ep", "raise SystemExit('bye')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    reg.load_entry_points("xfer_test")
    (info,) = reg.infos()
    assert (info.name, info.distribution, info.version) == ("echo-test", "xfer-echo", "2.0.1")
    assert [(b.entry_point, b.distribution) for b in reg.broken] == [("dead", "xfer-dead")]
    assert "SystemExit: bye" in reg.broken[0].error


# -- loading by kind: a command imports the plugin modules of the kinds it asks for -------

_KIND_MODULE = """
from xfer_core.hookspecs import hookimpl
from xfer_core.bulk.runtime import ContainerRuntime
from xfer_core.sync.backend import TransferBackend

class Demo(TransferBackend):
    name = "{name}"

class Box(ContainerRuntime):
    name = "{name}"

@hookimpl
def register_transfer_backends(register):
    register(Demo())
"""


def _kind_plugins(site: Path) -> None:
    """Four installed distributions: a transfer backend (``xfer.transfer``), a runtime
    (``xfer.runtime``), one of any kind (``xfer``), one in a group that is no kind."""
    runtime = _KIND_MODULE.replace("register_transfer_backends", "register_runtimes")
    runtime = runtime.replace("register(Demo())", "register(Box())")
    for dist, module, group, code in (
        ("xfer-kt", "xfer_kt_ep", "xfer.transfer", _KIND_MODULE),
        ("xfer-kr", "xfer_kr_ep", "xfer.runtime", runtime),
        ("xfer-ka", "xfer_ka_ep", "xfer", _KIND_MODULE),
        ("xfer-kx", "xfer_kx_ep", "xfer.transfers", _KIND_MODULE),
    ):
        name = module.removesuffix("_ep").replace("_", "-")
        _fake_distribution(
            site, dist, "1.0", f"{name} = {module}", code.format(name=name), (group,)
        )


def test_each_kind_imports_only_its_own_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xfer_core.registry import build_registry

    _kind_plugins(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = build_registry()
    assert not {"xfer_kt_ep", "xfer_kr_ep", "xfer_ka_ep"} & set(sys.modules)  # nothing yet
    names = reg.names("transfer")
    assert {"rsync", "sftp", "xfer-kt", "xfer-ka"} <= set(names)
    assert "xfer_kr_ep" not in sys.modules  # the runtime's module waits for its kind
    assert "xfer-kx" not in names  # a group that is no kind is never loaded by kind
    assert "xfer-kr" in reg.names("runtime")
    assert reg.get("transfer", "xfer-kt").name == "xfer-kt"
    # `xfer plugins` loads everything and names the entry point of the unknown group
    assert {(i.kind, i.name) for i in reg.infos()} >= {("runtime", "xfer-kr")}
    (broken,) = [b for b in reg.broken if b.distribution.startswith("xfer-k")]
    assert (broken.entry_point, broken.distribution) == ("xfer-kx", "xfer-kx")
    assert "'xfer.transfers' is no plugin kind" in broken.error


def test_a_hook_of_a_kind_the_module_is_not_listed_for_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xfer_core.registry import build_registry

    both = _KIND_MODULE.format(name="two-kinds") + textwrap.dedent(
        """
        @hookimpl
        def register_runtimes(register):
            register(Box())
        """
    )
    _fake_distribution(tmp_path, "xfer-two", "1.0", "two = xfer_two_ep", both, ("xfer.transfer",))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = build_registry()
    assert "two-kinds" in reg.names("transfer")
    assert "two-kinds" not in reg.names("runtime")  # never called: listed under transfer only
    (broken,) = [b for b in reg.broken if b.distribution == "xfer-two"]
    assert broken.entry_point == "two.register_runtimes"
    assert "not in entry-point group 'xfer.runtime'" in broken.error


def test_a_module_listed_under_two_kinds_loads_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xfer_core.registry import build_registry

    both = _KIND_MODULE.format(name="twice") + textwrap.dedent(
        """
        LOADS = globals().get("LOADS", 0) + 1

        @hookimpl
        def register_runtimes(register):
            register(Box())
        """
    )
    groups = ("xfer.transfer", "xfer.runtime")
    _fake_distribution(tmp_path, "xfer-twice", "1.0", "twice = xfer_twice_ep", both, groups)
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = build_registry()
    assert "twice" in reg.names("runtime") and "twice" in reg.names("transfer")
    assert sys.modules["xfer_twice_ep"].LOADS == 1
    assert [b for b in reg.broken if b.distribution == "xfer-twice"] == []


def test_added_objects_come_after_every_installed_plugin() -> None:
    from xfer_core.registry import build_registry

    class Impostor(Echo):
        name = "host"  # a builtin runtime's name

    reg = build_registry([_module("late", register_runtimes=lambda register: register(Impostor()))])
    assert type(reg.get("runtime", "host")).__module__ == "xfer_backends.runtimes"
    assert any("'host' is already registered" in b.error for b in reg.broken)


def test_a_sync_imports_no_plugin_of_another_kind() -> None:
    # what `xfer sync` asks the registry for: the transfer backends, and nothing else loads
    code = (
        "import sys\n"
        "from xfer_core.registry import get_registry\n"
        "get_registry().get('transfer', 'rsync')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('xfer_backends.', 'xfer_s5', 'xfer_sge'))))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "['xfer_backends.rsync', 'xfer_backends.sftp']"


def _xfer(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "xfer_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},  # the table must not wrap names
    )


def test_plugins_json_lists_builtins_with_kind_and_availability() -> None:
    res = _xfer("plugins", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    ours = [row for row in data["plugins"] if row["distribution"] == "hpc-xfer"]
    assert ours
    for row in ours:
        assert row["kind"] in KINDS
        assert isinstance(row["available"], bool)
        assert row["available"] or row["reason"]
    assert not [b for b in data["broken"] if b["distribution"] == "hpc-xfer"]
    # the global flag gives the same document
    assert json.loads(_xfer("--json", "plugins").stdout)["plugins"] == data["plugins"]


def test_plugins_table() -> None:
    res = _xfer("plugins")
    assert res.returncode == 0, res.stderr
    assert "xfer plugins" in res.stdout
    assert "hpc-xfer" in res.stdout


# -- a real third-party distribution, installed with uv into a fresh venv ---------------------

GOOD_PYPROJECT = """\
[project]
name = "xfer-hello"
version = "1.2.3"

[project.entry-points.xfer]
hello = "xfer_hello"

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
"""

GOOD_MODULE = """\
from xfer_core.bulk.runtime import ContainerRuntime
from xfer_core.hookspecs import hookimpl
from xfer_core.plugin import Availability


class Hello(ContainerRuntime):
    name = "hello"
    description = "says hello instead of running anything"
    needs_image = False

    def wrap(self, argv, *, image, mounts=(), env=None):
        return ["echo", "hello", *argv]

    def check(self):
        return Availability(False, "hello: not on this machine")


@hookimpl
def register_runtimes(register):
    register(Hello())
"""

BROKEN_PYPROJECT = GOOD_PYPROJECT.replace("xfer-hello", "xfer-broken").replace(
    'hello = "xfer_hello"', 'broken = "xfer_broken"'
)
BROKEN_MODULE = 'raise ImportError("xfer_broken needs libfoo, which is missing")\n'


def _uv(*args: str, cwd: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    # the cache filled by `uv sync` has everything; fall back to the index if it does not
    for extra in (["--offline"], []):
        res = subprocess.run(
            ["uv", *args, *extra], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
        )
        if res.returncode == 0:
            return
    raise AssertionError(f"uv {' '.join(args)} failed:\n{res.stderr}")


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_installed_plugin_is_listed_and_broken_one_is_reported(tmp_path: Path) -> None:
    for name, pyproject, module_name, module in (
        ("good", GOOD_PYPROJECT, "xfer_hello", GOOD_MODULE),
        ("broken", BROKEN_PYPROJECT, "xfer_broken", BROKEN_MODULE),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "pyproject.toml").write_text(pyproject)
        (tmp_path / name / f"{module_name}.py").write_text(module)
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    _uv("venv", "--quiet", "--python", sys.executable, str(venv), cwd=tmp_path)
    # xfer as a user gets it (a built wheel, not editable) plus both plugin distributions
    _uv(
        "pip",
        "install",
        "--quiet",
        "--python",
        python,
        str(ROOT),
        str(tmp_path / "good"),
        str(tmp_path / "broken"),
        cwd=tmp_path,
    )
    xfer = str(venv / "bin" / "xfer")
    res = subprocess.run([xfer, "plugins", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    hello = [row for row in data["plugins"] if row["name"] == "hello"]
    assert hello == [
        {
            "name": "hello",
            "kind": "runtime",
            "distribution": "xfer-hello",
            "version": "1.2.3",
            "available": False,
            "reason": "hello: not on this machine",
            "description": "says hello instead of running anything",
            "options": {},
        }
    ]
    assert {row["distribution"] for row in data["plugins"]} >= {"hpc-xfer", "xfer-hello"}
    (broken,) = data["broken"]
    assert (broken["entry_point"], broken["distribution"]) == ("broken", "xfer-broken")
    assert "needs libfoo" in broken["error"]
    # the table form warns about it on stderr and still succeeds, as does every other command
    table = subprocess.run(
        [xfer, "plugins"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert table.returncode == 0, table.stderr
    assert "xfer-hello 1.2.3" in table.stdout
    assert "plugin broken (xfer-broken) failed to load" in table.stderr
    assert subprocess.run([xfer, "--help"], capture_output=True, timeout=120).returncode == 0
