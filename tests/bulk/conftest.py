"""Fixtures of the execution tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .runtools import make_tree


@pytest.fixture
def hostile_src(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src tree 'q' $(x)"
    files = make_tree(src)
    return src, files
