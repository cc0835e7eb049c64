"""The docs site builds with ``mkdocs build --strict``: a broken link or nav entry fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    # every page of the nav was rendered, plugins.md (top level, via docs/plugins.md) included
    for page in ("index.html", "install/index.html", "cli/index.html", "plugins/index.html"):
        assert (site / page).is_file(), page
    assert "register_transfer_backends" in (site / "plugins" / "index.html").read_text()


def test_plugins_page_is_the_top_level_file() -> None:
    # docs/plugins.md is a symlink, so the site and the repository show the same text
    link = ROOT / "docs" / "plugins.md"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "plugins.md").resolve()
