"""Reliability suite support: a ``tally`` fixture that records measured figures.

Each test belongs to one class of fault or hostile input (its module's ``CLASS``
constant, or ``@pytest.mark.reliability_class("...")``). Besides pass/fail, a test may
report how many cases it ran, how many were found with data lost and how many were
reported done when they were not. When ``XFER_RELIABILITY_OUT`` names a file, the
figures are appended to it as JSON lines; bench/reliability_report.py reads them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Tally = Callable[..., None]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability_class(name): the fault or hostile-input class of a test"
    )


def class_of(item: pytest.Item) -> str:
    marker = item.get_closest_marker("reliability_class")
    if marker is not None:
        return str(marker.args[0])
    module = getattr(item, "module", None)
    return str(getattr(module, "CLASS", "other"))


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    """``tally(cases=N, lost=0, false_done=0, **figures)``: record this test's figures."""
    out = os.environ.get("XFER_RELIABILITY_OUT")
    item = request.node

    def record(*, cases: int = 1, lost: int = 0, false_done: int = 0, **figures: object) -> None:
        if not out:
            return
        line = {
            "nodeid": item.nodeid,
            "class": class_of(item),
            "cases": cases,
            "lost": lost,
            "false_done": false_done,
            **figures,
        }
        with Path(out).open("a") as fh:
            fh.write(json.dumps(line) + "\n")

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record each test's class and outcome (the report counts tests per class)."""
    out = os.environ.get("XFER_RELIABILITY_OUT")
    if not out or not (report.when == "call" or report.outcome != "passed"):
        return
    line = {
        "nodeid": report.nodeid,
        "outcome_of": report.when,
        "outcome": "xfailed" if hasattr(report, "wasxfail") else report.outcome,
        "class": getattr(report, "reliability_class", "other"),
        "reason": getattr(report, "wasxfail", ""),
        "seconds": round(report.duration, 2),
        "soak": "soak" in report.keywords,
    }
    with Path(out).open("a") as fh:
        fh.write(json.dumps(line) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    report.reliability_class = class_of(item)
