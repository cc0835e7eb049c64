"""docs/cli.md is generated from the Typer app and must match it (so it cannot drift)."""

from __future__ import annotations

from pathlib import Path

from xfer_core.cli import docgen

ROOT = Path(__file__).resolve().parents[2]


def test_cli_md_is_up_to_date() -> None:
    current = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == docgen.render(), (
        "docs/cli.md is out of date: run `uv run python -m xfer_core.cli.docgen`"
    )


def test_every_command_is_documented() -> None:
    import typer

    from xfer_core.cli.app import app

    text = docgen.render()
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="xfer")
    for name, _sub in docgen._subcommands(root, ctx):
        assert f"`xfer {name}`" in text
    # every option of the root callback, e.g. the completion options
    for opt in ("--json", "--install-completion", "--show-completion", "--version"):
        assert opt in text


def test_check_mode_detects_drift(tmp_path: Path) -> None:
    out = tmp_path / "cli.md"
    assert docgen.main(["--out", str(out)]) == 0
    assert docgen.main(["--out", str(out), "--check"]) == 0
    out.write_text(out.read_text() + "hand edit\n")
    assert docgen.main(["--out", str(out), "--check"]) == 1


def test_render_is_deterministic_across_environments(monkeypatch) -> None:
    first = docgen.render()
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.setenv("TERM", "dumb")
    assert docgen.render() == first
