"""The shell examples of README.md, docs/*.md and plugins.md, as the doc tests run them.

Every fenced ``bash`` / ``console`` / ``sh`` block carries a marker on the line before its
fence (an HTML comment, invisible on the rendered page):

- ``<!-- doc-test: run SCENARIO -->``: the test suite runs the block in SCENARIO (a temp
  HOME, the fixtures it needs, placeholders such as host names replaced);
- ``<!-- doc-test: skip REASON -->``: not run, and REASON says why (e.g. needs pyxis).

A block with neither fails the suite, so a new example is run or says why it is not.
In ``console`` blocks only the ``$ `` lines (and their ``\\`` continuations) are commands;
the rest is sample output. ``bash`` blocks run as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_TAGS = ("bash", "console", "sh", "shell")
MARKER = re.compile(r"^\s*<!-- doc-test: (run|skip) (.+?) -->\s*$")
FENCE = re.compile(r"^(\s*)```(\w*)")


@dataclass(frozen=True)
class Example:
    """One shell block of a doc."""

    path: Path
    line: int  # 1-based line of the opening fence
    tag: str
    body: str
    action: str | None  # "run", "skip" or None (no marker)
    arg: str  # the scenario (run) or the reason (skip)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> str:
        """The shell text to run: the block itself, or a console block's ``$`` lines."""
        if self.tag != "console":
            return self.body
        out: list[str] = []
        cont = False
        for line in self.body.splitlines():
            if cont:
                out.append(line)
            elif line.startswith("$ "):
                out.append(line[2:])
            else:
                continue
            cont = line.rstrip().endswith("\\")
        return "\n".join(out) + "\n"


def doc_files() -> list[Path]:
    """README.md, plugins.md and docs/*.md (docs/plugins.md is a link to plugins.md;
    docs/cli.md is generated from --help and tested against it)."""
    docs = [p for p in sorted((ROOT / "docs").glob("*.md")) if not p.is_symlink()]
    return [ROOT / "README.md", ROOT / "plugins.md", *(p for p in docs if p.name != "cli.md")]


def examples(path: Path) -> list[Example]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, tag = m.group(1), m.group(2)
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith("```"):
            end += 1
        if tag in SHELL_TAGS:
            marker = MARKER.match(lines[i - 1]) if i else None
            body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end]) + "\n"
            found.append(
                Example(
                    path=path,
                    line=i + 1,
                    tag=tag,
                    body=body,
                    action=marker.group(1) if marker else None,
                    arg=marker.group(2).strip() if marker else "",
                )
            )
        i = end + 1
    return found


def all_examples() -> list[Example]:
    return [ex for path in doc_files() for ex in examples(path)]
