"""`xfer run` checks its run dir once and asks the scheduler's queue once per command
(they were 4 checks and 2 queue questions), and a submission is recorded once."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xfer_core.cli.app import main

from .runtools import make_tree

#: Modules that call check_run_dir (imported by name, so each binding is counted).
CALLERS = (
    "xfer_core.bulk.rundir",
    "xfer_core.bulk.pipeline",
    "xfer_core.bulk.render",
    "xfer_core.bulk.submit",
)


def _count(monkeypatch: pytest.MonkeyPatch, module: str, name: str, calls: list[str]) -> None:
    mod = importlib.import_module(module)
    real: Callable[..., Any] = getattr(mod, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, name, counted)


def _xfer(*argv: str) -> int:
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.parametrize("existing", [False, True], ids=["new run dir", "re-run"])
def test_run_submit_checks_the_run_dir_once_and_asks_the_queue_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    src, run = tmp_path / "src", tmp_path / "run"
    make_tree(src, [f"f{i}.txt" for i in range(4)])
    argv = ["run", "--run-dir", str(run), "--source", str(src), "--dest", str(tmp_path / "dst")]
    argv += ["--num-shards", "2", "--scheduler", "local", "--submit"]
    if existing:
        assert _xfer(*argv) == 0
        for done in (run / "state").glob("*.done"):
            done.unlink()  # the re-run has work to do again
    checks: list[str] = []
    asked: list[str] = []
    for module in CALLERS:
        _count(monkeypatch, module, "check_run_dir", checks)
    _count(monkeypatch, "xfer_core.bulk.queue_view", "ask_schedulers", asked)
    assert _xfer(*argv) == 0
    # a new run dir is checked when it is made; an existing one before anything else
    assert checks == ["check_run_dir"], checks
    assert asked == ["ask_schedulers"], asked
    jobs = json.loads((run / "jobs.json").read_text())
    assert len(jobs) == (2 if existing else 1)  # one record per submission
    assert len({j["job_id"] for j in jobs}) == len(jobs)
