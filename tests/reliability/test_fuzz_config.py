"""Hostile input: the config loader never fails with anything but its own clear error.

Random TOML-ish text, and well-formed configs holding random values of random types,
go through ``validate_text`` and ``parse_config``: each either succeeds or raises a
:class:`ConfigError` with a one-line message naming the file, and never hangs.
The two must also agree: ``validate_text`` finds no problem exactly when
``parse_config`` succeeds. Exclude patterns that load are then compiled by the
matcher, which must accept or refuse them the same clear way.
"""

from __future__ import annotations

from typing import Any

import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xfer_core.config.load import parse_config, validate_text
from xfer_core.config.model import Config
from xfer_core.errors import ConfigError, XferError
from xfer_core.sync.excludes import ExcludeMatcher, merge_excludes

from .conftest import Tally
from .helpers import bounded

CLASS = "hostile input: config fuzz"

EXAMPLES = 300

_TOKENS = [
    "[global]",
    "[[clusters]]",
    "[[clusters.sync_dirs]]",
    "[[clusters.fetch_dirs]]",
    "[clusters]",
    "name",
    "host",
    "port",
    "user",
    "key_path",
    "alias",
    "local",
    "remote",
    "excludes",
    "sync_excludes",
    "common_excludes",
    "transfer_backend",
    "local_base",
    " = ",
    "=",
    '"',
    "'",
    "'''",
    '"""',
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "\n",
    "\r\n",
    "#",
    "\\",
    "\\u0000",
    "\x00",
    "1",
    "-1",
    "1e999",
    "0x",
    "true",
    "nan",
    "inf",
    "1979-05-27T07:32:00Z",
    "$(touch CANARY)",
    "~",
    "$HOME",
    "..",
    "/",
    "é",
    "\udcff",
]

toml_ish = st.lists(st.one_of(st.sampled_from(_TOKENS), st.text(max_size=6)), max_size=40).map(
    "".join
)

scalar = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=False),
)
value = st.one_of(
    scalar, st.lists(scalar, max_size=4), st.dictionaries(st.text(max_size=8), scalar, max_size=3)
)
strs = st.lists(st.text(max_size=12), max_size=4)


def _maybe(field: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually the right type, sometimes any value, sometimes absent (None)."""
    return st.one_of(field, value, st.none())


pair = st.fixed_dictionaries(
    {},
    optional={
        "alias": _maybe(st.text(max_size=12)),
        "local": _maybe(st.text(max_size=30)),
        "remote": _maybe(st.text(max_size=30)),
        "excludes": _maybe(strs),
        "bogus": value,
    },
)
cluster = st.fixed_dictionaries(
    {},
    optional={
        "name": _maybe(st.text(max_size=12)),
        "host": _maybe(st.text(max_size=20)),
        "port": _maybe(st.integers(min_value=-5, max_value=70000)),
        "user": _maybe(st.text(max_size=10)),
        "key_path": _maybe(st.text(max_size=20)),
        "transfer_backend": _maybe(st.sampled_from(["rsync", "sftp", "nope", ""])),
        "excludes": _maybe(strs),
        "sync_excludes": _maybe(strs),
        "fetch_excludes": _maybe(strs),
        "sync_dirs": _maybe(st.lists(pair, max_size=3)),
        "fetch_dirs": _maybe(st.lists(pair, max_size=3)),
    },
)
config_data = st.fixed_dictionaries(
    {},
    optional={
        "global": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "transfer_backend": _maybe(st.text(max_size=8)),
                    "local_base": _maybe(st.text(max_size=20)),
                    "common_excludes": _maybe(strs),
                    "sync_excludes": _maybe(strs),
                },
            )
        ),
        "clusters": _maybe(st.lists(cluster, max_size=3)),
        "extra": value,
    },
)


def _strip_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _strip_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_strip_none(v) for v in data if v is not None]
    return data


def _check(text: str) -> Config | None:
    """Load ``text`` both ways; return the Config or None, failing on any foreign error."""
    with bounded(10):
        problems = validate_text(text, "fuzz.toml")
        try:
            config = parse_config(text, "fuzz.toml", base_dir="/base")
        except ConfigError as exc:
            assert problems, f"parse_config refused what validate_text accepted: {exc}"
            assert str(exc).startswith("fuzz.toml"), str(exc)
            assert exc.exit_code == 2
            return None
    assert not problems, f"validate_text found {problems} but parse_config accepted"
    return config


@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
@given(text=toml_ish)
def test_random_toml_ish_text(text: str) -> None:
    _check(text)


@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
@given(data=config_data)
def test_random_values_in_config_structure(data: dict[str, Any]) -> None:
    try:
        text = tomlkit.dumps(_strip_none(data))
    except Exception:  # tomlkit cannot spell some values; not xfer's input
        return
    config = _check(text)
    if config is None:
        return
    for cl in config.clusters:
        for direction, pairs in (("push", cl.sync_dirs), ("pull", cl.fetch_dirs)):
            for pair_ in pairs:
                with bounded(10):
                    patterns = merge_excludes(config, cl, pair_, direction)  # type: ignore[arg-type]
                    try:
                        matcher = ExcludeMatcher(patterns)
                    except XferError:
                        continue
                    for name in ("a", "a/b.txt", ".hidden", "é/x"):
                        matcher.excluded(name, is_dir=False)


def test_tally(tally: Tally) -> None:
    """Report the number of fuzz cases these tests ran (both ways)."""
    tally(cases=2 * EXAMPLES)
