"""Fixtures of the manifest build/rebase/combine/verify tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifest_io.helpers import make_tree


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[bytes, int]]:
    """A real directory with one file per hostile name; (root, {name: size})."""
    src = tmp_path / "src"
    src.mkdir()
    return src, make_tree(src)
