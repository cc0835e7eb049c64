"""bench/reliability_report.py: security classes get a table of their own."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "reliability_report", ROOT / "bench" / "reliability_report.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outcome(nodeid: str, cls: str, outcome: str = "passed") -> dict[str, object]:
    return {"nodeid": nodeid, "class": cls, "outcome": outcome, "seconds": 1.0, "soak": False}


def test_security_classes_listed_with_case_counts_apart_from_faults() -> None:
    report = _report()
    roots = "security: manifest roots run commands"
    outcomes = [
        _outcome("tests/reliability/test_faults.py::t", "load"),
        _outcome("tests/security/test_manifest_roots.py::a", roots),
        _outcome("tests/security/test_manifest_roots.py::b", roots, "failed"),
        _outcome("tests/security/test_new.py::c", "security: something new"),
    ]
    tallies = [
        {
            "nodeid": "tests/security/test_manifest_roots.py::a",
            "cases": 4,
            "lost": 0,
            "false_done": 0,
        }
    ]
    page = report.render(outcomes, tallies, 1.0, False)
    main, security = page.split("## Security", 1)
    assert "| load |" in main and roots not in main and "manifest roots" not in main
    assert "| **total** | | 1 |" in main
    rows = {line.split(" | ")[0]: line for line in security.splitlines() if line.startswith("| ")}
    assert rows["| manifest roots run commands"].endswith("| 2 | 5 | 1 | 0 | 1 |")
    assert rows["| something new"].endswith("| 1 | 1 | 1 | 0 | 0 |")
    assert rows["| **total**"].endswith("| 3 | 6 | 2 | 0 | 1 |")
    assert report.SECURITY_CLASSES[roots] in security


def test_every_security_test_module_has_a_security_class() -> None:
    report = _report()
    for path in sorted((ROOT / "tests" / "security").glob("test_*.py")):
        text = path.read_text()
        line = next((ln for ln in text.splitlines() if ln.startswith("CLASS = ")), None)
        assert line is not None, f"{path.name}: no CLASS"
        cls = line.split("=", 1)[1].strip().strip('"')
        assert cls.startswith(report.SECURITY_PREFIX), f"{path.name}: {cls!r}"
