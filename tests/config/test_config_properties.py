"""Property tests: line numbers are right whatever the layout; edits keep the text and add exactly what was asked."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xfer_core.config.edit import STARTER_CONFIG, add_cluster, add_dir
from xfer_core.config.load import parse_config, validate_text
from xfer_core.config.locate import key_lines

_FILLER = st.lists(
    st.sampled_from(["", "# a comment", "   # indented comment", "  ", '# key = "not a key"']),
    max_size=2,
)
_NAMES = st.text(alphabet="abcxyz-_", min_size=1, max_size=6)


@st.composite
def _layout(draw: st.DrawFn) -> tuple[str, dict[tuple[str | int, ...], int]]:
    """A config with random comments/blank lines, and where each key was put."""
    lines: list[str] = []
    where: dict[tuple[str | int, ...], int] = {}

    def put(text: str, path: tuple[str | int, ...] | None = None) -> None:
        lines.extend(draw(_FILLER))
        lines.append(text)
        if path is not None:
            where[path] = len(lines)

    if draw(st.booleans()):
        put("[global]", ("global",))
        put('common_excludes = [".git"]', ("global", "common_excludes"))
    for ci in range(draw(st.integers(0, 3))):
        put("[[clusters]]", ("clusters", ci))
        put(f'name = "c{ci}"', ("clusters", ci, "name"))
        if draw(st.booleans()):
            put('key_path = """multi\n[[clusters]]\nline"""', ("clusters", ci, "key_path"))
        put('host = "h"', ("clusters", ci, "host"))
        for kind in ("sync_dirs", "fetch_dirs"):
            for pi in range(draw(st.integers(0, 2))):
                put(f"  [[clusters.{kind}]]", ("clusters", ci, kind, pi))
                put(f'  alias = "p{pi}"', ("clusters", ci, kind, pi, "alias"))
                put('  local = "l"  # trailing', ("clusters", ci, kind, pi, "local"))
                put("  remote = 'r'", ("clusters", ci, kind, pi, "remote"))
    text = "\n".join(lines) + "\n"
    # a multi-line string shifts the following lines: recount from the text itself
    fixed: dict[tuple[str | int, ...], int] = {}
    offset = 0
    for path, line in sorted(where.items(), key=lambda kv: kv[1]):
        fixed[path] = line + offset
        if path[-1] == "key_path":
            offset += 2
    return text, fixed


@settings(max_examples=150, deadline=None)
@given(_layout())
def test_key_lines_match_where_keys_were_written(layout: tuple[str, dict]) -> None:
    text, where = layout
    assert validate_text(text) == []
    found = key_lines(text)
    for path, line in where.items():
        assert found.get(path) == line, (path, text)


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("cluster"), _NAMES, st.lists(_NAMES, max_size=2)),
        st.tuples(st.just("dir"), _NAMES, st.sampled_from(["push", "pull"])),
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(_STEPS)
def test_edits_keep_text_and_add_what_was_asked(steps: list[tuple]) -> None:
    text = STARTER_CONFIG
    expected: dict[str, dict[str, list[str]]] = {}
    for step in steps:
        if step[0] == "cluster":
            _, name, excludes = step
            if name in expected:
                continue
            new = add_cluster(text, name, f"login{name}.example", excludes=excludes)
            expected[name] = {"push": [], "pull": []}
        else:
            if not expected:
                continue
            _, alias, direction = step
            cluster = sorted(expected)[len(alias) % len(expected)]
            if alias in expected[cluster][direction]:
                continue
            new = add_dir(
                text, cluster, alias, f"~/{alias}", f"$SCRATCH/{alias}", direction=direction
            )
            expected[cluster][direction].append(alias)
        # the old text survives line for line, in order
        it = iter(new.splitlines())
        assert all(line in it for line in text.splitlines())
        text = new
    config = parse_config(text, base_dir="/cfg")
    assert [c.name for c in config.clusters] == list(expected)
    for cluster in config.clusters:
        assert [p.alias for p in cluster.sync_dirs] == expected[cluster.name]["push"]
        assert [p.alias for p in cluster.fetch_dirs] == expected[cluster.name]["pull"]
        assert all(p.remote.startswith("$SCRATCH/") for p in cluster.sync_dirs + cluster.fetch_dirs)


_TRICKY = '''\
[global]
transfer_backend = 'rsync'
io_timeout = 1.5e1
common_excludes = ["a\\tb", """multi
line""", 'C:\\raw']
sync_excludes = [  # comment
  "x",
]

[global.demo]
inline = { a = 1, b.c = [true, false], d = 1979-05-27T07:32:00Z }
"dotted.key" = 0x10
big = 1_000

[[clusters]]
name = "c\\u00e9"
host = "h"
port = +22
'''


@pytest.mark.skipif(sys.version_info < (3, 11), reason="no tomllib before Python 3.11")
@settings(max_examples=100, deadline=None)
@given(_layout())
def test_tomllib_reads_what_tomlkit_reads(layout: tuple[str, dict]) -> None:
    # the loader reads with tomllib and falls back to tomlkit (for its messages) on an error
    import tomlkit
    import tomllib

    text, _ = layout
    for doc in (text, _TRICKY):
        assert tomllib.loads(doc) == tomlkit.parse(doc).unwrap()


def test_a_valid_config_is_read_without_tomlkit() -> None:
    code = (
        "import sys\n"
        "from xfer_core.config.load import parse_config\n"
        "config = parse_config(sys.stdin.read(), 'remotes.toml')\n"
        "print(config.clusters[0].port, 'tomlkit' in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        input='[[clusters]]\nname = "a"\nhost = "h"\nport = 22\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    expected = "22 True" if sys.version_info < (3, 11) else "22 False"
    assert res.stdout.strip() == expected
