"""What a transfer-backend plugin declares instead of core knowing it by name: its own
config keys (``[global.NAME]``/``[clusters.NAME]``, checked like core keys, handed to its
session as ``Remote.settings``) and the backend to fall back to when it cannot run here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pytest

import xfer_core.registry
from xfer_core.config.load import parse_config, validate_text
from xfer_core.errors import UnavailableError
from xfer_core.hookspecs import hookimpl
from xfer_core.plugin import Availability
from xfer_core.registry import build_registry
from xfer_core.sync.backend import (
    PairJob,
    PairResult,
    ProgressSink,
    Remote,
    TransferBackend,
    TransferOptions,
    TransferSession,
)
from xfer_core.sync.engine import SyncRequest, choose_backend, run_sync
from xfer_core.sync.progress import Reporter


class DemoKeys(msgspec.Struct, forbid_unknown_fields=True):
    endpoint: str = ""
    streams: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    mode: Literal["fast", "safe"] = "safe"


class DemoSession(TransferSession):
    def __init__(self, target: Remote) -> None:
        self.target = target

    async def transfer(self, job: PairJob, progress: ProgressSink) -> PairResult:
        return PairResult(job.cluster, job.alias, job.direction)


class DemoBackend(TransferBackend):
    name = "demo"
    config_keys = DemoKeys
    fallback = "demo-spare"

    def __init__(self) -> None:
        self.targets: list[Remote] = []
        self.reason = ""

    def check(self) -> Availability:
        return Availability(not self.reason, self.reason)

    async def open(self, target: Remote, options: TransferOptions) -> TransferSession:
        self.targets.append(target)
        return DemoSession(target)


class SpareBackend(DemoBackend):
    name = "demo-spare"
    config_keys = None
    fallback = None


class DemoPlugin:
    def __init__(self) -> None:
        self.demo, self.spare = DemoBackend(), SpareBackend()

    @hookimpl
    def register_transfer_backends(self, register: Any) -> None:
        register(self.demo)
        register(self.spare)


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> DemoPlugin:
    """The demo backends, installed in the registry the config loader asks."""
    found = DemoPlugin()
    registry = build_registry([found])
    monkeypatch.setattr(xfer_core.registry, "get_registry", lambda: registry)
    return found


CONFIG = """\
[global.demo]
streams = 2

[[clusters]]
name = "a"
host = "h"
transfer_backend = "demo"
[clusters.demo]
endpoint = "ep-1"
[[clusters.sync_dirs]]
alias = "p"
local = "{local}"
remote = "r"

[[clusters]]
name = "b"
host = "h"
transfer_backend = "demo"
[[clusters.sync_dirs]]
alias = "p"
local = "{local}"
remote = "r"
"""


def test_backend_tables_reach_the_session_cluster_over_global(
    plugin: DemoPlugin, tmp_path: Path
) -> None:
    config = parse_config(CONFIG.format(local=tmp_path), "remotes.toml")
    assert config.global_.backend_tables == {"demo": {"streams": 2}}
    assert config.clusters[0].backend_tables == {"demo": {"endpoint": "ep-1"}}
    registry = xfer_core.registry.get_registry()
    summary = run_sync(config, SyncRequest(direction="push"), registry=registry)
    assert summary.ok
    got = {t.name: t.settings for t in plugin.demo.targets}
    assert got == {"a": DemoKeys(endpoint="ep-1", streams=2), "b": DemoKeys(streams=2)}


@pytest.mark.parametrize(
    ("table", "message", "line"),
    [
        ('endpont = "x"', "clusters[0].demo.endpont: unknown key; did you mean 'endpoint'?", 5),
        ('streams = "4"', "clusters[0].demo.streams: expected an integer, got a string", 5),
        ("streams = 65", "clusters[0].demo.streams: streams 65 is out of range (1-64)", 5),
        # a type the checker has no words for: msgspec's own message, at the table's line
        ('mode = "quick"', "clusters[0].demo: Invalid enum value 'quick' - at `$.mode`", 4),
    ],
)
def test_backend_keys_are_checked_like_core_keys(
    plugin: DemoPlugin, table: str, message: str, line: int
) -> None:
    text = f'[[clusters]]\nname = "a"\nhost = "h"\n[clusters.demo]\n{table}\n'
    problems = [str(p) for p in validate_text(text, "remotes.toml")]
    assert problems == [f"remotes.toml:{line}: {message}"]


def test_a_table_of_no_backend_with_keys_is_an_unknown_key(plugin: DemoPlugin) -> None:
    for name in ("nosuch", "demo-spare"):  # not installed / declares no keys
        text = f"[global.{name}]\nx = 1\n"
        problems = [str(p) for p in validate_text(text, "remotes.toml")]
        assert len(problems) == 1 and problems[0].startswith(
            f"remotes.toml:1: global.{name}: unknown key; known keys: transfer_backend, "
        ), problems


def test_a_backend_that_cannot_run_falls_back_to_the_one_it_names(plugin: DemoPlugin) -> None:
    warnings: list[str] = []

    class Collect(Reporter):
        def warning(self, message: str) -> None:
            warnings.append(message)

    registry = xfer_core.registry.get_registry()
    plugin.demo.reason = "demo: no endpoint here"
    assert choose_backend("demo", registry, Collect()) is plugin.spare
    assert warnings == ["demo: no endpoint here; falling back to the demo-spare backend"]
    plugin.spare.reason = "spare: broken too"
    with pytest.raises(UnavailableError, match="'demo' cannot run here: demo: no endpoint"):
        choose_backend("demo", registry, Collect())
    # the spare declares no fallback: its own reason stops the run
    with pytest.raises(UnavailableError, match="'demo-spare' cannot run here: spare: broken"):
        choose_backend("demo-spare", registry, Collect())
